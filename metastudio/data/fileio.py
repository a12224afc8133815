"""Writing files so that a crash or a full disk never leaves half a file (no torch here, so
light modules such as :mod:`metastudio.app.project` can use it without loading torch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from metastudio.errors import CheckpointError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path``; on failure remove ``tmp`` and raise
    :class:`CheckpointError` (the old file at ``path``, if any, is left as it was)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
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
