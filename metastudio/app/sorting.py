"""Sort photos into class folders: a plan, its preview, doing it with an undo log, and undoing it.

What the ``metastudio sort`` command and the app's "export as class folders" share (no Qt here).

1. :func:`plan_sort` decides where each file goes, touching nothing: a support image (a label the
   person gave) goes to ``OUT/<class folder>/`` as ``confirmed``; a query goes to its predicted
   class's folder as ``predicted`` when the model is sure of it, else to the folder for the unsure
   ones (:data:`UNSURE_FOLDER`, ``_unsure``) as ``unsure``: the model marked it unsure (not like
   any class, too small), or its best probability is below the minimum confidence asked for
   (:func:`parse_min_confidence`). A class name that is not a safe folder name gets one
   (:func:`safe_folder_name`); the unsure folder takes one more ``_`` in front for as long as a
   class folder (or a file in OUT) has its name, so it never collides with a class. A file name
   already taken in its folder gets ``-2``, ``-3``... before its extension: nothing is ever
   overwritten.
2. :func:`preview` says what the plan will do: the count per folder, the renamed classes and
   files, and the first few operations.
3. :func:`execute_sort` does it: support images are always copied; queries are copied, or moved
   with ``move=True`` (a hard link then removing the old name on the same device, so a rename
   that can never replace a file; copy, fsync and remove across devices). Before each batch of
   operations the undo log, ``OUT/.metastudio-sort-<YYYYMMDD-HHMMSS>.json``, is written
   (atomically, fsynced) with that batch marked ``planned``; the next write marks it ``done``,
   with the size and time of each file made (and the SHA-256 of each copy). So a process killed
   at any moment leaves a log that covers everything it did. A full disk or a refused permission
   stops at that file with a :class:`SortError` naming it; the copy being written is removed and
   the log is kept. The labels CSV (:func:`labels_csv`) is written last.
4. :func:`undo_sort` reads the log back (:func:`read_sort_log`, checked against
   :data:`LOG_SCHEMA`) and, newest first, puts every moved file back and removes every copy it
   made, then the folders it created when they are empty. It refuses, file by file with the
   reason, to touch a destination whose size or time (or, for a copy, content) changed since, a
   copy whose original is gone or changed (it may be the only one left), and a move whose
   original place holds another file; the log is then rewritten with only those, for another try.

The undo log's format, reading it back, undo and the file operations that never replace a file
are in :mod:`metastudio.app.sortlog`; their public names are here too. OUT (when it is new) is
made just before the log's first version, which names it: a process killed in between leaves
that empty folder, nothing else.

Progress (``progress(done, total)``) and cancel (``should_stop()``, asked after each file) hooks
let a GUI show a bar and a Cancel button; cancelling stops after the current file, the log intact.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metastudio.app.sortlog import (
    LOG_FORMAT, LOG_PREFIX, LOG_SCHEMA, LOG_VERSION, SortLogError, UndoReport, copy_file, move_file, read_sort_log,
    undo_sort, write_log,
)
from metastudio.data.fileio import atomic_write
from metastudio.errors import CheckpointError, MetaStudioError, os_reason

CONFIRMED, PREDICTED, UNSURE = "confirmed", "predicted", "unsure"
#: The folder of the unsure images (with more ``_`` in front while a class folder has the name).
UNSURE_FOLDER = "_unsure"
#: The labels CSV written into OUT unless another file is asked for (``labels-2.csv``... if taken).
CSV_NAME = "labels.csv"
Progress = Callable[[int, int], None]

_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10))}
_NOT_IN_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_MAX_NAME_BYTES = 200


class SortError(MetaStudioError):
    """Sorting stopped before the end (a full disk, a refused permission...). ``log_path`` is the
    undo log of what was done (None when nothing was), ``done`` and ``total`` count files."""

    def __init__(self, message: str, log_path: Path | None = None, done: int = 0, total: int = 0):
        super().__init__(message)
        self.log_path, self.done, self.total = log_path, done, total


# ------------------------------------------------------------------------------------------------
# Names


def parse_min_confidence(value: str | float) -> float:
    """The minimum confidence as a fraction in [0, 1]: ``0.8``, or a percentage ``"80%"``.
    A plain number above 1 is refused (``80`` is ambiguous: write ``80%``). Raises ValueError."""
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"the minimum confidence must be a fraction from 0 to 1 (0.8) or a percentage (80%), "
                         f"not '{value}'")
    if percent:
        if not 0 <= number <= 100:
            raise ValueError(f"the minimum confidence must be a percentage from 0% to 100%, not '{value}'")
        return number / 100
    if 1 < number <= 100:
        raise ValueError(f"the minimum confidence {value} is more than 1: a plain number is a fraction from 0 to 1; "
                         f"write {text}% for a percentage")
    if not 0 <= number <= 1:
        raise ValueError(f"the minimum confidence must be a fraction from 0 to 1 (0.8) or a percentage (80%), "
                         f"not '{value}'")
    return number


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def safe_folder_name(name: str) -> tuple[str, str]:
    """A folder name for the class ``name`` that works on Linux, macOS and Windows, and why it
    differs from ``name`` (``""`` when it is ``name``): characters no folder name may hold
    (``/ \\ : * ? " < > |`` and control characters) become ``_``; spaces and dots at the ends
    go (Windows drops them); an empty name, ``.`` or ``..`` becomes ``unnamed``; a leading ``.``
    (a hidden folder) becomes ``_``; a name Windows reserves (``CON``, ``NUL``, ``COM1``...)
    gets a ``_`` in front; one of more than 200 bytes is cut."""
    why = []
    bad = sorted(set(_NOT_IN_NAMES.findall(name)))
    folder = _NOT_IN_NAMES.sub("_", name)
    if bad:
        shown = ", ".join(f"'{c}'" if c.isprintable() else f"U+{ord(c):04X}" for c in bad)
        why.append(f"{shown} cannot be in a folder name")
    stripped = folder.strip(" ").rstrip(". ")
    if not stripped.strip("."):
        return "unnamed", f"'{name}' is not a folder name"
    if stripped != folder:
        why.append("a folder name cannot begin or end with a space, or end with a dot")
    folder = stripped
    if folder.startswith("."):
        folder = "_" + folder[1:]
        why.append("a name beginning with '.' would be a hidden folder")
    if folder.split(".")[0].rstrip(" ").upper() in _RESERVED:
        folder = "_" + folder
        why.append(f"'{folder[1:]}' is a reserved name on Windows")
    if len(folder.encode("utf-8")) > _MAX_NAME_BYTES:
        while len(folder.encode("utf-8")) > _MAX_NAME_BYTES:
            folder = folder[:-1]
        folder = folder.rstrip(". ") or "unnamed"
        why.append(f"it is longer than {_MAX_NAME_BYTES} bytes")
    return folder, "; ".join(why)


def class_folders(class_names: Sequence[str], taken: Iterable[str] = ()) -> tuple[dict[str, str], list[str]]:
    """``({class: folder name}, notes)``: a safe folder name per class (:func:`safe_folder_name`),
    none the same as another's or as one of ``taken`` (compared without capitals, as Windows and
    macOS compare names; ``-2``, ``-3``... is added), and a note for each class whose folder is
    not its name."""
    used = {t.casefold() for t in taken}
    folders, notes = {}, []
    for name in class_names:
        base, why = safe_folder_name(name)
        folder, n = base, 2
        while folder.casefold() in used:
            folder, n = f"{base}-{n}", n + 1
        if folder != base:
            why = "; ".join(filter(None, [why, f"another class or a file already has the name '{base}' (capitals aside)"]))
        used.add(folder.casefold())
        folders[name] = folder
        if folder != name:
            notes.append(f"class '{name}' goes to the folder '{folder}' ({why})")
    return folders, notes


def _entries(folder: Path) -> dict[str, bool]:
    """``{name without capitals: is a folder}`` of what ``folder`` holds (nothing if it is absent)."""
    try:
        with os.scandir(folder) as it:
            return {e.name.casefold(): e.is_dir() for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``... whichever is not in ``taken`` (names without capitals)."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 2
    while candidate.casefold() in taken:
        candidate, n = f"{stem}-{n}{suffix}", n + 1
    return candidate


# ------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class QueryPrediction:
    """A classified file: one probability per class (in the plan's class order) and why the model
    is not sure of it (``""`` for a confident prediction; see ``SessionResult.unsure``)."""

    path: Path
    probabilities: Sequence[float]
    unsure: str = ""


@dataclass
class SortItem:
    """Where one file goes. ``action`` is ``copy``, ``move`` or ``none`` (already in its folder);
    ``label`` is its class (``""`` for an unsure one), ``predicted`` the model's best class (``""``
    for a confirmed one), ``reason`` why it is unsure; ``renamed`` when its name was taken there."""

    source: Path
    destination: Path
    folder: str
    status: str
    action: str
    label: str = ""
    predicted: str = ""
    probabilities: tuple[float, ...] = ()
    reason: str = ""
    renamed: bool = False


@dataclass
class SortPlan:
    """What :func:`execute_sort` will do (see :func:`plan_sort`); ``skipped`` are files that are
    not sorted, with why."""

    out: Path
    move: bool
    min_confidence: float
    class_names: list[str]
    folders: dict[str, str]
    unsure_folder: str
    notes: list[str]
    items: list[SortItem]
    csv_path: Path
    log_path: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Counter]:
        """``{folder: Counter(status)}``, class folders in class order, the unsure folder last."""
        order = [*dict.fromkeys(self.folders.values()), self.unsure_folder]
        counts = {f: Counter() for f in order}
        for item in self.items:
            counts[item.folder][item.status] += 1
        return {f: c for f, c in counts.items() if c}

    def operations(self) -> list[SortItem]:
        """The items that copy or move a file (not those already in their folder)."""
        return [i for i in self.items if i.action != "none"]


class _Namer:
    """Picks each file's name in its folder of OUT, never one already there or already picked."""

    def __init__(self, out: Path):
        self.out = out
        self.taken: dict[str, set[str]] = {}

    def place(self, folder: str, source: Path) -> tuple[Path, bool]:
        taken = self.taken.setdefault(folder, set(_entries(self.out / folder)))
        name = _free_name(source.name, taken)
        taken.add(name.casefold())
        return self.out / folder / name, name != source.name


