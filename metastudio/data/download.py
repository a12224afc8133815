"""Downloading dataset files with a checksum, a progress callback and an atomic rename."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from metastudio.data.datasets import Progress
from metastudio.errors import DatasetError


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest``, verify its checksum, and only then move it into place.

    A failed or interrupted download leaves nothing at ``dest``. A checksum mismatch (a proxy's
    error page or a quota page saved as data, say) is an error that says what to do instead.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = response.length
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url} ({getattr(e, 'reason', e)}); check the network, or download "
            f"the file yourself and pass the folder that holds it with --root"
        ) from e
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            got = file_digest(tmp, algorithm)
            if got != expected:
                tmp.unlink(missing_ok=True)
                raise DatasetError(
                    f"the file downloaded from {url} is not the expected one ({algorithm} {got}, "
                    f"expected {expected}); it was deleted. Try again later, or download it "
                    "yourself and pass its folder with --root"
                )
    os.replace(tmp, dest)
    return dest
