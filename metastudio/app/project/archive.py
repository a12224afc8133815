"""The ``.metastudio`` file: one zip archive, written atomically and unpacked safely.

The archive holds ``manifest.json`` (deflated; :mod:`~metastudio.app.project.manifest`),
``images/<file>`` (stored: images are already compressed), one per referenced file, and
``models/<name>`` (stored), one per name in the manifest's ``"models"``. The manifest's
``"sizes"`` gives the size of each of those members.

Opening a file extracts only the members the manifest names, after checking every name
(``images/`` names must look like ``0123456789abcdef.png``, model names are plain safe base
names ending ``.safetensors``), so a crafted archive cannot write outside the working folder.
A crafted archive cannot fill the disk or the memory either (a "zip bomb"): before anything
is written, each member's size in the zip's header is checked against a cap
(:data:`MAX_IMAGE_BYTES`, :data:`MAX_MODEL_BYTES`), against the size the manifest declares,
and against how far it grows when unpacked (:data:`MAX_RATIO`); all of them together may not
grow more than that either, nor need more space than the disk has free. Members are then
streamed in chunks and never allowed past the size their header gives. An image or model
that fails (missing from the archive, damaged, content not matching the digest its name
promises, or refused for its size) is left out and reported in ``Project.problems``; the rest
of the project still opens.

Saving writes a complete archive to a temporary file next to the target, flushes it to disk
and then renames it over the target, so a crash or a full disk never leaves a half-written
project and the previous file survives. Temporary files that killed saves left beside the
project are removed when it is next opened or saved (:mod:`~metastudio.app.project.cleanup`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from metastudio.app.project.cleanup import make_workdir, remove_stale_temps
from metastudio.app.project.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    ParsedManifest,
    build_project,
    manifest_files,
    parse_manifest_text,
)
from metastudio.app.project.model import IMAGES, MODELS, Project, part_path
from metastudio.data.fileio import atomic_write, fsync_folder
from metastudio.errors import CheckpointError, ProjectError, message_of, os_reason

#: The most bytes one image, and one model, of a project file may unpack to (a model of a
#: billion float32 weights fits; an image past a few hundred megabytes is no photograph).
MAX_IMAGE_BYTES = 256 << 20
MAX_MODEL_BYTES = 4 << 30
#: The most a member may grow when unpacked (its size over its packed size). Images and models
#: are stored uncompressed (about 1) and a manifest deflates some 5 to 10 fold; a zip bomb grows
#: about 1000 fold. Members of up to :data:`_RATIO_FLOOR` bytes are not judged by it alone.
MAX_RATIO = 100
_RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20
# What reading a damaged or unsupported zip member raises (OSError: the archive's disk).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, NotImplementedError, OSError)


# ----------------------------------------------------------------------------------------------
# Saving


def write_project(project: Project, path: Path) -> None:
    """Write ``project`` to ``path`` atomically (see :meth:`Project.write`)."""
    where = f"cannot save the project to '{path}'"
    manifest = project.to_manifest()
    images_dir, models_dir = project.workdir / IMAGES, project.workdir / MODELS
    images = manifest_files(manifest)
    for file in images:
        if not (images_dir / file).is_file():
            raise ProjectError(
                f"{where}: the copy of image '{file}' is missing from the project's working folder {images_dir}"
            )
    members = [(f"{IMAGES}/{f}", images_dir / f) for f in images]
    members += [(f"{MODELS}/{m}", models_dir / m) for m in manifest["models"]]
    try:
        manifest["sizes"] = {arcname: source.stat().st_size for arcname, source in members}
    except OSError as error:
        raise ProjectError(f"{where}: a file of its working folder cannot be read: {os_reason(error)}") from None
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        parse_manifest_text(text.encode("utf-8"))  # never write a file that could not be opened again
    except ProjectError as error:
        raise ProjectError(f"{where}: {error}") from None
    remove_stale_temps(path)
    try:
        atomic_write(path, lambda tmp: _write_archive(tmp, text, manifest["sizes"], members))
    except CheckpointError as error:
        cause = error.__cause__
        reason = os_reason(cause) if isinstance(cause, OSError) else str(error)
        raise ProjectError(
            f"could not save the project to '{path}': {reason}; any previous file there is unchanged"
        ) from cause
    fsync_folder(path.parent)


def _write_archive(tmp: Path, text: str, sizes: dict[str, int], members: list[tuple[str, Path]]) -> None:
    """Write the whole archive (the manifest ``text``, then ``members`` of the given ``sizes``)
    to ``tmp`` and flush it to disk (any failure is an OSError)."""
    with open(tmp, "wb") as handle:
        try:
            with zipfile.ZipFile(handle, "w") as archive:
                archive.writestr(_zip_info(MANIFEST, zipfile.ZIP_DEFLATED), text.encode("utf-8"))
                for arcname, source in members:
                    _add_file(archive, arcname, source, sizes[arcname])
        except (ValueError, RuntimeError, zipfile.LargeZipFile) as error:  # not OSError
            raise OSError(errno.EIO, str(error)) from error
        handle.flush()
        os.fsync(handle.fileno())


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_dt.datetime.now().timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def _add_file(archive: zipfile.ZipFile, arcname: str, source: Path, size: int) -> None:
    """Store ``source`` (uncompressed, ``size`` bytes as the manifest says) as ``arcname``; the
    entry's date is now (zip dates cannot be before 1980, which some copied files' times are)."""
    info = _zip_info(arcname, zipfile.ZIP_STORED)
    info.file_size = size
    copied = 0
    with open(source, "rb") as src, archive.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as dst:
        while chunk := src.read(_CHUNK):
            copied += len(chunk)
            dst.write(chunk)
    if copied != size:
        raise OSError(errno.EIO, f"'{source}' changed while it was being saved")


# ----------------------------------------------------------------------------------------------
# Opening


def open_project(cls: type[Project], path: Path, workdir: Path | None) -> Project:
    """Open the project file ``path`` as a ``cls`` (see :meth:`Project.open`)."""
    where = f"cannot open project '{path}'"
    if not path.exists():
        raise ProjectError(f"{where}: the file does not exist")
    if path.is_dir():
        raise ProjectError(f"{where}: it is a folder, not a project file")
    remove_stale_temps(path)
    try:
        length = path.stat().st_size
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ProjectError(f"{where}: it is not a MetaStudio project (not a zip archive, or damaged)") from None
    except OSError as error:
        raise ProjectError(f"{where}: {os_reason(error)}") from None
    with archive:
        try:
            parsed = parse_manifest_text(_read_manifest(archive))
        except ProjectError as error:
            raise ProjectError(f"{where}: {error}") from None
        owned = workdir is None
        try:
            folder = make_workdir() if workdir is None else Path(workdir)
        except OSError as error:
            raise ProjectError(f"{where}: could not make a working folder for it: {os_reason(error)}") from None
        try:
            project = build_project(cls, parsed, folder, _unpack(archive, parsed, folder, length))
            project.problems += _unexpected_members(archive, parsed)
        except (OSError, ProjectError) as error:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, ProjectError):
                raise ProjectError(f"{where}: {error}") from None
            raise ProjectError(f"{where}: could not unpack it into {folder}: {os_reason(error)}") from None
        except BaseException:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
    if owned:
        project.own_workdir()
    project.path = path
    return project


def _read_manifest(archive: zipfile.ZipFile) -> bytes:
    """The manifest's bytes, read in chunks and refused past its size cap or its ratio cap."""
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise ProjectError(f"it has no {MANIFEST}: it is not a MetaStudio project, or it is damaged") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ProjectError(f"its {MANIFEST} is implausibly large ({info.file_size:,} bytes)")
    if _too_compressed(info):
        raise ProjectError(f"its {MANIFEST} would unpack from {_amount(info.compress_size)} to "
                           f"{_amount(info.file_size)}, far more than a real one grows; the file may be "
                           "made to fill the memory")
    data = bytearray()
    try:
        with archive.open(info) as src:
            while chunk := src.read(min(_CHUNK, info.file_size + 1 - len(data))):
                data += chunk
                if len(data) > info.file_size:
                    raise ProjectError(f"its {MANIFEST} is larger than it says; the file is damaged")
    except _ZIP_READ_ERRORS as error:
        raise ProjectError(f"its {MANIFEST} cannot be read: {message_of(error)}") from None
    return bytes(data)


