"""The ``metastudio`` command: the app, and ``train``, ``eval``, ``classify``, ``plugins``, ``info``, ``new-plugin``.

Every failure is printed as one line (``error: ...``, worded by
:func:`metastudio.errors.for_person`) with a non-zero exit status that says what kind it was:
1 for something the user can fix, 2 for a bad command line or value, 3 for a plugin that failed
(the line names it, with its package and version), 4 for a fault in MetaStudio itself, 124 for a
plugin call that passed ``--timeout``, 130 for Ctrl-C; ``--debug`` adds the traceback. Long work
shows a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import contextmanager

from metastudio.app.catalogue import resolve_model
from metastudio.cli.arguments import DEBUG_HELP, DEVICE_HELP, HP_ADAPTATION_HELP, common_args, timeout_arg
from metastudio.cli.classifying import adapt_to_support_folder, parse_hparams, print_predictions, query_files
from metastudio.cli.compare_commands import add_compare_command
from metastudio.cli.plugin_commands import add_plugin_commands
from metastudio.cli.sort_commands import add_sort_command
from metastudio.errors import EXIT_ERROR, EXIT_INTERRUPTED, for_person, plugin_in_traceback


# ------------------------------------------------------------------------------------------------
# helpers


def _progress_bar(desc: str, unit: str = "img"):
    from metastudio.data.progress import text_progress

    return text_progress(desc, unit)


def _dataset_options(spec, args) -> dict:
    """The dataset options the command-line flags set (--protocol where the dataset has one;
    --per-class, an error where it has none)."""
    declared = {o.name for o in spec.options}
    options = {}
    if getattr(args, "protocol", None) and "protocol" in declared:
        options["protocol"] = args.protocol
    if getattr(args, "per_class", None):
        if "per_class" not in declared:
            raise ValueError(f"--per-class is not an option of the {spec.name} dataset")
        options["per_class"] = args.per_class
    return options


def _load_dataset(host, args, split: str, image_size: int | None, channels: int | None):
    """Load ``split`` of the dataset named by ``args.dataset`` with a progress bar."""
    spec = host.dataset(args.dataset)
    options = _dataset_options(spec, args)
    if "channels" in {o.name for o in spec.options} and channels:
        options["channels"] = channels
    progress, close = _progress_bar(f"loading {args.dataset} {split}")
    try:
        ds = spec.load(args.root, split, image_size=image_size, progress=progress, **options)
    finally:
        close()
    if channels and ds.channels != channels:
        from metastudio.errors import DatasetError

        raise DatasetError(f"the model expects {channels}-channel images but dataset {spec.name} has {ds.channels}")
    for problem in ds.problems:  # each entry that can't be used, named with its reason; the rest is used
        print(f"warning: {problem}", file=sys.stderr)
    if ds.problems:
        print(f"warning: {len(ds.problems)} file(s) or folder(s) of {ds.name} could not be used; the rest is used",
              file=sys.stderr)
    return ds


def _device(args):
    from metastudio.engine.devices import configure_for_speed, describe_device, resolve_device

    device = resolve_device(args.device)
    configure_for_speed(device)
    print(f"device: {describe_device(device)}", file=sys.stderr)
    return device


# ------------------------------------------------------------------------------------------------
# commands


def cmd_info(args) -> int:
    from metastudio.app.catalogue import check_model_file
    from metastudio.engine.checkpoint import read_metadata

    path = resolve_model(args.model)
    meta = read_metadata(path)
    if not args.history:
        meta["history"] = f"{len(meta.get('history') or [])} entries (--history shows them)"
    print(json.dumps(meta, indent=2, ensure_ascii=False), flush=True)
    check_model_file(path)  # the metadata reads, but can the model be used? (weights, plugins): else error, exit 1
    return 0


def _stage_progress():
    """A :data:`~metastudio.app.runs.StageProgress` drawing one text bar per stage, and a closer."""
    from metastudio.data.progress import text_progress

    state: dict = {"stage": None, "bar": None, "close": None}

    def close() -> None:
        if state["close"] is not None:
            state["close"]()
        state.update(stage=None, bar=None, close=None)

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage != state["stage"]:
            close()
            state["bar"], state["close"] = text_progress(stage, "img")
            state["stage"] = stage
        state["bar"](done, total)

    return progress, close


def _training_plan(args, host):
    """The :class:`~metastudio.app.runs.TrainingPlan` the ``train`` flags describe, and whether the
    run validates on a "validation split" that holds the training classes (a folder without val/,
    with a warning: a researcher asked the command line for that)."""
    from metastudio.app.runs import TrainingPlan

    options = _dataset_options(host.dataset(args.dataset), args)
    if args.val_holdout < 0:
        raise ValueError(f"--val-holdout must be 0 or more, got {args.val_holdout}")
    val_split = args.val_split if args.val_split is not None else "val"
    if args.val_holdout:
        if args.val_split is not None and args.val_split.lower() != "none":
            print(f"warning: --val-split {args.val_split} is ignored: --val-holdout {args.val_holdout} validates on "
                  "classes held out of the training split", file=sys.stderr)
        val_split = "none"
    trains_on = getattr(host.algorithm(args.algorithm), "trains_on", "episodes")
    if args.episodes is None and trains_on != "batches":
        raise ValueError(f"--episodes N is needed: {args.algorithm} trains on episodes")
    if args.episodes is not None and trains_on == "batches":
        print(f"warning: --episodes is ignored: {args.algorithm} trains on labelled batches only (--batch-steps)",
              file=sys.stderr)
    plan = TrainingPlan(
        algorithm=args.algorithm, backbone=args.backbone, dataset=args.dataset,
        root=str(args.root) if args.root else None, split=args.train_split,
        val_split=None if val_split.lower() == "none" else val_split, val_holdout=args.val_holdout, options=options,
        ways=args.ways, shots=args.shots, queries=args.queries, episodes=args.episodes or 1, meta_batch=args.meta_batch,
        batch_steps=args.batch_steps, batch_size=args.batch_size,
        val_every=args.val_every, val_episodes=args.val_episodes, val_ways=args.val_ways, val_shots=args.val_shots,
        val_queries=args.val_queries, hparams=parse_hparams(args.hp), image_size=args.image_size,
        device=args.device, precision=args.precision, seed=args.seed, freeze_backbone=args.freeze_backbone,
        fit=args.fit, out=args.out, init=args.init)
    return plan, val_split.lower() != "none"


def _report_prepared(trainer) -> None:
    """Say on stderr what the prepared run trains on, and what a person should know about it."""
    print(f"device: {trainer.device_description}", file=sys.stderr)
    print(trainer.train_dataset.summary(), file=sys.stderr)
    if trainer.val_dataset is not None:
        print(trainer.val_dataset.summary(), file=sys.stderr)
    for warning in trainer.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if trainer.train_dataset.is_features:
        print(f"meta-training the head on {trainer.train_dataset.images.shape[1]}-d {trainer.plan.backbone} features "
              f"({len(trainer.train_dataset)} train images, each embedded once)", file=sys.stderr)


def _training_listener(bar):
    """A trainer listener that moves the step bar ``bar`` and writes each validation on stderr."""
    from metastudio.engine.trainer import StepEvent, ValidationEvent

    def listener(event) -> None:
        if isinstance(event, StepEvent):
            # A batch's accuracy is over every training class: never worded as an episode's.
            kind, unit = ("batch", "batches") if event.kind == "batch" else ("episode", "episodes")
            rate = f"{event.episodes_per_second:.2f} {unit}/s"
            if bar.disable and (event.step % 100 == 0 or event.step == event.steps):
                # No terminal (a log file, CI): a plain line now and then instead of a bar.
                print(f"step {event.step}/{event.steps}: {kind} loss {event.loss:.3f}, {kind} accuracy "
                      f"{100 * event.accuracy:.1f}%, {rate}, lr {event.lr:.2g}, {event.elapsed / 60:.1f} min",
                      file=sys.stderr, flush=True)
            bar.n = event.step
            bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{100 * event.accuracy:.1f}%", rate=rate,
                            lr=f"{event.lr:.2g}", refresh=True)
        elif isinstance(event, ValidationEvent):
            mark = " (best, saved)" if event.improved else ""
            bar.write(f"step {event.step}: validation accuracy {event.accuracy:.2f} ± {event.ci95:.2f} %{mark}",
                      file=sys.stderr)

    return listener


@contextmanager
def _stopping_on_signals(trainer, bar):
    """While inside: Ctrl-C, or SIGTERM from a scheduler, `timeout` or torchrun, stops the run after
    its current step (the model and the resume checkpoint are saved); a second signal aborts at once."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in stops}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def on_stop(signum, frame):
        bar.write("stopping after this step (press Ctrl-C again to abort at once)...", file=sys.stderr)
        trainer.control.cancel()
        restore()

    for s in stops:
        signal.signal(s, on_stop)
    try:
        yield
    finally:
        restore()


