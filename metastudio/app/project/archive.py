"""The ``.metastudio`` file: one zip archive, written atomically and unpacked safely.

The archive holds ``manifest.json`` (deflated; :mod:`~metastudio.app.project.manifest`),
``images/<file>`` (stored: images are already compressed), one per referenced file, and
``models/<name>`` (stored), one per name in the manifest's ``"models"``.

Opening a file extracts only the members the manifest names, after checking every name
(``images/`` names must look like ``0123456789abcdef.png``, model names are plain safe base
names ending ``.safetensors``), so a crafted archive cannot write outside the working folder.
An image the manifest names but the archive lacks (or holds damaged: its content does not
match the digest its name promises) is left out and reported in ``Project.problems``; the rest
of the project still opens.

Saving writes a complete archive to a temporary file next to the target, flushes it to disk
and then renames it over the target, so a crash or a full disk never leaves a half-written
project and the previous file survives.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from metastudio.app.project.manifest import MANIFEST, ParsedManifest, build_project, manifest_files, parse_manifest
from metastudio.app.project.model import IMAGES, MODELS, Project, part_path
from metastudio.data.fileio import atomic_write
from metastudio.errors import CheckpointError, ProjectError, message_of, os_reason

_MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20
# What reading a damaged or unsupported zip member raises (OSError: the archive's disk).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, NotImplementedError, OSError)


# ----------------------------------------------------------------------------------------------
# Saving


def write_project(project: Project, path: Path) -> None:
    """Write ``project`` to ``path`` atomically (see :meth:`Project.write`)."""
    manifest = project.to_manifest()
    try:
        parse_manifest(manifest)  # never write a file that could not be opened again
    except ProjectError as error:
        raise ProjectError(f"cannot save the project to '{path}': {error}") from None
    images_dir, models_dir = project.workdir / IMAGES, project.workdir / MODELS
    images = manifest_files(manifest)
    for file in images:
        if not (images_dir / file).is_file():
            raise ProjectError(
                f"cannot save the project to '{path}': the copy of image '{file}' is missing "
                f"from the project's working folder {images_dir}"
            )
    members = [(f"{IMAGES}/{f}", images_dir / f) for f in images]
    members += [(f"{MODELS}/{m}", models_dir / m) for m in manifest["models"]]
    try:
        atomic_write(path, lambda tmp: _write_archive(tmp, manifest, members))
    except CheckpointError as error:
        cause = error.__cause__
        reason = os_reason(cause) if isinstance(cause, OSError) else str(error)
        raise ProjectError(
            f"could not save the project to '{path}': {reason}; any previous file there is unchanged"
        ) from cause
    _fsync_folder(path.parent)


def _write_archive(tmp: Path, manifest: dict[str, Any], members: list[tuple[str, Path]]) -> None:
    """Write the whole archive to ``tmp`` and flush it to disk (any failure is an OSError)."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with open(tmp, "wb") as handle:
        try:
            with zipfile.ZipFile(handle, "w") as archive:
                archive.writestr(_zip_info(MANIFEST, zipfile.ZIP_DEFLATED), text.encode("utf-8"))
                for arcname, source in members:
                    _add_file(archive, arcname, source)
        except (ValueError, RuntimeError, zipfile.LargeZipFile) as error:  # not OSError
            raise OSError(errno.EIO, str(error)) from error
        handle.flush()
        os.fsync(handle.fileno())


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_dt.datetime.now().timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def _add_file(archive: zipfile.ZipFile, arcname: str, source: Path) -> None:
    """Store ``source`` (uncompressed) as ``arcname``; the entry's date is now (zip dates
    cannot be before 1980, which some copied files' times are)."""
    info = _zip_info(arcname, zipfile.ZIP_STORED)
    with open(source, "rb") as src:
        info.file_size = os.fstat(src.fileno()).st_size
        with archive.open(info, "w", force_zip64=info.file_size >= zipfile.ZIP64_LIMIT) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; best effort)."""
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


# ----------------------------------------------------------------------------------------------
# Opening


def open_project(cls: type[Project], path: Path, workdir: Path | None) -> Project:
    """Open the project file ``path`` as a ``cls`` (see :meth:`Project.open`)."""
    where = f"cannot open project '{path}'"
    if not path.exists():
        raise ProjectError(f"{where}: the file does not exist")
    if path.is_dir():
        raise ProjectError(f"{where}: it is a folder, not a project file")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ProjectError(f"{where}: it is not a MetaStudio project (not a zip archive, or damaged)") from None
    except OSError as error:
        raise ProjectError(f"{where}: {os_reason(error)}") from None
    with archive:
        try:
            parsed = parse_manifest(_read_manifest(archive))
        except ProjectError as error:
            raise ProjectError(f"{where}: {error}") from None
        owned = workdir is None
        folder = Path(tempfile.mkdtemp(prefix="metastudio-project-")) if workdir is None else Path(workdir)
        try:
            project = build_project(cls, parsed, folder, _unpack(archive, parsed, folder))
        except OSError as error:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise ProjectError(f"{where}: could not unpack it into {folder}: {os_reason(error)}") from None
        except BaseException:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
    if owned:
        project.own_workdir()
    project.path = path
    return project


def _read_manifest(archive: zipfile.ZipFile) -> Any:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise ProjectError(f"it has no {MANIFEST}: it is not a MetaStudio project, or it is damaged") from None
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise ProjectError(f"its {MANIFEST} is implausibly large ({info.file_size:,} bytes)")
    try:
        data = archive.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError) as error:
        raise ProjectError(f"its {MANIFEST} cannot be read: {message_of(error)}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProjectError(f"its {MANIFEST} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ProjectError(f"its {MANIFEST} is not valid JSON ({error})") from None


def _unpack(archive: zipfile.ZipFile, parsed: ParsedManifest, folder: Path) -> dict[str, str]:
    """Extract the images and models ``parsed`` names into ``folder``; returns why each one
    that could not be read from the archive was not (file or model name -> reason)."""
    (folder / IMAGES).mkdir(parents=True, exist_ok=True)
    (folder / MODELS).mkdir(parents=True, exist_ok=True)
    unreadable: dict[str, str] = {}
    for file in dict.fromkeys(i.file for i in parsed.all_items()):
        reason = _extract(archive, f"{IMAGES}/{file}", folder / IMAGES / file, file[:16])
        if reason:
            unreadable[file] = reason
    for name in parsed.models:
        reason = _extract(archive, f"{MODELS}/{name}", folder / MODELS / name, None)
        if reason:
            unreadable[name] = reason
    return unreadable


def _extract(archive: zipfile.ZipFile, member: str, target: Path, digest_prefix: str | None) -> str | None:
    """Copy ``member`` to ``target`` (atomically); return why it could not be, or ``None``.

    Problems reading the archive (member missing or damaged, content not matching the
    ``digest_prefix`` its name promises) are returned; a problem writing ``target`` raises
    ``OSError``.
    """
    try:
        info = archive.getinfo(member)
    except KeyError:
        return "is missing from the project file"
    if info.is_dir():
        return "is missing from the project file"
    tmp = part_path(target)
    digest = hashlib.sha256()
    try:
        try:
            src = archive.open(info)
        except _ZIP_READ_ERRORS as error:
            return f"cannot be read from the project file ({message_of(error)})"
        with src, open(tmp, "wb") as dst:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except _ZIP_READ_ERRORS as error:
                    return f"is damaged in the project file ({message_of(error)})"
                if not chunk:
                    break
                digest.update(chunk)
                dst.write(chunk)
        if digest_prefix is not None and digest.hexdigest()[:16] != digest_prefix:
            return "is damaged in the project file (its content does not match its name)"
        os.replace(tmp, target)
        return None
    finally:
        tmp.unlink(missing_ok=True)
