"""Writing files so that a crash or a full disk never leaves half a file (no torch here, so
light modules such as :mod:`metastudio.app.project` can use it without loading torch).

:func:`atomic_write` writes beside the target, to a hidden temporary file named by
:func:`temp_path`: ``.<name>.tmp<pid>-<host>``, where ``<pid>`` is the writing process and
``<host>`` is :func:`host_tag`. A process killed while writing leaves that file behind; the
name says whose it was, so a later process can tell (:func:`temp_owner`) whether the writer
is gone and the file may be removed (:mod:`metastudio.app.project.cleanup` does so).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from metastudio.errors import CheckpointError

# ``.<name>.tmp<pid>`` (written before the host was part of the name) or ``.<name>.tmp<pid>-<host>``.
_TEMP_SUFFIX = re.compile(r"\.tmp([1-9][0-9]{0,9})(?:-([0-9a-f]{8}))?")


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """8 hex digits naming this computer (from its host name), so that a file left in a folder
    that several computers share is only ever judged by the computer that wrote it."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """The hidden temporary file, beside ``path``, that this process writes ``path`` to."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{host_tag()}")


def temp_owner(name: str, target: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of the process that wrote ``name``, when ``name`` is one of
    :func:`atomic_write`'s temporary files for the file named ``target``; else ``None``.
    ``host`` is ``None`` for the older names that did not record it."""
    prefix = f".{target}"
    if not name.startswith(prefix):
        return None
    match = _TEMP_SUFFIX.fullmatch(name, len(prefix))
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path``; on failure remove ``tmp`` and raise
    :class:`CheckpointError` (the old file at ``path``, if any, is left as it was)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers create 0600 files; use the usual mode
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise CheckpointError(f"could not write '{path}': {e.strerror or e}; any previous file there is unchanged") from e
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a folder's entries (a rename, a new file) durable: POSIX only, best effort."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (our own counts as running). When unsure, ``True``:
    what it may still be using is then kept."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        return _windows_pid_running(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    except OverflowError:
        return False  # no process can have such a pid
    except OSError:
        return True
    return True


def _windows_pid_running(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = getattr(ctypes, "windll").kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
