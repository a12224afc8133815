"""The undo log of a sort into class folders (see :mod:`metastudio.app.sorting`): its format, how
it is written and read back, and :func:`undo_sort`; and the file operations that never replace a
file (:func:`copy_file`, :func:`move_file`).

The log is a JSON document (:data:`LOG_SCHEMA`)::

    {"format": "metastudio-sort-log", "version": 1, "created": "2026-12-04T10:15:00+00:00",
     "out": "/abs/OUT", "mode": "copy" | "move",
     "folders": ["/abs/OUT", "/abs/OUT/cat", ...],          # made by the sort, in that order
     "operations": [{"op": "copy" | "move", "source": "/abs/...", "destination": "/abs/OUT/...",
                     "state": "planned" | "done",
                     "size": 123, "mtime_ns": 1700000000000000000,  # the source, before
                     "after": {"size": 123, "mtime_ns": ..., "sha256": "..."}}, ...],  # once done
     "files": [{"path": "/abs/OUT/labels.csv", "size": 456, "sha256": "..."}]}   # written by it

Each operation is logged (``planned``) before it is done, so that after a crash the log covers it:
undoing a ``planned`` one finds out how far it got (nothing yet, a partial copy, a hard link
made but the old name not yet removed) and undoes only that.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metastudio.data import jsondoc
from metastudio.data.fileio import atomic_write, fsync_folder, host_tag, pid_running, temp_owner
from metastudio.errors import MetaStudioError, os_reason

LOG_PREFIX = ".metastudio-sort-"
LOG_FORMAT, LOG_VERSION = "metastudio-sort-log", 1
#: The longest undo log read back (bytes): some 500,000 files.
MAX_LOG_BYTES = 256_000_000
#: How far a file's time may be from the one logged before it was moved (the copy across devices
#: to a file system that keeps times coarsely, FAT's 2 s).
_TIME_SLACK_NS = 2_000_000_000
_CHUNK = 1 << 20


class SortLogError(MetaStudioError):
    """An undo log cannot be read or does not fit :data:`LOG_SCHEMA` (the message names the file and field)."""


_PATH = {"type": "string", "minLength": 1, "maxLength": 4096}
_SIZE = {"type": "integer", "minimum": 0}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "a SHA-256 of 64 hex digits"}
_OPERATION = {
    "type": "object",
    "required": ["op", "source", "destination", "state", "size", "mtime_ns"],
    "properties": {
        "op": {"enum": ["copy", "move"]},
        "source": _PATH,
        "destination": _PATH,
        "state": {"enum": ["planned", "done"]},
        "size": _SIZE,
        "mtime_ns": {"type": "integer"},
        "after": {"type": "object", "required": ["size", "mtime_ns"],
                  "properties": {"size": _SIZE, "mtime_ns": {"type": "integer"}, "sha256": _SHA256}},
    },
    "allOf": [
        {"if": {"required": ["state"], "properties": {"state": {"const": "done"}}}, "then": {"required": ["after"]}},
        {"if": {"required": ["op", "state"], "properties": {"op": {"const": "copy"}, "state": {"const": "done"}}},
         "then": {"properties": {"after": {"required": ["sha256"]}}}},
    ],
}
#: What an undo log must look like (JSON Schema, draft 2020-12). Keys it does not name are
#: ignored, as in MetaStudio's other documents, so that a later version may add some.
LOG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "MetaStudio sort undo log",
    "type": "object",
    "required": ["format", "version", "created", "out", "mode", "folders", "operations", "files"],
    "properties": {
        "format": {"const": LOG_FORMAT},
        "version": {"const": LOG_VERSION},
        "created": {"type": "string", "maxLength": 100},
        "out": _PATH,
        "mode": {"enum": ["copy", "move"]},
        "folders": {"type": "array", "items": _PATH},
        "operations": {"type": "array", "items": _OPERATION},
        "files": {"type": "array", "items": {"type": "object", "required": ["path", "size", "sha256"],
                                             "properties": {"path": _PATH, "size": _SIZE, "sha256": _SHA256}}},
    },
}


# ------------------------------------------------------------------------------------------------
# Copying and moving files, never replacing one


def copy_file(source: Path, destination: Path, durable: bool = False) -> str:
    """Copy ``source`` to ``destination``, which must not exist (it is created exclusively), with
    the source's modification time; with ``durable`` the copy is on disk (fsync) when this
    returns. Returns the SHA-256 of the bytes. On failure the partial copy is removed."""
    digest = hashlib.sha256()
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            if durable:
                os.fsync(writer.fileno())
        info = os.stat(source)
        os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
    except BaseException:
        try:
            os.unlink(destination)
        except OSError:
            pass
        raise
    return digest.hexdigest()


_NO_HARD_LINKS = {errno.EPERM, errno.EMLINK, errno.ENOSYS, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1)}


def move_file(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination`` without ever replacing a file there: on one device a
    hard link and then the old name removed (a rename after a check where the file system has no
    hard links); across devices a durable copy (:func:`copy_file`), then the source removed.
    When the source cannot be removed (a read-only folder) the new name is taken back and the
    error goes on: the file is then where it was. (Symbolic links are copied, never moved.)"""
    try:
        os.link(source, destination)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno == errno.EXDEV:
            copy_file(source, destination, durable=True)
            fsync_folder(destination.parent)
        elif error.errno in _NO_HARD_LINKS:
            if os.path.lexists(destination):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination)) from None
            os.rename(source, destination)
            return
        else:
            raise
    try:
        os.unlink(source)
    except OSError:
        try:
            os.unlink(destination)
        except OSError:
            pass  # the log has it as planned: undo removes the second name
        raise


