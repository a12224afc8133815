"""``metastudio compare``: which model tells your own classes apart best, by cross-validation on
your labelled examples (:mod:`metastudio.app.compare`), printed as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap

from metastudio.cli.arguments import DEVICE_HELP, common_args, seconds
from metastudio.errors import EXIT_ERROR

DESCRIPTION = (
    "Find out which model suits your own examples best. Each model adapts to all your labelled images but one "
    "and guesses the one left out, in turn for every image (leave-one-out; or K folds with --folds K), so every "
    "model is tested on your classes only. The table gives each model's accuracy with its 95 % interval (Wilson's, "
    "over the images left out), the median time to adapt to your examples and the time to classify one image; "
    "the best model (highest accuracy, then fastest) is marked with *. A model that cannot serve your examples "
    "(it fails to load, or tells fewer classes apart than you have) is listed with the reason and not run. A class "
    "with a single example is never left out, since that would remove the class."
)
DESCRIPTION = textwrap.fill(DESCRIPTION, 88)

EPILOG = """examples:
  metastudio compare --support my-photos
  metastudio compare --support my-photos --models 'photos,*-photos' --folds 5 --json"""


def _models(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected model names separated by commas")
    return names


def _folds(text: str):
    from metastudio.app.compare import parse_folds

    try:
        return parse_folds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f} s" if value >= 0.1 else f"{1000 * value:.1f} ms"


def _row(score, best: str | None) -> list[str]:
    if score.ok:
        accuracy = f"{score.accuracy:5.1f} % ({score.ci95_low:.1f}-{score.ci95_high:.1f})"
    else:
        accuracy = "-"
    note = "best" if score.name == best else ""
    if not score.ok:
        note = f"not run: {score.reason}" if score.status == "unusable" else score.reason
    note = "; ".join(n for n in [note, *score.notes] if n)
    return [("* " if score.name == best else "  ") + score.name, accuracy, _seconds(score.adapt_seconds),
            _seconds(score.seconds_per_image), note]


def print_table(comparison) -> None:
    """The comparison as a table, one row per model, then the verdict and the notes."""
    header = ["  MODEL", "ACCURACY (95% CI)", "ADAPT", "PER IMAGE", "NOTE"]
    rows = [_row(s, comparison.best) for s in comparison.scores]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        print(("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1]).rstrip())
    if comparison.folds == "loo":
        way = f"leave-one-out{'' if comparison.balanced else ', unbalanced'}"
    else:
        way = f"{comparison.folds}-fold"
    print(f"\n{len(comparison.classes)} classes, {comparison.examples} examples: {comparison.held_out} held out over "
          f"{comparison.adaptations} adaptations a model ({way}, seed {comparison.seed}), in {comparison.seconds:.1f} s.")
    print(comparison.verdict)
    for note in comparison.notes:
        print(f"note: {note}")


def _progress():
    """A CompareProgress callback drawing one text bar per model on stderr, and its closer."""
    from metastudio.data.progress import text_progress

    state: dict = {"model": None, "bar": None, "close": None}

    def close() -> None:
        if state["close"] is not None:
            state["close"]()
        state.update(model=None, bar=None, close=None)

    def progress(p) -> None:
        if p.model != state["model"]:
            close()
            state["bar"], state["close"] = text_progress(f"{p.model} ({p.model_index}/{p.models})", "fold")
            state["model"] = p.model
        state["bar"](p.folds_done, p.folds)

    return progress, close


def cmd_compare(args) -> int:
    from metastudio.app.compare import ModelComparison, candidate_models, read_support_folder
    from metastudio.engine.devices import describe_device
    from metastudio.plugins import get_host

    host = get_host(safe_mode=args.safe_mode or None)
    candidates = candidate_models(args.models, host)
    with tempfile.TemporaryDirectory(prefix="metastudio-compare-") as unpacked:
        examples = read_support_folder(args.support, unpack_to=unpacked)
        for problem in examples.problems:
            print(f"warning: {problem}", file=sys.stderr)
        progress, close = _progress()
        comparison = ModelComparison(host, examples.support, candidates, folds=args.folds, seed=args.seed,
                                     balanced=not args.unbalanced, device=args.device, time_limit=args.timeout, progress=progress)
        print(f"device: {describe_device(comparison.session.device)}", file=sys.stderr)
        try:
            result = comparison.run()
        finally:
            close()
    if args.json:
        print(json.dumps({**result.as_dict(), "support": str(args.support)}, indent=2))
    else:
        print_table(result)
    return 0 if result.best is not None else EXIT_ERROR


def add_compare_command(sub) -> None:
    """Add the ``compare`` subcommand to the subcommands ``sub``."""
    c = sub.add_parser("compare", help="find the model that tells your own classes apart best (cross-validation "
                       "on your examples)", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(c, device=False)
    c.add_argument("--device", default="auto", help=DEVICE_HELP)
    c.add_argument("--support", required=True, metavar="DIR",
                   help="your labelled examples: a folder (or zip) with one sub-folder of images per class")
    c.add_argument("--models", type=_models, default=None, metavar="NAME,NAME,...",
                   help="the models to compare, separated by commas: names of shipped or plugin models, model "
                        "files, or patterns such as '*-photos' (default: every shipped and plugin model)")
    c.add_argument("--folds", type=_folds, default="loo", metavar="loo|K",
                   help="loo: leave each example out in turn (default); K: split each class into K parts and "
                        "leave one part out at a time (faster for many examples)")
    c.add_argument("--seed", type=int, default=0, help="how the folds are drawn: which examples K folds group "
                   "together, and which ones leave-one-out sets aside (the same seed gives the same folds)")
    c.add_argument("--unbalanced", action="store_true",
                   help="leave-one-out without setting aside an example of every other class: the left-out "
                        "example's class is one short of the others (models that adapt by gradient steps, MAML "
                        "and Meta-LSTM, then score far lower than they do on all your examples)")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object")
    c.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                   help="give up on a model that takes longer than SECONDS for one step (adapting to the examples, "
                        "or classifying the ones left out; a plugin that hangs, say): that model is reported as "
                        "failed, naming its plugin, and the others still run; default: no limit")
    c.set_defaults(func=cmd_compare)