def cmd_train(args) -> int:
    from tqdm import tqdm

    from metastudio.app.runs import prepare_run
    from metastudio.plugins import get_host

    host = get_host(safe_mode=args.safe_mode or None)
    plan, validate_on_training_classes = _training_plan(args, host)
    progress, close_progress = _stage_progress()
    try:
        trainer = prepare_run(plan, host, progress, validate_on_training_classes=validate_on_training_classes)
    finally:
        close_progress()
    _report_prepared(trainer)
    steps = trainer.config.steps
    bar = tqdm(total=steps, desc=f"meta-training {type(trainer.algorithm).name}", unit="step", file=sys.stderr,
               dynamic_ncols=True, disable=None)
    trainer.listener = _training_listener(bar)
    try:
        with _stopping_on_signals(trainer, bar):
            result = trainer.run(resume=args.resume)
    finally:
        bar.close()
    best = f"; best validation accuracy {result.best_accuracy:.2f} %" if result.best_accuracy is not None else ""
    print(f"{result.status}: {result.steps_done} of {steps} steps in {result.elapsed / 60:.1f} min{best}; "
          f"model saved to {result.model_path}")
    if result.status != "completed":
        print(f"resume with the same command and --resume (checkpoint {trainer.resume_path})", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_eval(args) -> int:
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.data.feature_cache import use_feature_cache
    from metastudio.engine.checkpoint import load_model
    from metastudio.engine.evaluator import evaluate
    from metastudio.plugins import get_host

    host = get_host(safe_mode=args.safe_mode or None)
    path = resolve_model(args.model)
    device = _device(args)
    overrides = parse_hparams(args.hp)
    loaded = load_model(path, host, device, overrides)
    algorithm, meta = loaded.algorithm, loaded.metadata
    algorithm.use_amp = args.precision != "fp32"
    algorithm.amp_on_cpu = args.precision == "bf16"
    use_feature_cache(algorithm)
    ds = _load_dataset(host, args, args.split, meta["image_size"], meta["channels"])
    if device.type != "cpu":
        ds = ds.to(device)
    if args.seed is None:
        from metastudio.data.episodes import EVAL_SEED

        args.seed = EVAL_SEED
    sampler = EpisodeSampler(ds, args.ways, args.shots, args.queries, seed=args.seed)
    progress, close = _progress_bar(f"evaluating {args.ways}-way {args.shots}-shot", unit="episode")
    origin = host.origin_of("algorithm", type(algorithm).name)
    try:
        result = evaluate(algorithm, sampler, args.episodes, progress=progress, origin=origin, time_limit=args.timeout)
    finally:
        close()
    if args.json:
        print(json.dumps({**result.to_json(), "model": args.model, "dataset": ds.name, "seed": args.seed,
                          "hyperparameters": {k: algorithm.hparams[k] for k in overrides}}))
    else:
        print(result.line())
    return 0


def cmd_classify(args) -> int:
    from metastudio.app.session import ClassifierSession, write_predictions
    from metastudio.engine.devices import describe_device
    from metastudio.errors import ImageLoadError, MetaStudioError
    from metastudio.plugins import get_host

    host = get_host(safe_mode=args.safe_mode or None)
    path = resolve_model(args.model)
    session = ClassifierSession(host, args.device, time_limit=args.timeout)
    print(f"device: {describe_device(session.device)}", file=sys.stderr)
    session.load(path, parse_hparams(args.hp))
    if args.support:
        adapt_to_support_folder(session, args.support)
    elif not session.use_saved_classes():
        raise MetaStudioError("--support is needed: this model holds no adapted classes")
    queries = [(str(i), f) for i, f in enumerate(query_files(args.query))]
    labels = {image_id: str(f) for image_id, f in queries}
    result = session.classify(queries)
    for image_id, reason in result.problems.items():
        print(f"warning: {ImageLoadError(labels[image_id], reason)}; skipped", file=sys.stderr)
    if not result.probabilities:
        raise MetaStudioError("none of the query images could be read")
    print_predictions(result, labels)
    if args.csv:
        # Always the same columns (the app's export too): file, predicted, a column per class, unsure.
        write_predictions(args.csv, result, [(i, labels[i]) for i in result.probabilities])
        print(f"predictions written to {args.csv}", file=sys.stderr)
    return 0


def cmd_gui(args) -> int:
    """The desktop app."""
    try:
        from metastudio.gui.app import run
    except ImportError as e:  # PySide6 missing or its system libraries absent
        print(f"error: the desktop app cannot start ({e}); the commands (metastudio --help) still work", file=sys.stderr)
        return EXIT_ERROR
    return run(args)


# ------------------------------------------------------------------------------------------------
# parser


def _dataset_args(sp) -> None:
    sp.add_argument("--dataset", required=True, help="dataset plugin name (omniglot, folder, ... see 'metastudio plugins')")
    sp.add_argument("--root", default=None, help="where the dataset lies (a folder or zip); omniglot downloads when absent")
    sp.add_argument("--protocol", default=None, choices=("vinyals", "lake"), help="Omniglot split protocol (default vinyals)")
    sp.add_argument("--per-class", type=int, default=None, metavar="N",
                    help="folder and mini-imagenet: use only the first N images (by name) of each class")


def _add_train(sub) -> None:
    from metastudio.data.images import FITS

    t = sub.add_parser("train", help="meta-train an algorithm on a dataset", description="Meta-train an algorithm on episodes of a dataset's train split, validating on its val split and keeping the best model.")
    common_args(t)
    t.add_argument("--algorithm", required=True, help="algorithm plugin name, e.g. protonet")
    t.add_argument("--backbone", default="conv4", help="backbone name (conv4, resnet12, ...)")
    _dataset_args(t)
    t.add_argument("--ways", type=int, default=5, help="classes per training episode")
    t.add_argument("--shots", type=int, default=1, help="support images per class")
    t.add_argument("--queries", type=int, default=15, help="query images per class")
    t.add_argument("--episodes", type=int, default=None,
                   help="number of training episodes (not for an algorithm that trains on batches only)")
    t.add_argument("--meta-batch", type=int, default=1, help="episodes per optimisation step")
    t.add_argument("--batch-steps", type=int, default=0, metavar="N",
                   help="for algorithms that train on labelled batches of every training class (simpleshot, "
                        "baselinepp): that many steps, before any episodes")
    t.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per batch step (default 64)")
    t.add_argument("--out", required=True, help="model file to write (.safetensors); the best model is kept there")
    t.add_argument("--seed", type=int, default=0, help="random seed (episodes and initial weights)")
    t.add_argument("--hp", action="append", metavar="NAME=VALUE", help="algorithm hyperparameter (repeatable), e.g. --hp lr=0.001")
    t.add_argument("--image-size", type=int, default=None, help="side of the square input images (default: the dataset's)")
    t.add_argument("--fit", default="stretch", choices=FITS,
                   help="how non-square images become squares when the model is used (stretch, or crop the centre)")
    t.add_argument("--freeze-backbone", action="store_true",
                   help="keep the backbone's (pretrained) weights fixed and out of the model file; train the rest")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default=None, help="split to validate on (default val), or 'none'")
    t.add_argument("--val-holdout", type=int, default=0, metavar="N",
                   help="validate on N classes of the training split instead, held out of training (chosen with "
                        "--seed; for datasets without a separate validation split, or whose val split is the one "
                        "you report); validates before the first step too, so an untrained head that training "
                        "makes worse is kept")
    t.add_argument("--val-every", type=int, default=500, help="steps between validations")
    t.add_argument("--val-episodes", type=int, default=200, help="episodes per validation (a fixed list)")
    t.add_argument("--val-ways", type=int, default=5)
    t.add_argument("--val-shots", type=int, default=1)
    t.add_argument("--val-queries", type=int, default=15)
    t.add_argument("--resume", action="store_true", help="continue from the resume checkpoint next to --out")
    t.add_argument("--init", metavar="MODEL", default=None,
                   help="start from the weights of this model file (same algorithm and backbone) instead of random "
                        "ones, e.g. to meta-train a 5-way model further on 20-way tasks; the optimiser starts afresh")
    t.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a model over fixed episodes (mean accuracy ± 95%% CI)")
    common_args(e)
    e.add_argument("--model", required=True, help="model file or shipped model name")
    _dataset_args(e)
    e.add_argument("--split", default="test")
    e.add_argument("--ways", type=int, default=5)
    e.add_argument("--shots", type=int, default=1)
    e.add_argument("--queries", type=int, default=15)
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--seed", type=int, default=None, help="seed of the fixed episode list (default: the standard one)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--hp", action="append", metavar="NAME=VALUE", help=HP_ADAPTATION_HELP)
    timeout_arg(e, "one step of an episode (adapting to its examples, or classifying its queries)")
    e.set_defaults(func=cmd_eval)