def _unpack(archive: zipfile.ZipFile, parsed: ParsedManifest, folder: Path, length: int) -> dict[str, str]:
    """Extract the images and models ``parsed`` names into ``folder``; returns why each one
    that could not be read from the archive (of ``length`` bytes) was not (file or model name
    -> reason). :class:`ProjectError` when they would not fit on the disk or grow absurdly."""
    wanted = [(f, f"{IMAGES}/{f}", folder / IMAGES / f, f[:16], "image")
              for f in dict.fromkeys(i.file for i in parsed.all_items())]
    wanted += [(m, f"{MODELS}/{m}", folder / MODELS / m, None, "model") for m in parsed.models]
    unreadable: dict[str, str] = {}
    planned = []
    for key, member, target, prefix, kind in wanted:
        checked = _check_member(archive, member, kind, parsed.sizes.get(member))
        if isinstance(checked, str):
            unreadable[key] = checked
        else:
            planned.append((key, checked, target, prefix))
    _check_total(sum(info.file_size for _, info, _, _ in planned), length, folder)
    (folder / IMAGES).mkdir(parents=True, exist_ok=True)
    (folder / MODELS).mkdir(parents=True, exist_ok=True)
    for key, info, target, prefix in planned:
        reason = _extract(archive, info, target, prefix)
        if reason:
            unreadable[key] = reason
    for name in parsed.models:
        if name in unreadable:
            unreadable[name] += "; it was left out"
    return unreadable


