#!/usr/bin/env python
"""How long the GUI thread stalls while the app meta-trains.

Opens the meta-training panel in a window (offscreen unless a display is asked for), starts
meta-training of ProtoNet / Conv-4 on Omniglot's background alphabets (Lake protocol: 27
alphabets to train on, 3 to validate on) read from ../shared/data/omniglot, and measures a 10 ms
QTimer on the GUI thread during at least --seconds of training: its lateness is the actual
interval minus 10 ms. Stalls while the dataset loads (decoding, or reading the disk cache) are
reported separately. Prints max, p99 and median lateness and the number of step signals the
panel received, and writes a JSON record.

    python benchmarks/gui_stall.py [--ways 60 --shots 1 --queries 5] [--seconds 30] \
        [--json benchmarks/results/gui_stall.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
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
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gui_stall.json"))
    args = p.parse_args()

    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    scratch = tempfile.TemporaryDirectory(prefix="metastudio-stall-")  # models written, a fresh cache
    if args.fresh_cache:
        os.environ["METASTUDIO_CACHE_DIR"] = str(Path(scratch.name) / "cache")
    if not (Path(args.root) / "images_background.zip").exists() and not (Path(args.root) / "images_background").exists():
        print(f"error: Omniglot's images_background is not in {args.root} (see ../shared/data/README.md)", file=sys.stderr)
        return 1

    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])

    from metastudio.app.runs import TrainingPlan
    from metastudio.gui.training import TrainingPanel

    out_dir = Path(scratch.name) / "models"
    panel_kwargs = {} if args.torch_threads is None else {"torch_threads": args.torch_threads}
    if args.no_gc_tuning:
        panel_kwargs["gc_tuning"] = False
    if args.worker_nice is not None:
        panel_kwargs["worker_nice"] = args.worker_nice
    if args.panel_only or panel_kwargs:
        panel = TrainingPanel(output_dir=out_dir, **panel_kwargs)
        window = QMainWindow()
        window.setWindowTitle("MetaStudio: GUI stall benchmark")
        window.setCentralWidget(panel)
    else:  # the real window, Meta-train tab, with its adapt worker loaded as in use
        from PySide6.QtCore import QSettings

        from metastudio.gui.mainwindow import MainWindow

        window = MainWindow(device="cpu", ask_restore=False, recovery_dir=Path(scratch.name) / "recovery",
                            settings=QSettings(str(Path(scratch.name) / "settings.ini"), QSettings.Format.IniFormat))
        window.tabs.setCurrentIndex(1)
        panel = window.ensure_training_panel()
        panel.output_dir = out_dir
    window.resize(1280, 800)
    window.show()

    steps_needed = 100_000  # far more than can run: the benchmark cancels after --seconds
    plan = TrainingPlan(algorithm="protonet", backbone="conv4", dataset="omniglot", root=str(args.root),
                        split="train", val_split="val", options={"protocol": "lake"}, ways=args.ways,
                        shots=args.shots, queries=args.queries, episodes=steps_needed, val_every=args.val_every,
                        val_episodes=args.val_episodes, val_ways=5, val_shots=1, val_queries=15, device="cpu",
                        log_every=1)
    panel.set_plan(plan)

    state = {"phase": "loading", "last": None, "train_started": None, "first_step": None}
    lateness = {"loading": [], "training": []}
    validations = []

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(10)

    worst: list[dict] = []  # the longest stalls, with what was going on

    def tick() -> None:
        now = time.perf_counter()
        if state["last"] is not None and state["phase"] in lateness:
            late = 1000.0 * (now - state["last"]) - 10.0
            lateness[state["phase"]].append(late)
            if late > 20.0:
                worst.append({"ms": round(late, 1), "at_s": round(now - started, 2), "phase": state["phase"],
                              "stage": state.get("stage", "")})
        state["last"] = now

    timer.timeout.connect(tick)

    def on_step(d: dict) -> None:
        if state["phase"] == "loading":
            state["phase"] = "training"
            state["train_started"] = time.perf_counter()
            state["first_step"] = d["step"]
        state["last_step"] = d

    errors = []
    panel.error.connect(lambda message, details: errors.append(message))
    # Let the window appear and paint first (fonts, first layout): a person clicks Start in a
    # window that is already on the screen.
    settle = QEventLoop()
    QTimer.singleShot(3000 if hasattr(window, "controller") else 1000, settle.quit)
    settle.exec()
    started = time.perf_counter()
    timer.start()
    if not panel.start():
        print("error: the panel did not start", file=sys.stderr)
        return 1
    panel.worker.step.connect(on_step)
    panel.worker.loading.connect(lambda stage, done, total: state.update(stage=f"{stage} {done}/{total}"))
    panel.worker.validation.connect(lambda d: state.update(stage=f"validated at step {d['step']}"))
    panel.worker.validation.connect(validations.append)

    # Qt's own event loop runs, as in the app; a watchdog ends it when enough was measured.
    loop = QEventLoop()

    def watchdog() -> None:
        if errors or not panel.is_running():
            loop.quit()
        elif state["train_started"] and time.perf_counter() - state["train_started"] >= args.seconds:
            loop.quit()

    check = QTimer()
    check.setInterval(200)
    check.timeout.connect(watchdog)
    check.start()
    loop.exec()
    check.stop()
    trained_for = time.perf_counter() - (state["train_started"] or time.perf_counter())
    state["phase"] = "stopping"
    timer.stop()
    last = state.get("last_step") or {}
    steps_received = panel.steps_received()
    redraws = panel.plot.redraw_count
    panel.shutdown()
    if hasattr(window, "controller"):
        window.controller.mark_saved()
    window.close()
    scratch.cleanup()
    if errors:
        print(f"error: training failed: {errors[0]}", file=sys.stderr)
        return 1

    import torch

    train = summarise(lateness["training"])
    loading = summarise(lateness["loading"])
    steps_done = int(last.get("step", 0))
    result = {
        "benchmark": "GUI thread lateness (10 ms QTimer) while the meta-training panel trains",
        "window": "training panel alone" if args.panel_only or panel_kwargs else "main window, Meta-train tab",
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
        "loading_seconds": round((state["train_started"] or time.perf_counter()) - started, 1),
        "training": train,
        "loading": loading,
        "step_signals_received": steps_received,
        "steps_done": steps_done,
        "validations": len(validations),
        "episodes_per_second": round(steps_done / trained_for, 2) if trained_for > 0 else None,
        "plot_redraws": redraws,
        "worst_stalls": sorted(worst, key=lambda w: -w["ms"])[:10],
        "target_max_ms": 50,
    }
    print(f"trained {steps_done} steps ({args.ways}-way {args.shots}-shot {args.queries}-query) in {trained_for:.1f} s, "
          f"{len(validations)} validations; {steps_received} step signals, {redraws} plot redraws")
    print(f"GUI lateness while training: max {train.get('max_ms')} ms, p99 {train.get('p99_ms')} ms, "
          f"median {train.get('median_ms')} ms over {train.get('ticks')} ticks ({train.get('over_50ms')} over 50 ms)")
    print(f"GUI lateness while loading ({result['loading_seconds']} s): max {loading.get('max_ms')} ms, "
          f"p99 {loading.get('p99_ms')} ms, median {loading.get('median_ms')} ms")
    for w in sorted(worst, key=lambda w: -w["ms"])[:5]:
        print(f"  stall {w['ms']} ms at {w['at_s']} s ({w['phase']}; last event: {w['stage'] or 'none'})")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