def write_log(path: Path, doc: dict[str, Any]) -> None:
    """Replace the log at ``path`` by ``doc``, atomically and fsynced (CheckpointError on failure:
    the previous version is then unchanged)."""
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)
    fsync_folder(path.parent)


# ------------------------------------------------------------------------------------------------
# Reading the log back


def _check_kind(words: jsondoc.Words) -> Callable[[Any], None]:
    def check(doc: Any) -> None:
        if not isinstance(doc, dict):
            return  # the schema says what it must be
        if "format" in doc and doc["format"] != LOG_FORMAT:
            raise words.say(f"it is not a MetaStudio sort log (its field 'format' is {jsondoc.describe(doc['format'])}, "
                            f"not '{LOG_FORMAT}')")
        version = doc.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > LOG_VERSION:
            raise words.say(f"it was written by a newer MetaStudio (log version {version}; this one reads version "
                            f"{LOG_VERSION}): undo with that version")

    return check


def _inside(path: str, folder: Path) -> bool:
    return folder in Path(os.path.normpath(path)).parents


def _check_paths(doc: dict[str, Any], words: jsondoc.Words) -> None:
    """Every path absolute; every destination inside ``out``; every folder ``out``, inside it or above it."""
    def absolute(where: list, value: str) -> None:
        if not os.path.isabs(value):
            raise words.fail(where, f"must be an absolute path, not {jsondoc.describe(value)}")

    absolute(["out"], doc["out"])
    out = Path(os.path.normpath(doc["out"]))
    for i, op in enumerate(doc["operations"]):
        absolute(["operations", i, "source"], op["source"])
        absolute(["operations", i, "destination"], op["destination"])
        if not _inside(op["destination"], out):
            raise words.fail(["operations", i, "destination"], f"must be inside the output folder '{out}', "
                             f"not {jsondoc.describe(op['destination'])}")
    for i, folder in enumerate(doc["folders"]):
        absolute(["folders", i], folder)
        normal = Path(os.path.normpath(folder))
        if not (normal == out or out in normal.parents or normal in out.parents):
            raise words.fail(["folders", i], f"must be the output folder '{out}', inside it or above it, "
                             f"not {jsondoc.describe(folder)}")
    for i, entry in enumerate(doc["files"]):
        absolute(["files", i, "path"], entry["path"])


