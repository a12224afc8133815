"""Removing what processes that were killed or crashed left behind, and only that.

Two kinds of leftovers, both of which can be hundreds of megabytes:

* the hidden temporary file beside a project that a save was writing when its process died
  (``.<name>.tmp<pid>-<host>``, named by :func:`metastudio.data.fileio.temp_path`).
  :func:`remove_stale_temps` removes those of one project file; opening and saving a project
  call it;
* working folders of open projects in the temporary folder. :func:`make_workdir` makes them
  ``metastudio-project-<pid>-<8 random characters>`` holding a small marker file
  (:data:`MARKER`: the pid and :func:`~metastudio.data.fileio.host_tag` of its process).
  :func:`remove_abandoned_workdirs` removes those whose process is gone; the first working
  folder a process makes triggers it (:func:`sweep_once`).

Something is removed only when it is provably ours and abandoned: its name has our exact
form, it is a plain file or folder (never a symbolic link, never followed) of this user, it
was written on this computer, and no process with its pid is running. When in doubt, it is
kept. (An older name without the host, ``.<name>.tmp<pid>``, must also be an hour old.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from metastudio.data.fileio import host_tag, pid_running, temp_owner

WORKDIR_PREFIX = "metastudio-project-"
#: The marker file in a working folder: ``{"pid": ..., "host": ...}`` of the process that made it.
MARKER = ".metastudio-workdir"
#: How old a temporary file of the older naming (no host in its name) must be to be removed.
LEGACY_TEMP_AGE_S = 3600.0

# tempfile.mkdtemp adds 8 characters of this alphabet to the prefix.
_WORKDIR_NAME = re.compile(rf"{re.escape(WORKDIR_PREFIX)}([1-9][0-9]{{0,9}})-[a-z0-9_]{{8}}")
_MAX_MARKER_BYTES = 4096

_swept = False
_sweep_lock = threading.Lock()


# ----------------------------------------------------------------------------------------------
# Working folders


def make_workdir(parent: Path | None = None) -> Path:
    """A fresh, empty working folder of this process (in ``parent``, default the temporary
    folder), marked as ours; the first call of a process first removes abandoned ones."""
    sweep_once()
    folder = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=parent))
    data = json.dumps({"pid": os.getpid(), "host": host_tag()}).encode("ascii")
    try:
        fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def sweep_once() -> None:
    """:func:`remove_abandoned_workdirs` in the temporary folder, once per process."""
    global _swept
    with _sweep_lock:
        if _swept:
            return
        _swept = True
    remove_abandoned_workdirs()


def _names_in(folder: Path) -> list[str]:
    """The names in ``folder`` (none when it can't be listed: clean-up never raises)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def remove_abandoned_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove the working folders in ``parent`` (default: the temporary folder) that processes
    now gone made (see the module's documentation); returns those removed."""
    folder = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed = []
    for name in _names_in(folder):
        match = _WORKDIR_NAME.fullmatch(name)
        path = folder / name
        if match is None or not _abandoned_workdir(path, int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)  # removes links, never what they point to
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def _abandoned_workdir(path: Path, pid: int) -> bool:
    """Whether ``path`` is a folder of ours whose marker names ``pid`` on this computer, and no
    process ``pid`` is running."""
    try:
        if not _ours(os.lstat(path), stat.S_ISDIR):
            return False
        marker = _read_marker(path / MARKER)
    except OSError:
        return False
    if not isinstance(marker, dict) or marker.get("pid") != pid or marker.get("host") != host_tag():
        return False
    return not pid_running(pid)


def _read_marker(path: Path) -> object:
    """The JSON in a working folder's marker file (``None`` when it is not a small plain file)."""
    info = os.lstat(path)
    if not _ours(info, stat.S_ISREG) or info.st_size > _MAX_MARKER_BYTES:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        data = os.read(fd, _MAX_MARKER_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return json.loads(data.decode("ascii"))
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# Temporary files of saves


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files beside the file ``target`` that saves of it left when their
    process died (see the module's documentation); returns those removed. Never raises."""
    folder = target.parent
    removed = []
    for name in _names_in(folder):
        owner = temp_owner(name, target.name)
        if owner is None:
            continue
        path = folder / name
        try:
            if _stale_temp(os.lstat(path), *owner):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _stale_temp(info: os.stat_result, pid: int, host: str | None) -> bool:
    if not _ours(info, stat.S_ISREG):
        return False
    if host is None:
        if time.time() - info.st_mtime < LEGACY_TEMP_AGE_S:
            return False
    elif host != host_tag():
        return False
    return not pid_running(pid)


# ----------------------------------------------------------------------------------------------
# Processes


def _ours(info: os.stat_result, kind) -> bool:
    """Whether ``info`` (an ``lstat``) is of the ``kind`` (``stat.S_ISDIR``...) and this user's."""
    getuid = getattr(os, "getuid", None)
    return kind(info.st_mode) and (getuid is None or info.st_uid == getuid())
