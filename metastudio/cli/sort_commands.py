"""``metastudio sort``: sort a folder of photos into class folders (with a preview and an undo
log), and ``metastudio sort --undo LOG`` to put everything back. The work is
:mod:`metastudio.app.sorting`'s; this is its command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager

from metastudio.cli.arguments import HP_ADAPTATION_HELP, common_args, timeout_arg
from metastudio.errors import EXIT_ERROR, EXIT_INTERRUPTED

DESCRIPTION = """\
Sort photos into one folder per class. Give a few labelled examples (--support: one sub-folder
of images per class) and the photos to sort (--query); the model learns your classes and puts
each photo into OUT/<class>/. Your examples are copied there too, so OUT holds the whole
labelled set.

A photo the model is not sure of goes to OUT/_unsure/ instead: one that is not like any of your
classes, one too small to recognise, and one whose best class is less likely than
--min-confidence. (If a class is itself called "_unsure", the unsure folder gets another "_" in
front, and so on, so it is never a class's folder.) A class name that cannot be a folder name
(with "/", "..", a name Windows reserves such as CON) gets a safe one, said in the preview. A
file whose name is taken in its folder gets "-2", "-3"... before its extension: nothing is ever
overwritten.

The photos are copied unless you give --move. Before anything happens the plan is printed: how
many files go to each folder, and the first few. --dry-run prints it and changes nothing.

OUT/labels.csv lists every file with its class, whether it is "confirmed" (one of your
examples), "predicted" or "unsure", and the probability of each class. The undo log
OUT/.metastudio-sort-<date>-<time>.json records every step as it happens (even a sort that is
stopped by a full disk or Ctrl-C): "metastudio sort --undo LOG" moves every moved photo back,
deletes every copy and removes the folders it made, and refuses, file by file, to touch a file
that changed since."""

EPILOG = """\
examples:
  metastudio sort --model photos --support examples/ --query camera-roll/ --out sorted/ --dry-run
  metastudio sort --model photos --support examples/ --query camera-roll/ --out sorted/ --min-confidence 80% --move
  metastudio sort --undo sorted/.metastudio-sort-20261204-101500.json"""


def _confidence(text: str) -> float:
    from metastudio.app.sorting import parse_min_confidence

    try:
        return parse_min_confidence(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@contextmanager
def _stop_on_ctrl_c():
    """While inside: Ctrl-C (or SIGTERM) sets the event yielded, so that the sort stops after the
    file it is at; a second Ctrl-C interrupts at once."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def on_signal(signum, frame):
        print("\nstopping after this file (press Ctrl-C again to stop at once)...", file=sys.stderr)
        stop.set()
        for s, handler in previous.items():
            signal.signal(s, handler)

    for s in signals:
        signal.signal(s, on_signal)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _classify(args):
    """``(class names, support classes, predictions, unreadable files)`` for the sort's flags."""
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.session import ClassifierSession
    from metastudio.app.sorting import predictions_from_result, support_from_folder
    from metastudio.cli.classifying import parse_hparams, query_files
    from metastudio.engine.devices import describe_device
    from metastudio.errors import MetaStudioError
    from metastudio.plugins import get_host

    host = get_host(safe_mode=args.safe_mode or None)
    session = ClassifierSession(host, args.device, time_limit=args.timeout)
    print(f"device: {describe_device(session.device)}", file=sys.stderr)
    session.load(resolve_model(args.model), parse_hparams(args.hp))
    classes, problems = support_from_folder(args.support)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    support = [(name, [(f"s{c}-{i}", f) for i, f in enumerate(files)]) for c, (name, files) in enumerate(classes)]
    files = list(dict.fromkeys(query_files([q for group in args.query for q in group])))
    queries = [(f"q{i}", f) for i, f in enumerate(files)]
    result = session.run(support, queries)
    if result.status != "ok":
        usable = sum(any(i not in result.problems for i, _ in items) for _, items in support)
        raise MetaStudioError(f"the support folder '{args.support}' has {usable} class(es) with images; make one "
                              "sub-folder of example images per class, with at least two classes")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    paths = {i: f for i, f in [*queries, *(item for _, items in support for item in items)]}
    unreadable = [(paths[i], reason) for i, reason in result.problems.items()]
    for path, reason in unreadable:
        print(f"warning: cannot use image '{path}': {reason}; it stays where it is", file=sys.stderr)
    readable = [(name, [f for i, f in items if i not in result.problems]) for name, items in support]
    return result.class_names, readable, predictions_from_result(result, queries), unreadable


def _sort(args) -> int:
    from metastudio.app.sorting import SortError, execute_sort, plan_sort, preview
    from metastudio.data.progress import text_progress
    from metastudio.errors import MetaStudioError

    names, support, predictions, unreadable = _classify(args)
    if not predictions:
        raise MetaStudioError("none of the query images could be read")
    plan = plan_sort(args.out, names, support, predictions, min_confidence=args.min_confidence, move=args.move,
                     csv_path=args.csv, skipped=unreadable)
    print("\n".join(preview(plan)), flush=True)
    if args.dry_run:
        print("dry run: nothing was copied or moved")
        return 0
    progress, close = text_progress("moving" if args.move else "copying", "file")
    try:
        with _stop_on_ctrl_c() as stop:
            report = execute_sort(plan, progress, stop.is_set)
    except SortError as error:
        close()
        if error.log_path is not None and error.done:
            print(f"to put back what was done: metastudio sort --undo {error.log_path}", file=sys.stderr)
        raise
    close()
    for path in report.vanished:
        print(f"warning: '{path}' is gone since it was classified; not sorted", file=sys.stderr)
    done = ", ".join(filter(None, [f"copied {report.copied}" if report.copied else "",
                                   f"moved {report.moved}" if report.moved else ""])) or "copied 0"
    undo = f"metastudio sort --undo {report.log_path}"
    if report.status == "cancelled":
        print(f"stopped: {done} of {report.total} files into {plan.out}; no labels CSV was written. "
              f"To put them back: {undo}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{done} files into {plan.out}; labels in {report.csv_path}")
    print(f"to undo: {undo}")
    return 0


def _undo(args) -> int:
    from metastudio.app.sorting import undo_sort
    from metastudio.data.progress import text_progress

    given = [flag for flag, value in (("--model", args.model), ("--support", args.support), ("--query", args.query),
                                      ("--out", args.out), ("--csv", args.csv), ("--move", args.move),
                                      ("--dry-run", args.dry_run), ("--min-confidence", args.min_confidence))
             if value]
    if given:
        raise ValueError(f"--undo takes only the undo log: leave out {', '.join(given)}")
    progress, close = text_progress("undoing", "file")
    try:
        with _stop_on_ctrl_c() as stop:
            report = undo_sort(args.undo, progress, stop.is_set)
    finally:
        close()
    for _, why in report.refused:
        print(f"kept: {why}", file=sys.stderr)
    removed = f"; removed {len(report.folders_removed)} folder(s) it made" if report.folders_removed else ""
    print(f"put back {report.restored} moved file(s) and deleted {report.removed} copied or written file(s){removed}")
    if report.status == "cancelled":
        print(f"stopped before the end: run the same command again to carry on ({args.undo})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.refused:
        print(f"{len(report.refused)} file(s) were left as they are (above); the undo log '{report.log_path}' now lists "
              "only them: once they are as the sort left them, run the same command again", file=sys.stderr)
        return EXIT_ERROR
    if report.folders_kept:
        print(f"kept {len(report.folders_kept)} folder(s) it made, as they hold other files: "
              + ", ".join(str(f) for f in report.folders_kept), file=sys.stderr)
    return 0


def cmd_sort(args) -> int:
    """``metastudio sort``: sort (see :data:`DESCRIPTION`), or undo a sort with ``--undo LOG``."""
    if args.undo:
        return _undo(args)
    missing = [flag for flag, value in (("--model", args.model), ("--support", args.support), ("--query", args.query),
                                        ("--out", args.out)) if not value]
    if missing:
        raise ValueError(f"metastudio sort needs {', '.join(missing)} (or --undo LOG to undo a sort)")
    if args.min_confidence is None:
        args.min_confidence = 0.0
    return _sort(args)


def add_sort_command(sub) -> None:
    """Add the ``sort`` subcommand to the subcommands ``sub``."""
    s = sub.add_parser("sort", help="sort photos into class folders from a few labelled examples (with an undo log)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(s)
    s.add_argument("--model", metavar="M", help="model file or shipped model name (photos for photos)")
    s.add_argument("--support", metavar="DIR", help="folder with one sub-folder of example images per class")
    s.add_argument("--query", metavar="DIR", nargs="+", action="append",
                   help="folders or image files to sort (repeatable)")
    s.add_argument("--out", metavar="DIR", help="folder to sort into (made if missing; may already hold class folders)")
    s.add_argument("--min-confidence", metavar="P", type=_confidence, default=None,
                   help="send a photo to the unsure folder when its best class has a probability below P: a fraction "
                        "from 0 to 1 (0.8) or a percentage (80%%); default 0, so only the photos the model itself "
                        "marks unsure go there")
    s.add_argument("--move", action="store_true",
                   help="move the photos instead of copying them (your examples are always copied)")
    s.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    s.add_argument("--csv", metavar="FILE", default=None,
                   help="write the labels CSV here instead of OUT/labels.csv (must not exist yet)")
    s.add_argument("--undo", metavar="LOG", default=None,
                   help="undo the sort that wrote the undo log LOG (OUT/.metastudio-sort-<date>-<time>.json)")
    s.add_argument("--hp", action="append", metavar="NAME=VALUE", help=HP_ADAPTATION_HELP)
    timeout_arg(s, "one step (adapting to the examples, or classifying the photos)")
    s.set_defaults(func=cmd_sort)