def read_sort_log(path: str | os.PathLike) -> dict[str, Any]:
    """The undo log ``path``, checked against :data:`LOG_SCHEMA` (paths absolute, destinations
    inside its output folder); a :class:`SortLogError` naming the file and the field otherwise."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_LOG_BYTES + 1)
    except FileNotFoundError:
        raise SortLogError(f"undo log '{path}' does not exist") from None
    except OSError as error:
        raise SortLogError(f"undo log '{path}' cannot be read: {os_reason(error)}") from None
    words = jsondoc.Words(SortLogError, where=f"undo log '{path}'", document="the log", field="field")
    doc = jsondoc.read_document(data, LOG_SCHEMA, words, check=_check_kind(words), max_text=MAX_LOG_BYTES)
    _check_paths(doc, words)
    return doc


# ------------------------------------------------------------------------------------------------
# Undo


@dataclass
class UndoReport:
    """What :func:`undo_sort` did: ``restored`` files moved back, ``removed`` copies (and files
    the sort wrote) deleted, ``untouched`` operations that had nothing left to undo; ``refused``
    ``(file, why)`` left as they are; the folders removed and those kept (not empty). ``log_kept``:
    the log was rewritten with only what was refused (or, when ``status`` is ``cancelled``, left)."""

    log_path: Path
    status: str = "done"
    restored: int = 0
    removed: int = 0
    untouched: int = 0
    refused: list[tuple[Path, str]] = field(default_factory=list)
    folders_removed: list[Path] = field(default_factory=list)
    folders_kept: list[Path] = field(default_factory=list)
    log_kept: bool = False


class _Refused(Exception):
    """One operation that undo leaves as it is, and why (in plain words)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_prefix(part: Path, whole: Path) -> bool:
    """Whether the bytes of ``part`` are the beginning of (or all of) those of ``whole``."""
    try:
        if os.stat(part).st_size > os.stat(whole).st_size:
            return False
        with open(part, "rb") as a, open(whole, "rb") as b:
            while chunk := a.read(_CHUNK):
                if b.read(len(chunk)) != chunk:
                    return False
        return True
    except OSError:
        return False


def _as_logged(path: Path, op: dict[str, Any]) -> bool:
    """Whether ``path`` has the size and time the log gives the file made by ``op``."""
    info = os.stat(path)
    if op["state"] == "done":
        return (info.st_size, info.st_mtime_ns) == (op["after"]["size"], op["after"]["mtime_ns"])
    return info.st_size == op["size"] and abs(info.st_mtime_ns - op["mtime_ns"]) <= _TIME_SLACK_NS


def _undo_copy(op: dict[str, Any], source: Path, destination: Path) -> str:
    try:
        original = os.stat(source)
    except FileNotFoundError:
        raise _Refused(f"the original '{source}' is gone, so the copy '{destination}' may be the only one left: "
                       "kept") from None
    if (original.st_size, original.st_mtime_ns) != (op["size"], op["mtime_ns"]):
        raise _Refused(f"the original '{source}' changed since it was copied, so the copy '{destination}' is kept")
    if op["state"] == "done":
        if not _as_logged(destination, op) or _sha256(destination) != op["after"]["sha256"]:
            raise _Refused(f"'{destination}' changed since it was copied there (its size, time or content is not "
                           "what the undo log says): kept")
    elif not _is_prefix(destination, source):  # a copy cut short is the beginning of its original
        raise _Refused(f"'{destination}' is not a copy of '{source}' (the copy was never finished, and another file "
                       "is there): kept")
    os.unlink(destination)
    return "removed"


def _undo_move(op: dict[str, Any], source: Path, destination: Path) -> str:
    if os.path.lexists(source):
        if os.path.samefile(source, destination):  # linked, the old name not yet removed
            os.unlink(destination)
            return "restored"
        if op["state"] == "planned" and _is_prefix(destination, source):  # a copy across devices cut short
            os.unlink(destination)
            return "restored"
        if _as_logged(destination, op) and _is_prefix(source, destination):  # an undo's copy back cut short
            os.unlink(source)
        else:
            raise _Refused(f"another file is at '{source}' now, so '{destination}' stays where it is")
    elif not _as_logged(destination, op):
        raise _Refused(f"'{destination}' changed since it was moved there (its size or time is not what the undo "
                       "log says), so it stays where it is")
    source.parent.mkdir(parents=True, exist_ok=True)
    move_file(destination, source)
    return "restored"