def _add_classify(sub) -> None:
    c = sub.add_parser("classify", help="classify images with a model adapted to your labelled examples")
    common_args(c)
    c.add_argument("--model", required=True, help="model file or shipped model name")
    c.add_argument("--support", default=None, help="folder with one sub-folder of example images per class")
    c.add_argument("--query", required=True, nargs="+", help="image files or folders to classify")
    c.add_argument("--csv", default=None, help="also write the predictions and per-class probabilities to this CSV file "
                   "(with an 'unsure' column giving the reason when some image is not like any class or too small)")
    c.add_argument("--hp", action="append", metavar="NAME=VALUE", help=HP_ADAPTATION_HELP)
    timeout_arg(c, "one step (adapting to the examples, or classifying the images)")
    c.set_defaults(func=cmd_classify)


def _add_info(sub) -> None:
    i = sub.add_parser("info", help="show a model file's metadata")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    i.add_argument("model", help="model file or shipped model name")
    i.add_argument("--history", action="store_true", help="include the training history")
    i.set_defaults(func=cmd_info)


def build_parser() -> argparse.ArgumentParser:
    from metastudio import __version__

    p = argparse.ArgumentParser(
        prog="metastudio",
        description="MetaStudio: few-shot image classification with meta-learning. "
        "Without a command, opens the app.",
    )
    p.add_argument("--version", action="version", version=f"metastudio {__version__}")
    p.add_argument("--safe-mode", action="store_true", help="load the built-in plugins only")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    app = p.add_argument_group("the desktop app (metastudio [PROJECT.metastudio] [options], no COMMAND)")
    app.add_argument("--support", metavar="DIR", help="open with a class for each sub-folder of DIR (their images as examples)")
    app.add_argument("--query", metavar="DIR", help="open with the images of DIR (or one image) to classify")
    app.add_argument("--model", metavar="M", help="model to use: a shipped model name (photos, protonet-omniglot) or a file")
    app.add_argument("--screenshot", metavar="FILE", help="wait until the predictions are shown, save a PNG of the window and exit")
    app.add_argument("--device", default="auto", help=DEVICE_HELP)
    app.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub)
    _add_classify(sub)
    add_plugin_commands(sub)
    add_sort_command(sub)
    add_compare_command(sub)
    _add_info(sub)
    return p