def _unexpected_members(archive: zipfile.ZipFile, parsed: ParsedManifest, shown: int = 5) -> list[str]:
    """What the archive holds besides the manifest and the files it names (never extracted):
    a project MetaStudio wrote has nothing else, so the file was changed by something else."""
    expected = {MANIFEST, f"{IMAGES}/", f"{MODELS}/"}
    expected |= {f"{IMAGES}/{i.file}" for i in parsed.all_items()} | {f"{MODELS}/{m}" for m in parsed.models}
    extra = [name for name in archive.namelist() if name not in expected]
    if not extra:
        return []
    names = ", ".join(repr(n) for n in extra[:shown]) + (f" and {len(extra) - shown} more" if len(extra) > shown else "")
    return [f"the project file also holds {names}, which no project has (the file was changed by something "
            "other than MetaStudio); ignored, nothing was unpacked from it"]


def _check_member(archive: zipfile.ZipFile, member: str, kind: str, declared: int | None) -> zipfile.ZipInfo | str:
    """The zip entry of ``member`` (an ``"image"`` or ``"model"``) when its header passes the
    size checks; else why it is left out."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        return "is missing from the project file"
    if info.is_dir():
        return "is missing from the project file"
    size, cap = info.file_size, MAX_IMAGE_BYTES if kind == "image" else MAX_MODEL_BYTES
    if size > cap:
        return f"is larger than a project {kind} may be ({_amount(size)}; at most {_amount(cap)})"
    if declared is not None and declared != size:
        return (f"does not have the size the project's manifest gives it ({size:,} bytes, not {declared:,}); "
                "the project file is damaged or was altered")
    if _too_compressed(info):
        return (f"would unpack from {_amount(info.compress_size)} to {_amount(size)}, far more than a real "
                f"{kind} grows; the file may be made to fill the disk")
    return info


def _too_compressed(info: zipfile.ZipInfo) -> bool:
    """Whether ``info`` grows past :data:`MAX_RATIO` when unpacked (and past the floor)."""
    return info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size


def _check_total(needed: int, length: int, folder: Path) -> None:
    """Refuse (:class:`ProjectError`) to unpack ``needed`` bytes from an archive of ``length``
    bytes when they grow absurdly (members sharing their data: a zip bomb) or do not fit in
    the free space of ``folder``'s disk."""
    if needed > _RATIO_FLOOR + MAX_RATIO * length:
        raise ProjectError(f"its images and models would unpack from {_amount(length)} to {_amount(needed)}, "
                           "far more than a real project grows; the file may be made to fill the disk")
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # the writes themselves will say what is wrong
    if needed > free:
        raise ProjectError(f"its images and models need {_amount(needed)} of disk space, but the disk of "
                           f"{existing} has only {_amount(free)} free; free some space and open it again")


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, digest_prefix: str | None) -> str | None:
    """Copy the member ``info`` to ``target`` (atomically); return why it could not be, or ``None``.

    Problems reading the archive (member damaged, larger than its header says, content not
    matching the ``digest_prefix`` its name promises) are returned; a problem writing
    ``target`` raises ``OSError``.
    """
    tmp = part_path(target)
    digest = hashlib.sha256()
    try:
        try:
            src = archive.open(info)
        except _ZIP_READ_ERRORS as error:
            return f"cannot be read from the project file ({message_of(error)})"
        with src, open(tmp, "wb") as dst:
            reason = _copy_bounded(src, dst, info.file_size, digest)
        if reason:
            return reason
        if digest_prefix is not None and digest.hexdigest()[:16] != digest_prefix:
            return "is damaged in the project file (its content does not match its name)"
        os.replace(tmp, target)
        return None
    finally:
        tmp.unlink(missing_ok=True)


def _copy_bounded(src: IO[bytes], dst: IO[bytes], limit: int, digest: Any) -> str | None:
    """Copy ``src`` to ``dst`` in chunks, feeding ``digest``; stop as soon as more than
    ``limit`` bytes come (whatever ``src`` claims). Returns why it stopped early, else ``None``.
    Reading errors are returned; writing errors (``OSError``) raised."""
    count = 0
    while True:
        try:
            chunk = src.read(min(_CHUNK, limit + 1 - count))
        except _ZIP_READ_ERRORS as error:
            return f"is damaged in the project file ({_damage(error)})"
        if not chunk:
            return None
        count += len(chunk)
        if count > limit:
            return f"is far larger than it says (it unpacks past {_amount(limit)})"
        digest.update(chunk)
        dst.write(chunk)


def _damage(error: BaseException) -> str:
    """What a reading error of a zip member says, in plain words where zipfile's are not."""
    text = message_of(error)
    return "its content does not match the checksum stored with it" if text.startswith("Bad CRC-32") else text


def _amount(size: int) -> str:
    """``size`` bytes in words: ``"1.5 GB"``, ``"12.0 MB"``, ``"512 bytes"`` (1 KB = 1024 bytes)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:,} bytes"