def _undo_one(op: dict[str, Any]) -> str:
    """Undo one logged operation: ``restored``, ``removed`` or ``untouched``; raises _Refused."""
    source, destination = Path(op["source"]), Path(op["destination"])
    if not os.path.lexists(destination):
        if op["op"] == "move" and op["state"] == "done" and not os.path.lexists(source):
            raise _Refused(f"'{destination}' is gone, so it cannot be put back at '{source}'")
        return "untouched"  # never made, or already undone
    if op["op"] == "copy":
        return _undo_copy(op, source, destination)
    return _undo_move(op, source, destination)


def _undo_file(entry: dict[str, Any]) -> str:
    path = Path(entry["path"])
    if not os.path.lexists(path):
        return "untouched"
    if os.stat(path).st_size != entry["size"] or _sha256(path) != entry["sha256"]:
        raise _Refused(f"'{path}' changed since the sort wrote it: kept")
    os.unlink(path)
    return "removed"


def _remove_stale_temps(target: Path) -> None:
    """Remove the temporary files that a process killed while writing ``target`` left beside it
    (:func:`~metastudio.data.fileio.atomic_write`'s, named for their writer, this computer's only)."""
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        owner = temp_owner(name, target.name)
        if owner is not None and owner[1] == host_tag() and not pid_running(owner[0]):
            try:
                os.unlink(target.parent / name)
            except OSError:
                pass


def undo_sort(log_path: str | os.PathLike, progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> UndoReport:
    """Undo the sort that the undo log ``log_path`` records, newest operation first: move every
    moved file back, remove every copy and file it made (each refused, with why, when it changed
    since), then remove the folders it made that are empty. Afterwards the log is deleted, or,
    when something was refused, rewritten with only that (so the same call can try it again).
    ``progress(done, total)`` follows each file; ``should_stop()`` True stops after the current
    one (the log left as it was: undoing again carries on). Raises :class:`SortLogError` for a
    log that cannot be read or used."""
    log_path = Path(log_path).expanduser()
    doc = read_sort_log(log_path)
    report = UndoReport(log_path)
    steps = [(_undo_one, op) for op in reversed(doc["operations"])] + [(_undo_file, f) for f in doc["files"]]
    left_ops, left_files = [], []
    for n, (undo, entry) in enumerate(steps):
        if should_stop and should_stop():
            report.status, report.log_kept = "cancelled", True
            return report
        target = Path(entry.get("destination") or entry["path"])
        try:
            outcome = undo(entry)
            setattr(report, outcome, getattr(report, outcome) + 1)
        except (_Refused, OSError) as error:
            why = str(error) if isinstance(error, _Refused) else f"'{target}' could not be put back: {os_reason(error)}"
            report.refused.append((target, why))
            (left_ops if undo is _undo_one else left_files).append(entry)
        if progress:
            progress(n + 1, len(steps))
    for target in [log_path, *(Path(f["path"]) for f in doc["files"])]:
        _remove_stale_temps(target)
    if report.refused:
        doc["operations"], doc["files"] = left_ops[::-1], left_files
    else:
        log_path.unlink(missing_ok=True)
    kept = []
    for folder in map(Path, reversed(doc["folders"])):
        try:
            folder.rmdir()
            report.folders_removed.append(folder)
        except FileNotFoundError:
            pass
        except OSError:  # holds something: files of the person's, or refused ones
            report.folders_kept.append(folder)
            kept.append(str(folder))
    if report.refused:
        doc["folders"] = kept[::-1]
        write_log(log_path, doc)
        report.log_kept = True
    return report