def _in_folder(source: Path, folder: Path) -> bool:
    try:
        return source.parent.resolve() == folder.resolve()
    except OSError:
        return False


def plan_sort(out: str | os.PathLike, class_names: Sequence[str],
              support: Mapping[str, Sequence[str | os.PathLike]] | Sequence[tuple[str, Sequence[str | os.PathLike]]],
              queries: Sequence[QueryPrediction], *, min_confidence: float = 0.0, move: bool = False,
              csv_path: str | os.PathLike | None = None, skipped: Sequence[tuple[Path, str]] = ()) -> SortPlan:
    """The plan to sort ``support`` (``{class: files}``, the person's labels) and ``queries``
    (their predictions over ``class_names``) into the folder ``out``; touches nothing.

    ``min_confidence`` (a fraction in [0, 1]) sends a query whose best probability is below it to
    the unsure folder. ``csv_path`` is the labels CSV (default ``OUT/labels.csv``, or
    ``labels-2.csv``... when taken); an existing file there is refused, as is an ``out`` that is a
    file. A file that is both a support image and a query is sorted once, as confirmed."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise MetaStudioError(f"the output folder '{out}' is a file, not a folder")
    names = [str(n) for n in class_names]
    if len(set(names)) != len(names) or not names:
        raise MetaStudioError(f"the classes must be named once each, got {names}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"the minimum confidence must be from 0 to 1, not {min_confidence}")
    support = list(support.items()) if isinstance(support, Mapping) else list(support)
    existing = _entries(out)
    taken = {name for name, is_dir in existing.items() if not is_dir}
    if csv_path is None:
        csv_file = out / _free_name(CSV_NAME, set(existing))
    else:
        csv_file = Path(csv_path).expanduser().resolve()
        if os.path.lexists(csv_file):
            raise MetaStudioError(f"the CSV file '{csv_file}' already exists: choose another name or move that file "
                                  "away (sorting never overwrites a file)")
    if csv_file.parent == out:
        taken.add(csv_file.name.casefold())
    every_class = names + [c for c, _ in support if c not in names]
    folders, notes = class_folders(every_class, taken)
    unsure_folder = UNSURE_FOLDER
    while unsure_folder.casefold() in taken | {f.casefold() for f in folders.values()}:
        unsure_folder = "_" + unsure_folder
    namer, seen, items = _Namer(out), set(), []

    def add(source, folder: str, status: str, action: str, **labels) -> None:
        source = Path(source).absolute()
        if _in_folder(source, out / folder):
            items.append(SortItem(source, source, folder, status, "none", **labels))
        else:
            destination, renamed = namer.place(folder, source)
            items.append(SortItem(source, destination, folder, status, action, renamed=renamed, **labels))

    for name, files in support:
        for file in files:
            if _key(file) not in seen:
                seen.add(_key(file))
                add(file, folders[name], CONFIRMED, "copy", label=name)
    for query in queries:
        if _key(query.path) in seen:
            continue
        seen.add(_key(query.path))
        probabilities = tuple(float(p) for p in query.probabilities)
        if len(probabilities) != len(names):
            raise MetaStudioError(f"'{query.path}' has {len(probabilities)} probabilities for {len(names)} classes")
        best = max(range(len(names)), key=probabilities.__getitem__)
        reason = query.unsure or (f"{_percent(probabilities[best])} sure, below the {_percent(min_confidence)} asked for"
                                  if probabilities[best] < min_confidence else "")
        action = "move" if move and not Path(query.path).is_symlink() else "copy"  # a link is copied, never moved
        labels = {"predicted": names[best], "probabilities": probabilities, "reason": reason}
        if reason:
            add(query.path, unsure_folder, UNSURE, action, **labels)
        else:
            add(query.path, folders[names[best]], PREDICTED, action, label=names[best], **labels)
    return SortPlan(out, move, min_confidence, names, folders, unsure_folder, notes, items, csv_file,
                    out / _free_name(f"{LOG_PREFIX}{_dt.datetime.now():%Y%m%d-%H%M%S}.json", set(existing)),
                    list(skipped))


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(path))


def support_from_folder(folder: str | os.PathLike) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """``([(class, [image files])], problems)`` of a support folder: one sub-folder of images per
    class, named as :func:`~metastudio.data.datasets.load_class_folders` names them (a folder
    that wraps the whole tree is not part of the name; nested folders give ``a/b``). ``problems``
    are the entries that can't be used, with why. A zip is refused: its images are not files that
    can be copied into the class folders."""
    from metastudio.data.datasets import TreeSource

    source = TreeSource(folder)
    if source.is_zip:
        raise MetaStudioError(f"the support set '{source.path}' is a zip: sorting copies the support images into the "
                              "class folders, so give it as a folder (unzip it first)")
    classes = [(name, [source.path / member for member in members]) for name, members in source.list_classes().items()]
    return classes, source.problems


def predictions_from_result(result: Any, queries: Iterable[tuple[str, str | os.PathLike]]) -> list[QueryPrediction]:
    """The :class:`QueryPrediction` of each of ``queries`` ((image id, file)) that a
    ``SessionResult`` (or its ``as_dict()``) has probabilities for, in that order."""
    data = result.as_dict() if hasattr(result, "as_dict") else result
    probabilities, unsure = data.get("probabilities") or {}, data.get("unsure") or {}
    return [QueryPrediction(Path(path), tuple(probabilities[i]), unsure.get(i, ""))
            for i, path in queries if i in probabilities]


# ------------------------------------------------------------------------------------------------
# The preview and the CSV


def _shown(plan: SortPlan, path: Path) -> str:
    """``path`` relative to OUT when it is inside (``cat/IMG_1.jpg``), else as it is."""
    try:
        return path.relative_to(plan.out).as_posix()
    except ValueError:
        return str(path)


def preview(plan: SortPlan, first: int = 8) -> list[str]:
    """The plan in a few lines: the count per folder (confirmed, predicted, unsure), the classes
    whose folder is not their name, the files renamed and left, and the first ``first`` operations."""
    ops = plan.operations()
    how = ("the queries moved, the support images copied" if plan.move
           else "copied; the originals stay where they are")
    lines = [f"sorting {len(plan.items)} files into {plan.out} ({how}):"]
    counts = plan.counts()
    width = max([len(f) + 1 for f in counts] + [8])
    for folder, count in counts.items():
        parts = ", ".join(f"{count[s]} {s}" for s in (CONFIRMED, PREDICTED, UNSURE) if count[s])
        lines.append(f"  {(folder + '/').ljust(width)} {sum(count.values()):>6}  ({parts})")
    unsure = [i for i in plan.items if i.status == UNSURE]
    if unsure:
        below = sum("asked for" in i.reason for i in unsure)
        why = [f"{below} below the minimum confidence of {_percent(plan.min_confidence)}"] if below else []
        why += [f"{n} {reason}" for reason, n in Counter(i.reason for i in unsure if "asked for" not in i.reason).items()]
        lines.append(f"'{plan.unsure_folder}/' holds the images the model is not sure of: {'; '.join(why)}")
    lines += plan.notes
    renamed = [i for i in plan.items if i.renamed]
    if renamed:
        lines.append(f"{len(renamed)} file(s) get a new name, as their name is taken in their folder, "
                     f"e.g. {renamed[0].source.name} -> {_shown(plan, renamed[0].destination)}")
    stay = len(plan.items) - len(ops)
    if stay:
        lines.append(f"{stay} file(s) are already in their folder and stay there")
    linked = sum(plan.move and i.status != CONFIRMED and i.action == "copy" for i in plan.items)
    if linked:
        lines.append(f"{linked} linked file(s) are copied, not moved")
    if plan.skipped:
        lines.append(f"{len(plan.skipped)} file(s) could not be read and stay where they are")
    if ops:
        lines.append(f"the first {min(first, len(ops))} of {len(ops)}:")
        lines += [f"  {i.action} {i.source} -> {_shown(plan, i.destination)}" for i in ops[:first]]
    lines += [f"labels: {plan.csv_path}", f"undo log: {plan.log_path}"]
    return lines


def labels_csv(plan: SortPlan) -> str:
    """The labels CSV of ``plan``: one row per file, with the columns ``file`` (where it is now,
    relative to OUT), ``original`` (where it came from), ``label`` (its class; empty for an unsure
    one), ``status`` (``confirmed``: a support image; ``predicted``; ``unsure``), ``predicted``
    (the model's best class; empty for a confirmed one), one column per class with its probability
    (empty for a confirmed one; a class named like a column above gets `` (probability)``) and
    ``unsure`` (why the model is not sure)."""
    fixed = ["file", "original", "label", "status", "predicted"]
    columns = [n if n not in fixed + ["unsure"] else f"{n} (probability)" for n in plan.class_names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*fixed, *columns, "unsure"])
    for i in plan.items:
        probabilities = [f"{p:.6f}" for p in i.probabilities] or [""] * len(columns)
        writer.writerow([_shown(plan, i.destination), str(i.source), i.label, i.status, i.predicted,
                         *probabilities, i.reason])
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Doing it, with the undo log


@dataclass
class SortReport:
    """What :func:`execute_sort` did: ``status`` ``done`` or ``cancelled``; ``done`` of ``total``
    operations (``copied``, ``moved``); ``vanished``: files gone since the plan (not sorted);
    ``csv_path`` is None when no CSV was written (cancelled)."""

    status: str
    done: int
    total: int
    copied: int
    moved: int
    log_path: Path
    csv_path: Path | None
    vanished: list[Path] = field(default_factory=list)


class _Journal:
    """The undo log being written (:func:`~metastudio.app.sortlog.write_log` each time)."""

    def __init__(self, plan: SortPlan):
        self.path = plan.log_path
        self.doc: dict[str, Any] = {"format": LOG_FORMAT, "version": LOG_VERSION,
                                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                    "out": str(plan.out), "mode": "move" if plan.move else "copy",
                                    "folders": [], "operations": [], "files": []}

    def write(self) -> None:
        write_log(self.path, self.doc)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, outermost first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _start(plan: SortPlan) -> _Journal:
    """Make OUT (and the undo log's first version, saying which folders were made)."""
    while os.path.lexists(plan.log_path):
        plan.log_path = plan.log_path.with_name(_free_name(plan.log_path.name, {plan.log_path.name.casefold()}))
    journal = _Journal(plan)
    made = _missing_folders(plan.out)
    try:
        for folder in made:
            os.mkdir(folder)
        journal.doc["folders"] = [str(f) for f in made]
        journal.write()
    except (OSError, CheckpointError) as error:
        raise SortError(f"could not start sorting into '{plan.out}': "
                        f"{os_reason(error) if isinstance(error, OSError) else error}; nothing was copied or moved") from error
    return journal


def _stopped(journal: _Journal, doing: str, error: BaseException, done: int, total: int) -> SortError:
    """The error for a sort that stopped while ``doing`` (``"copy 'a' to 'b'"``), the log written
    with what was done."""
    if isinstance(error, FileExistsError):
        reason = "a file of that name appeared there meanwhile (it was not overwritten)"
    else:
        reason = os_reason(error) if isinstance(error, OSError) else str(error)
    try:
        journal.write()
    except CheckpointError:
        pass  # the previous version of the log covers everything done (its last batch as planned)
    return SortError(f"could not {doing}: {reason}. Stopped after {done} of {total} files; nothing was lost, and "
                     f"the undo log '{journal.path}' can put back what was done", journal.path, done, total)


def _record(item: SortItem) -> dict[str, Any] | None:
    """The log's entry for ``item`` (state ``planned``), or None when its file is gone."""
    try:
        info = os.stat(item.source)
    except OSError:
        return None
    return {"op": item.action, "source": str(item.source), "destination": str(item.destination),
            "state": "planned", "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _perform(item: SortItem) -> dict[str, Any]:
    """Copy or move ``item``'s file; the ``after`` entry of its log record."""
    if item.action == "copy":
        digest = copy_file(item.source, item.destination)
        info = os.stat(item.destination)
        return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": digest}
    move_file(item.source, item.destination)
    info = os.stat(item.destination)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _prepare_batch(batch: Sequence[SortItem], journal: _Journal, report: SortReport,
                   planned: dict[Path, set[str]]) -> list:
    """Log ``batch`` as planned (with the folders it needs, made once the log is written);
    returns ``[(item, record)]`` of those whose file is still there. A destination taken since
    the plan gets the next name free there and in ``planned`` (``{folder: names}`` the plan
    uses). On failure the log's entries for the batch are taken back before the error goes on."""
    ready, folders = [], []
    for item in batch:
        record = _record(item)
        if record is None:
            report.vanished.append(item.source)
            continue
        if os.path.lexists(item.destination):  # appeared since the plan: the next free name
            taken = planned.setdefault(item.destination.parent, set())
            item.destination = item.destination.with_name(
                _free_name(item.destination.name, taken | set(_entries(item.destination.parent))))
            taken.add(item.destination.name.casefold())
            record["destination"], item.renamed = str(item.destination), True
        parent = str(item.destination.parent)
        if not os.path.isdir(parent) and parent not in journal.doc["folders"] and parent not in folders:
            folders.append(parent)
        ready.append((item, record))
    operations, known = len(journal.doc["operations"]), len(journal.doc["folders"])
    journal.doc["operations"] += [record for _, record in ready]
    journal.doc["folders"] += folders
    try:
        journal.write()
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
    except BaseException:
        del journal.doc["operations"][operations:]
        journal.doc["folders"][known:] = [f for f in folders if os.path.isdir(f)]  # those made are still logged
        raise
    return ready


def execute_sort(plan: SortPlan, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                 *, batch_size: int = 64) -> SortReport:
    """Copy and move the files of ``plan``, writing the undo log before each batch (see the
    module's text), then the labels CSV. ``progress(done, total)`` follows each file;
    ``should_stop()`` is asked after each: True stops there (``status`` ``cancelled``, no CSV).
    Raises :class:`SortError` when a file cannot be copied or moved (the log kept)."""
    ops = plan.operations()
    total = len(ops)
    journal = _start(plan)
    report = SortReport("done", 0, total, 0, 0, journal.path, None)
    planned: dict[Path, set[str]] = {}
    for item in ops:
        planned.setdefault(item.destination.parent, set()).add(item.destination.name.casefold())
    if progress:
        progress(0, total)
    start = 0
    while start < len(ops) and report.status == "done":
        if should_stop and should_stop():
            report.status = "cancelled"
            break
        size = max(batch_size, report.done // 4)  # growing batches: the log's rewrites stay linear
        try:
            ready = _prepare_batch(ops[start:start + size], journal, report, planned)
        except (OSError, CheckpointError) as error:
            if isinstance(error, CheckpointError) and not isinstance(error.__cause__, OSError):
                raise _stopped(journal, "go on", error, report.done, total) from error
            cause = error.__cause__ if isinstance(error, CheckpointError) else error
            raise _stopped(journal, f"write the undo log or make the folders in '{plan.out}'", cause,
                           report.done, total) from error
        start += size
        for n, (item, record) in enumerate(ready):
            try:
                record["after"] = _perform(item)
            except OSError as error:
                _drop_unstarted(journal, [r for _, r in ready[n + 1:]])
                raise _stopped(journal, f"{item.action} '{item.source}' to '{item.destination}'", error,
                               report.done, total) from error
            record["state"] = "done"
            report.done += 1
            report.copied += item.action == "copy"
            report.moved += item.action == "move"
            if progress:
                progress(report.done, total)
            if should_stop and should_stop():
                _drop_unstarted(journal, [r for _, r in ready[n + 1:]])
                report.status = "cancelled"
                break
    if report.status == "done":
        _write_csv(plan, journal, report)
    try:
        journal.write()
    except CheckpointError as error:
        raise SortError(f"the files were sorted, but the undo log could not be brought up to date: {error}; "
                        "it can still put everything back", journal.path, report.done, total) from error
    return report


def _drop_unstarted(journal: _Journal, records: Sequence[dict]) -> None:
    gone = {id(r) for r in records}
    journal.doc["operations"] = [r for r in journal.doc["operations"] if id(r) not in gone]


def _write_csv(plan: SortPlan, journal: _Journal, report: SortReport) -> None:
    """Write the labels CSV (logged first, with its size and SHA-256, so that undo removes it)."""
    data = labels_csv(plan).encode("utf-8")
    if os.path.lexists(plan.csv_path):
        raise SortError(f"every file was sorted, but '{plan.csv_path}' appeared meanwhile, so the labels CSV was "
                        "not written (it would have replaced that file)", journal.path, report.done, report.total)
    journal.doc["files"].append({"path": str(plan.csv_path), "size": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()})
    try:
        journal.write()
        atomic_write(plan.csv_path, lambda tmp: tmp.write_bytes(data))
    except CheckpointError as error:
        raise SortError(f"every file was sorted, but the labels CSV could not be written: {error}",
                        journal.path, report.done, report.total) from error
    report.csv_path = plan.csv_path


__all__ = [
    "CONFIRMED", "CSV_NAME", "LOG_PREFIX", "LOG_SCHEMA", "PREDICTED", "UNSURE", "UNSURE_FOLDER", "QueryPrediction",
    "SortError", "SortItem", "SortLogError", "SortPlan", "SortReport", "UndoReport", "class_folders", "copy_file",
    "execute_sort", "labels_csv", "move_file", "parse_min_confidence", "plan_sort", "predictions_from_result",
    "preview", "read_sort_log", "safe_folder_name", "support_from_folder", "undo_sort",
]
