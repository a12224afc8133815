#!/usr/bin/env python
"""How fast the desktop app answers, measured through the real window (offscreen).

1. **Start-up**: from launching ``metastudio`` to its window being on screen (a fresh process
   each time; heavy imports are deferred to the worker thread).
2. **Photos, cold**: with the ``photos`` model loaded (as it is a moment after start), 5 classes
   x 5 camera-sized JPEGs and 20 query JPEGs are added the way a drop adds them; the clock runs
   until every query's prediction is painted. A fresh window and an empty feature cache each run.
3. **+1 support photo**: one more photo is dropped into a class; the clock runs until the new
   predictions are painted.

Medians over ``--runs``. Targets: start-up < 3 s, cold <= 2.5 s, +1 photo <= 0.5 s.

    QT_QPA_PLATFORM=offscreen python benchmarks/harnesses/gui_latency.py --runs 5 \\
        --json benchmarks/results/cpu-2core/gui_latency.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name, seconds_series, write_json


def startup_seconds() -> float:
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "metastudio", "--timing"], capture_output=True, text=True, env=env,
                         timeout=120)
    for line in out.stderr.splitlines():
        if line.startswith("window shown at "):
            return float(line.split()[3]) - t0
    raise RuntimeError(f"no timing line in the app's output:\n{out.stderr}")


def wait(app, condition, timeout: float = 300.0) -> None:
    """Process Qt events until ``condition()`` holds."""
    end = time.perf_counter() + timeout
    while not condition():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() > end:
            raise TimeoutError("the window did not answer in time")


def shown(window, n_support: int) -> bool:
    """Whether the window shows the predictions of all 20 queries with ``n_support`` examples adapted."""
    r = window.last_result
    return (r is not None and r["status"] == "ok" and len(r["probabilities"]) == 20
            and sum(len(c.images) for c in window.controller.project.classes) == n_support
            and not window.engine.busy and not window._adapt_timer.isActive())


def photo_run(app, tmp: Path, run: int, support, queries) -> tuple[float, float, int]:
    """One fresh window with the photos model: seconds until the dropped photos' predictions are painted,
    seconds after one more support photo, and how many of the 20 queries are right."""
    from PySide6.QtCore import QSettings

    from metastudio.app.project import Project
    from metastudio.gui.mainwindow import MainWindow

    os.environ["METASTUDIO_CACHE_DIR"] = str(tmp / f"cache{run}")  # empty feature cache
    project = Project()
    project.model = {"kind": "shipped", "name": "photos"}
    window = MainWindow(project, device="cpu", ask_restore=False, recovery_dir=tmp / "recovery",
                        settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window.show()
    wait(app, lambda: window.model_info is not None and window.last_result is not None and not window.engine.busy)
    c = window.controller
    ids = [c.add_class(f"class {k}") for k in range(5)]
    app.processEvents()
    t = time.perf_counter()
    for k in range(5):
        c.add_files(support[k][:5], ids[k])  # what a drop on a card does
    c.add_files(queries, None)  # what a drop on the query grid does
    wait(app, lambda: shown(window, 25))
    window.repaint()  # the bars are on screen
    cold = time.perf_counter() - t
    t = time.perf_counter()
    c.add_files([support[0][5]], ids[0])
    wait(app, lambda: shown(window, 26))
    window.repaint()
    warm = time.perf_counter() - t
    right = sum(1 for i, q in enumerate(c.project.queries)
                if max(range(5), key=window.last_result["probabilities"][q.id].__getitem__) == i % 5)
    c.mark_saved()
    window.close()
    return cold, warm, right


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    starts = [startup_seconds() for _ in range(args.runs)]
    print(f"start-up: median {statistics.median(starts):.2f} s ({', '.join(f'{s:.2f}' for s in starts)})")

    from photos_latency import make_photo_set
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="metastudio-gui-latency-"))
    support, queries = make_photo_set(tmp)
    cold, warm = [], []
    for run in range(args.runs):
        cold_s, warm_s, right = photo_run(app, tmp, run, support, queries)
        cold.append(cold_s)
        warm.append(warm_s)
        print(f"run {run + 1}: cold {cold_s:.3f} s, +1 photo {warm_s:.3f} s, {right}/20 queries right")

    result = {
        "benchmark": "desktop app latency: start-up; photos model, 5 classes x 5 + 20 queries (1600x1200 JPEGs) "
                     "added as drops, until the predictions are painted; then one more support photo",
        "runs": args.runs, **seconds_series(startup_s=starts, cold_s=cold, plus_one_support_s=warm),
        "command": "QT_QPA_PLATFORM=offscreen python benchmarks/harnesses/gui_latency.py --runs %d" % args.runs,
        "machine": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "cpu": cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "qt_platform": os.environ.get("QT_QPA_PLATFORM")},
    }
    print(f"start-up {result['startup_s_median']:.2f} s; cold {result['cold_s_median']:.3f} s; "
          f"+1 support photo {result['plus_one_support_s_median']:.3f} s (medians of {args.runs})")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
