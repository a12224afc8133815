#!/usr/bin/env python
"""How long the GUI thread stalls while the app meta-trains.

Opens the meta-training panel in a window (offscreen unless a display is asked for), starts
meta-training of ProtoNet / Conv-4 on Omniglot's background alphabets (Lake protocol: 27
alphabets to train on, 3 to validate on) read from ../shared/data/omniglot, and measures a 10 ms
QTimer on the GUI thread during at least --seconds of training: its lateness is the actual
interval minus 10 ms. Stalls while the dataset loads (decoding, or reading the disk cache) are
reported separately. Prints max, p99 and median lateness and the number of step signals the
panel received, and writes a JSON record.

    python benchmarks/harnesses/gui_stall.py [--ways 60 --shots 1 --queries 5] [--seconds 30] \
        [--json benchmarks/results/cpu-2core/gui_stall.json]

The JSON goes by default to ``benchmarks/results/cpu-<cores>core/gui_stall.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name, cpu_results_dir, write_json

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "omniglot"


def summarise(lateness_ms: list[float]) -> dict:
    if not lateness_ms:
        return {"ticks": 0}
    ordered = sorted(lateness_ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "ticks": len(ordered),
        "max_ms": round(ordered[-1], 2),
        "p99_ms": round(p99, 2),
        "median_ms": round(statistics.median(ordered), 2),
        "over_50ms": sum(v > 50 for v in ordered),
        "over_20ms": sum(v > 20 for v in ordered),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_DATA), help="Omniglot folder (images_background.zip)")
    p.add_argument("--ways", type=int, default=60)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of meta-training to measure")
    p.add_argument("--val-every", type=int, default=40, help="steps between validations (they happen during the measurement)")
    p.add_argument("--val-episodes", type=int, default=20)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads for the worker (default: the panel's choice)")
    p.add_argument("--worker-nice", type=int, default=None,
                   help="nice increment of the training thread (default: the panel's choice; 0 = none)")
    p.add_argument("--no-gc-tuning", action="store_true",
                   help="let the garbage collector run during loading and scan everything during training")
    p.add_argument("--fresh-cache", action="store_true",
                   help="decode the images again instead of reading the dataset cache (measures loading too)")
    p.add_argument("--panel-only", action="store_true", help="the training panel alone in a plain window "
                   "(default: the app's main window on its Meta-train tab)")
    p.add_argument("--show", action="store_true", help="use the real display instead of offscreen rendering")
    p.add_argument("--json", default=str(cpu_results_dir() / "gui_stall.json"))
    return p.parse_args()


def panel_options(args) -> dict:
    """The TrainingPanel options the command line sets (none by default: the panel's own choices)."""
    options = {} if args.torch_threads is None else {"torch_threads": args.torch_threads}
    if args.no_gc_tuning:
        options["gc_tuning"] = False
    if args.worker_nice is not None:
        options["worker_nice"] = args.worker_nice
    return options


def open_window(args, scratch: Path):
    """The window to measure, shown, and its training panel: the app's main window on its Meta-train tab
    (with its adapt worker loaded as in use), or the training panel alone in a plain window with
    --panel-only or any panel option."""
    from PySide6.QtWidgets import QMainWindow

    from metastudio.gui.training import TrainingPanel

    out_dir = scratch / "models"
    options = panel_options(args)
    if args.panel_only or options:
        panel = TrainingPanel(output_dir=out_dir, **options)
        window = QMainWindow()
        window.setWindowTitle("MetaStudio: GUI stall benchmark")
        window.setCentralWidget(panel)
    else:
        from PySide6.QtCore import QSettings

        from metastudio.gui.mainwindow import MainWindow

        window = MainWindow(device="cpu", ask_restore=False, recovery_dir=scratch / "recovery",
                            settings=QSettings(str(scratch / "settings.ini"), QSettings.Format.IniFormat))
        window.tabs.setCurrentIndex(1)
        panel = window.ensure_training_panel()
        panel.output_dir = out_dir
    window.resize(1280, 800)
    window.show()
    return window, panel


class Lateness:
    """A 10 ms precise QTimer on the GUI thread and how late each tick fires (actual interval minus
    10 ms), apart while the run loads and while it trains, with the longest stalls and the last event
    the worker reported before each."""

    def __init__(self):
        from PySide6.QtCore import Qt, QTimer

        self.phase, self.stage = "loading", ""
        self.last = self.started = self.train_started = None
        self.last_step: dict = {}
        self.ms: dict[str, list[float]] = {"loading": [], "training": []}
        self.worst: list[dict] = []
        self.validations: list[dict] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def start(self) -> None:
        self.started = time.perf_counter()
        self.timer.start()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None and self.phase in self.ms:
            late = 1000.0 * (now - self.last) - 10.0
            self.ms[self.phase].append(late)
            if late > 20.0:
                self.worst.append({"ms": round(late, 1), "at_s": round(now - self.started, 2), "phase": self.phase,
                                   "stage": self.stage})
        self.last = now

    def on_step(self, d: dict) -> None:
        if self.phase == "loading":
            self.phase = "training"
            self.train_started = time.perf_counter()
        self.last_step = d

    def follow(self, worker) -> None:
        """Listen to the training worker's signals."""
        worker.step.connect(self.on_step)
        worker.loading.connect(lambda stage, done, total: setattr(self, "stage", f"{stage} {done}/{total}"))
        worker.validation.connect(lambda d: setattr(self, "stage", f"validated at step {d['step']}"))
        worker.validation.connect(self.validations.append)

    def stop(self) -> None:
        self.phase = "stopping"
        self.timer.stop()

    def loading_seconds(self) -> float:
        return (self.train_started or time.perf_counter()) - self.started


def train_and_measure(args, window, panel) -> tuple[Lateness, float, list[str]] | None:
    """Start meta-training in the panel and measure the GUI thread's lateness until --seconds of training
    have passed (or the run ends); the measurement, the seconds trained and the errors reported, or None
    when the panel did not start."""
    from PySide6.QtCore import QEventLoop, QTimer

    from metastudio.app.runs import TrainingPlan

    steps_needed = 100_000  # far more than can run: the benchmark cancels after --seconds
    panel.set_plan(TrainingPlan(
        algorithm="protonet", backbone="conv4", dataset="omniglot", root=str(args.root), split="train",
        val_split="val", options={"protocol": "lake"}, ways=args.ways, shots=args.shots, queries=args.queries,
        episodes=steps_needed, val_every=args.val_every, val_episodes=args.val_episodes, val_ways=5, val_shots=1,
        val_queries=15, device="cpu", log_every=1))
    meter = Lateness()
    errors: list[str] = []
    panel.error.connect(lambda message, details: errors.append(message))
    # Let the window appear and paint first (fonts, first layout): a person clicks Start in a
    # window that is already on the screen.
    settle = QEventLoop()
    QTimer.singleShot(3000 if hasattr(window, "controller") else 1000, settle.quit)
    settle.exec()
    meter.start()
    if not panel.start():
        return None
    meter.follow(panel.worker)

    # Qt's own event loop runs, as in the app; a watchdog ends it when enough was measured.
    loop = QEventLoop()

    def watchdog() -> None:
        if errors or not panel.is_running():
            loop.quit()
        elif meter.train_started and time.perf_counter() - meter.train_started >= args.seconds:
            loop.quit()

    check = QTimer()
    check.setInterval(200)
    check.timeout.connect(watchdog)
    check.start()
    loop.exec()
    check.stop()
    trained_for = time.perf_counter() - (meter.train_started or time.perf_counter())
    meter.stop()
    return meter, trained_for, errors


def record(args, meter: Lateness, trained_for: float, step_signals: int, redraws: int) -> dict:
    """The JSON record of one measurement."""
    import torch

    steps_done = int(meter.last_step.get("step", 0))
    return {
        "benchmark": "GUI thread lateness (10 ms QTimer) while the meta-training panel trains",
        "window": "training panel alone" if args.panel_only or panel_options(args) else "main window, Meta-train tab",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "qt_platform": os.environ.get("QT_QPA_PLATFORM", "default"),
                    "nice": os.nice(0) if hasattr(os, "nice") else None},
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "setup": {"algorithm": "protonet", "backbone": "conv4", "dataset": "omniglot (lake protocol, background alphabets)",
                  "ways": args.ways, "shots": args.shots, "queries": args.queries, "val_every": args.val_every,
                  "val_episodes": args.val_episodes, "torch_threads_in_training": torch.get_num_threads(),
                  "worker_torch_threads_option": args.torch_threads, "worker_nice_option": args.worker_nice,
                  "gc_tuning": not args.no_gc_tuning},
        "training_seconds_measured": round(trained_for, 1),
        "loading_seconds": round(meter.loading_seconds(), 1),
        "training": summarise(meter.ms["training"]),
        "loading": summarise(meter.ms["loading"]),
        "step_signals_received": step_signals,
        "steps_done": steps_done,
        "validations": len(meter.validations),
        "episodes_per_second": round(steps_done / trained_for, 2) if trained_for > 0 else None,
        "plot_redraws": redraws,
        "worst_stalls": sorted(meter.worst, key=lambda w: -w["ms"])[:10],
        "target_max_ms": 50,
    }


