"""The subcommands for plugins and their authors: ``metastudio plugins`` (what is installed, and
why a plugin failed to load), ``metastudio plugins validate TARGET`` and ``metastudio new-plugin
NAME``."""

from __future__ import annotations

import argparse
import json

from metastudio.cli.arguments import DEBUG_HELP, common_args, seconds
from metastudio.errors import EXIT_ERROR


def cmd_plugins(args) -> int:
    from metastudio.plugins import get_host

    from metastudio.app.catalogue import plugin_models

    host = get_host(safe_mode=args.safe_mode or None)
    plugin_models(host)  # a plugin model named like a shipped one is left out, and its plugin warned
    failed = {(r.name, r.package): r for r in host.records.values() if r.status == "failed"}
    rows = [{**r, "traceback": failed[r["plugin"], r["package"]].traceback if r["status"] == "failed" else ""}
            for r in host.rows()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("name", "kind", "version", "package", "status", "error")
    if not rows:
        print("no plugins found: is MetaStudio installed (pip install -e .)? Its built-ins register through entry points.")
        return EXIT_ERROR
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in cols[:-1]}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols[:-1]) + "  ERROR")
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols[:-1]) + "  " + r["error"])
    if args.traceback:
        for record in failed.values():
            print(f"\n{record.origin}: {record.error}")
            print(record.traceback.rstrip() if record.traceback else "(no traceback: the plugin raised nothing)")
        if not failed:
            print("\nno plugin failed to load")
    return 0


def cmd_plugins_validate(args) -> int:
    from metastudio.plugins.validate import validate

    result = validate(args.target, dataset_root=args.dataset_root, time_limit=args.timeout)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0 if result.ok else EXIT_ERROR
    for plugin in result.plugins:
        print(f"checking plugin {plugin.name} (module {plugin.module}, package {plugin.package} {plugin.version})")
    for problem in result.problems:
        who = f" {problem.plugin}" if problem.plugin and len(result.plugins) > 1 else ""
        label = "problem" if problem.severity == "error" else problem.severity
        print(f"{label} [{problem.check}]{who}: {problem.text}")
        if args.traceback and problem.traceback:
            print("    " + problem.traceback.rstrip().replace("\n", "\n    "))
    for kind, name in (component for plugin in result.plugins for component in plugin.passed):
        print(f"ok: {kind} {name} {'is a model file MetaStudio reads' if kind == 'model' else 'passes the test kit'}")
    for note in result.notes:
        print(f"note: {note}")
    print(result.summary())
    return 0 if result.ok else EXIT_ERROR


def cmd_new_plugin(args) -> int:
    from metastudio.app.newplugin import write_plugin_package

    made = write_plugin_package(args.name, args.out, args.trains_on)
    print(f"wrote the package {made.names.distribution} into {made.folder} (plugin and algorithm '{made.names.name}', "
          f"module '{made.names.module}', needs {made.requirement}):")
    print("\n".join(f"  {made.folder / relative}" for relative in made.files))
    print("next:\n  " + "\n  ".join(made.next_steps))
    return 0


def _add_plugins(sub) -> None:
    pl = sub.add_parser("plugins", help="list plugins, what they provide and any load errors; validate one")
    common_args(pl, device=False)
    pl.add_argument("--json", action="store_true", help="print the rows as JSON (with each failed plugin's traceback)")
    pl.add_argument("--traceback", action="store_true", help="after the table, print each failed plugin's traceback")
    pl.set_defaults(func=cmd_plugins)
    v = pl.add_subparsers(dest="plugins_action", metavar="ACTION").add_parser(
        "validate", help="check one plugin as MetaStudio loads it, and run the test kit on what it provides",
        description="Check one plugin as MetaStudio loads it, loading no other, and run the test kit on its "
                    "algorithms, backbones and datasets: one line per problem with how to fix it; exit status 1 when "
                    "there are problems, 0 when there are none.")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    v.add_argument("target", metavar="TARGET", help="an installed plugin (entry-point name), distribution or module, "
                   "or a path: a .py file, a package folder or a project folder with a pyproject.toml")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("--traceback", action="store_true", help="print the traceback behind each problem")
    v.add_argument("--dataset-root", metavar="DIR", help="data to run check_dataset with on each split of its datasets")
    v.add_argument("--timeout", type=seconds, default=300.0, metavar="SECONDS",
                   help="give up on a test-kit check after SECONDS (a plugin that hangs); default 300")
    v.set_defaults(func=cmd_plugins_validate)


def _add_new_plugin(sub) -> None:
    n = sub.add_parser(
        "new-plugin", help="write a pip-installable package for a new algorithm plugin",
        description="Write DIR/NAME: a complete package for a new algorithm plugin (a nearest-centroid algorithm "
                    "written against metastudio.api, its tests, a README and a CI script), ready for pip install -e.")
    n.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    n.add_argument("name", metavar="NAME", help="the plugin's name, lower case (e.g. my-algo): its entry-point and "
                   "algorithm name; the module is NAME with '-' as '_', the package metastudio-NAME")
    n.add_argument("--out", default=".", metavar="DIR", help="where to write the NAME folder (default: here)")
    n.add_argument("--trains-on", choices=("episodes", "batches"), default="episodes",
                   help="the algorithm it starts from: meta-trained on episodes (default; Prototypical Networks at "
                        "its smallest) or trained as a classifier of every training class on labelled batches, then "
                        "nearest class mean (SimpleShot at its smallest)")
    n.set_defaults(func=cmd_new_plugin)


def add_plugin_commands(sub) -> None:
    """Add ``plugins`` (with ``validate``) and ``new-plugin`` to the subcommands ``sub``."""
    _add_plugins(sub)
    _add_new_plugin(sub)