def _tell(error: BaseException, debug: bool) -> int:
    """Print ``error`` for a person on stderr (with its traceback when ``debug``); its exit status."""
    said = for_person(error)
    print(said.message if said.exit_code == EXIT_INTERRUPTED else f"error: {said.message}", file=sys.stderr)
    if debug and said.details:
        print(said.details, end="", file=sys.stderr)
    return said.exit_code


def _run(args) -> int:
    """The command ``args`` asks for, every failure told on one line (its exit status returned)."""
    try:
        return cmd_gui(args) if args.command is None else args.func(args)
    except SystemExit as error:
        if plugin_in_traceback(error) is None:
            raise  # MetaStudio's own exit
        return _tell(error, args.debug)  # a plugin called sys.exit: its fault, told like any other
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - every failure is told, none is a crash
        return _tell(error, args.debug)


def _leave_now_if_calls_run_on(code: int) -> None:
    """Exit the process at once with ``code`` when a plugin call that was stopped waiting for
    (``--timeout``, Ctrl-C) still runs: nothing it does during the interpreter's shutdown can
    hang the command or make it fail then."""
    from metastudio.engine.guard import abandoned_calls

    if abandoned_calls():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None  # run as the metastudio command, not called from Python
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    project = None
    if argv and not argv[0].startswith("-") and argv[0].endswith(".metastudio"):
        project = argv.pop(0)  # metastudio my.metastudio (what a file manager runs)
    args = parser.parse_args(argv)
    args.project = project
    code = _run(args)
    if as_program and "metastudio.engine.guard" in sys.modules:
        _leave_now_if_calls_run_on(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