def report(args, result: dict) -> None:
    train, loading = result["training"], result["loading"]
    print(f"trained {result['steps_done']} steps ({args.ways}-way {args.shots}-shot {args.queries}-query) in "
          f"{result['training_seconds_measured']:.1f} s, {result['validations']} validations; "
          f"{result['step_signals_received']} step signals, {result['plot_redraws']} plot redraws")
    print(f"GUI lateness while training: max {train.get('max_ms')} ms, p99 {train.get('p99_ms')} ms, "
          f"median {train.get('median_ms')} ms over {train.get('ticks')} ticks ({train.get('over_50ms')} over 50 ms)")
    print(f"GUI lateness while loading ({result['loading_seconds']} s): max {loading.get('max_ms')} ms, "
          f"p99 {loading.get('p99_ms')} ms, median {loading.get('median_ms')} ms")
    for w in result["worst_stalls"][:5]:
        print(f"  stall {w['ms']} ms at {w['at_s']} s ({w['phase']}; last event: {w['stage'] or 'none'})")


def main() -> int:
    args = parse_args()
    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    scratch = tempfile.TemporaryDirectory(prefix="metastudio-stall-")  # models written, a fresh cache
    if args.fresh_cache:
        os.environ["METASTUDIO_CACHE_DIR"] = str(Path(scratch.name) / "cache")
    if not (Path(args.root) / "images_background.zip").exists() and not (Path(args.root) / "images_background").exists():
        print(f"error: Omniglot's images_background is not in {args.root} (see ../shared/data/README.md)", file=sys.stderr)
        return 1

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window, panel = open_window(args, Path(scratch.name))
    measured = train_and_measure(args, window, panel)
    if measured is None:
        print("error: the panel did not start", file=sys.stderr)
        return 1
    meter, trained_for, errors = measured
    step_signals, redraws = panel.steps_received(), panel.plot.redraw_count
    panel.shutdown()
    if hasattr(window, "controller"):
        window.controller.mark_saved()
    window.close()
    app.processEvents()  # the closed window's last events, before its scratch folder goes
    scratch.cleanup()
    if errors:
        print(f"error: training failed: {errors[0]}", file=sys.stderr)
        return 1
    result = record(args, meter, trained_for, step_signals, redraws)
    report(args, result)
    if args.json:
        print(f"written to {write_json(args.json, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
