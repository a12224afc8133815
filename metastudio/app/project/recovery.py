"""Crash recovery: the autosave of a running app session, and those that crashed sessions left.

:class:`Recovery` autosaves the open project to :func:`recovery_dir` (one file per running app
session, plus a small JSON sidecar). On a clean exit the session discards its autosave; at
start-up :meth:`Recovery.find` lists the autosaves of sessions that are no longer running,
i.e. that crashed, so the app can offer to restore them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastudio.app.project.manifest import now
from metastudio.app.project.model import PROJECT_SUFFIX, Project
from metastudio.data import jsondoc
from metastudio.data.fileio import atomic_write, pid_running
from metastudio.errors import CheckpointError, ProjectError


def recovery_dir() -> Path:
    """Where autosaves go (``METASTUDIO_RECOVERY_DIR`` overrides)."""
    env = os.environ.get("METASTUDIO_RECOVERY_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("metastudio")) / "recovery"


@dataclass
class RecoveryInfo:
    """An autosave left behind by a session that is no longer running."""

    path: Path
    project_path: str | None
    saved_at: str
    pid: int


_AUTOSAVE = re.compile(r"autosave-(\d+)-([0-9a-f]{8})\.metastudio")


class Recovery:
    """The autosave of one running app session.

    Its files are ``autosave-<pid>-<8 hex>.metastudio`` (the project) and a sidecar
    ``autosave-<pid>-<8 hex>.json`` (``{"pid", "project_path", "saved_at"}``) in
    ``directory`` (default :func:`recovery_dir`). Nothing is written before :meth:`write`.
    """

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else recovery_dir()
        self.pid = os.getpid()
        self.path = self.directory / f"autosave-{self.pid}-{secrets.token_hex(4)}{PROJECT_SUFFIX}"
        self.sidecar = self.path.with_suffix(".json")

    def write(self, project: Project) -> None:
        """Autosave ``project`` (``project.path`` is unchanged); :class:`ProjectError` on failure."""
        project.write(self.path)
        info = {
            "pid": self.pid,
            "project_path": str(project.path) if project.path is not None else None,
            "saved_at": now(),
        }
        data = json.dumps(info, indent=2, ensure_ascii=False).encode("utf-8")
        try:
            atomic_write(self.sidecar, lambda tmp: tmp.write_bytes(data))
        except CheckpointError as error:
            raise ProjectError(str(error)) from error.__cause__

    def discard(self) -> None:
        """Delete this session's autosave (on a clean exit)."""
        for path in (self.path, self.sidecar):
            path.unlink(missing_ok=True)

    @staticmethod
    def find(directory: Path | None = None) -> list[RecoveryInfo]:
        """Autosaves of sessions that are no longer running (crashed), newest first."""
        folder = Path(directory) if directory is not None else recovery_dir()
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        found = [entry for name in names if (entry := _crashed_autosave(folder / name)) is not None]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [info for _, info in found]

    @staticmethod
    def remove(info: RecoveryInfo) -> None:
        """Delete an autosave found by :meth:`find` (and its sidecar)."""
        Path(info.path).unlink(missing_ok=True)
        Path(info.path).with_suffix(".json").unlink(missing_ok=True)


def _crashed_autosave(path: Path) -> tuple[float, RecoveryInfo] | None:
    """``(when it was saved, its info)`` for the autosave ``path`` of a session that is no longer
    running; ``None`` for another file, or the autosave of a running session. Its sidecar may
    be missing or damaged: the pid in the name and the file's time stand in."""
    match = _AUTOSAVE.fullmatch(path.name)
    if not match or not path.is_file():
        return None
    try:
        modified = path.stat().st_mtime
    except OSError:
        return None
    pid = int(match.group(1))
    project_path: str | None = None
    saved_at = _dt.datetime.fromtimestamp(modified, _dt.timezone.utc).isoformat(timespec="seconds")
    side = _read_sidecar(path.with_suffix(".json"))
    if side is not None:
        pid = side.get("pid", pid)
        project_path = side.get("project_path")
        saved_at = side.get("saved_at", saved_at)
    if pid_running(pid):
        return None
    return _timestamp(saved_at, modified), RecoveryInfo(path, project_path, saved_at, pid)


#: What an autosave's sidecar must look like (JSON Schema, draft 2020-12).
SIDECAR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "pid": {"type": "integer", "minimum": 0, "maximum": 2**32},
        "project_path": {"type": ["string", "null"], "maxLength": 32_767},
        "saved_at": {"type": "string", "maxLength": 100},
    },
}
_MAX_SIDECAR_BYTES = 1 << 20


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar ``path`` when it can be read and fits :data:`SIDECAR_SCHEMA`; ``None`` when it
    is missing, damaged or does not fit (the autosave itself can still be restored without it)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_SIDECAR_BYTES + 1)
    except OSError:
        return None
    words = jsondoc.Words(ProjectError, document=f"the autosave's sidecar '{path}'")
    try:
        return jsondoc.read_document(data, SIDECAR_SCHEMA, words, max_text=_MAX_SIDECAR_BYTES)
    except ProjectError:
        return None


def _timestamp(iso: str, fallback: float) -> float:
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return fallback
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()
