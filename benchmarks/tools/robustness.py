"""Run the fault-injection corpus through the installed ``metastudio`` command and count what
happened, for docs/robustness.md.

    .venv/bin/python benchmarks/tools/robustness.py [--seeds 0 1 2] [--models protonet-omniglot photos]

For each seed it generates the picture corpus of tests/corpus.py (good, bad and randomly damaged
files, odd folder entries) and runs ``metastudio classify`` over it with each model; then every
hostile model file through ``metastudio info`` and ``metastudio classify``; every hostile project
through ``Project.open``; and each plugin fault of tests/faulty_plugins.py through ``classify``
(when that module exists). Every command runs under a time limit (a hang is counted, not
waited for). The result is a Markdown table on stdout; the exit status is 1 when anything
failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from corpus import BAD, GOOD, make_image_corpus, make_model_corpus, make_project_corpus  # noqa: E402
from test_robustness import RAW_WARNING, outcome, support_folder  # noqa: E402

HANG_S = 300


def run(args: list[str], env: dict | None = None) -> tuple[int | None, str, str, float]:
    """(exit status or None when it hung, stdout, stderr, seconds) of ``metastudio ARGS``."""
    start = time.perf_counter()
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "metastudio"), *args], capture_output=True, text=True,
                              errors="backslashreplace", timeout=HANG_S, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return None, "", "", time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def pictures(root: Path, seeds: list[int], models: list[str]) -> list[dict]:
    rows = []
    support = support_folder(root / "support")
    for seed in seeds:
        folder = root / f"pictures-{seed}"
        expected = make_image_corpus(folder, seed)
        for model in models:
            out = root / f"predictions-{seed}-{model}.csv"
            code, stdout, stderr, seconds = run(["classify", "--model", model, "--support", str(support), "--query",
                                                 str(folder), "--csv", str(out), "--device", "cpu"])
            wrong = outcome(expected, folder, out, stderr) if code is not None else {"hung": ["all"]}
            rows.append({"what": f"pictures, seed {seed}, {model}", "entries": len(expected),
                         "good": sum(k == GOOD for k in expected.values()),
                         "bad": sum(k == BAD for k in expected.values()), "exit": code,
                         "tracebacks": (stdout + stderr).count("Traceback"),
                         "raw warnings": len(RAW_WARNING.findall(stderr)), "hung": code is None,
                         "wrong": sum(len(v) for v in wrong.values()), "detail": wrong, "seconds": seconds})
    return rows


def models(root: Path, adapted: Path) -> dict:
    paths = make_model_corpus(root / "models", adapted)
    query = root / "query.png"
    from PIL import Image

    Image.new("L", (28, 28), 90).save(query)
    counts = {"files": len(paths), "commands": 0, "refused in one line": 0, "tracebacks": 0, "hung": 0, "other": []}
    for path in paths:
        for args in (["info", str(path)], ["classify", "--model", str(path), "--query", str(query)]):
            code, stdout, stderr, _ = run(args)
            counts["commands"] += 1
            errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
            counts["tracebacks"] += stderr.count("Traceback")
            counts["hung"] += code is None
            if code == 1 and len(errors) == 1 and str(path) in errors[0]:
                counts["refused in one line"] += 1
            else:
                counts["other"].append((path.name, args[0], code, stderr[-300:]))
    return counts


def projects(root: Path, good: Path) -> dict:
    from metastudio.app.project.model import Project
    from metastudio.errors import ProjectError

    paths = make_project_corpus(root / "projects", good, bomb_mib=1024)
    counts = {"files": len(paths), "refused": 0, "opened with problems": 0, "other": []}
    for path in paths:
        workdir = root / "work" / path.stem
        workdir.mkdir(parents=True)
        try:
            project = Project.open(path, workdir=workdir)
        except ProjectError:
            counts["refused"] += 1
            continue
        except Exception as error:  # noqa: BLE001 - counted, that is the point
            counts["other"].append((path.name, repr(error)[:200]))
            continue
        size = sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file())
        if project.problems and size < 64 << 20:
            counts["opened with problems"] += 1
        else:
            counts["other"].append((path.name, f"opened, {len(project.problems)} problems, {size} bytes written"))
    return counts


def plugin_faults(root: Path) -> list[dict]:
    try:
        import faulty_plugins
    except ImportError:
        return []
    site = root / "site"
    faulty_plugins.install(site)
    rows = []
    for kind in faulty_plugins.FAULTS:
        model = faulty_plugins.make_model(site, kind, root / f"fault-{kind}.safetensors", root / "fault-images")
        args = ["classify", "--model", str(model), "--support", str(root / "fault-images" / "support"),
                "--query", str(root / "fault-images" / "query"), "--timeout", "5"]
        code, stdout, stderr, seconds = run(args, faulty_plugins.env(site))
        text = stdout + stderr
        rows.append({"fault": kind, "command": args[0], "exit": code, "named": faulty_plugins.distribution(kind) in text,
                     "tracebacks": text.count("Traceback"), "seconds": round(seconds, 1),
                     "line": next((line for line in stderr.splitlines() if line.startswith("error: ")), "")})
    code, stdout, stderr, _ = run(["plugins"], faulty_plugins.env(site))
    rows.append({"fault": "all six installed", "command": "plugins", "exit": code,
                 "named": all(faulty_plugins.distribution(k) in stdout for k in faulty_plugins.FAULTS[:2]),
                 "tracebacks": (stdout + stderr).count("Traceback"), "seconds": 0, "line": ""})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["protonet-omniglot", "photos"])
    args = parser.parse_args()
    from test_robustness import make_adapted_model, make_good_project

    with tempfile.TemporaryDirectory(prefix="metastudio-robustness-") as tmp:
        root = Path(tmp)
        (root / "adapted").mkdir()
        (root / "project").mkdir()
        adapted = make_adapted_model(root / "adapted")
        good = make_good_project(root / "project", adapted)
        picture_rows = pictures(root, args.seeds, args.models)
        model_counts = models(root, adapted)
        project_counts = projects(root, good)
        fault_rows = plugin_faults(root)
    print(f"Run on {platform.node()} ({platform.platform()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n")
    print("| pictures | entries | good | bad | exit | tracebacks | raw warnings | hung | wrong | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in picture_rows:
        print(f"| {r['what']} | {r['entries']} | {r['good']} | {r['bad']} | {r['exit']} | {r['tracebacks']} | "
              f"{r['raw warnings']} | {r['hung']} | {r['wrong']} | {r['seconds']:.1f} |")
    print(f"\nModel files: {model_counts}\n\nProject files: {project_counts}\n")
    if fault_rows:
        print("| plugin fault | command | exit | plugin named | tracebacks | s | what it said |\n|---|---|---|---|---|---|---|")
        for r in fault_rows:
            print(f"| {r['fault']} | {r['command']} | {r['exit']} | {r['named']} | {r['tracebacks']} | {r['seconds']} | "
                  f"{r['line'].replace('|', '/')} |")
    failed = (any(r["tracebacks"] or r["raw warnings"] or r["hung"] or r["wrong"] or r["exit"] != 0 for r in picture_rows)
              or model_counts["other"] or model_counts["tracebacks"] or project_counts["other"]
              or any(not r["named"] or r["tracebacks"] for r in fault_rows))
    for r in picture_rows:
        if r["wrong"]:
            print(f"\n{r['what']}: {r['detail']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
