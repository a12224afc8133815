"""Omniglot (Lake et al. 2015): 1623 handwritten characters from 50 alphabets, 20 drawings each.

Two protocols:

``vinyals`` (default)
    The character split of Vinyals et al. (2016) -- 1028 train / 172 val / 423 test characters,
    drawn from both official zips -- with each character rotated by 90, 180 and 270 degrees
    counted as a new class (4112 / 688 / 1692 classes). Used by Matching, Prototypical and
    Relation Networks and MAML. The split files ship with MetaStudio (MIT, from Torchmeta).
``lake``
    Train on the 30 background alphabets, test on the 20 evaluation alphabets, no rotations.
    For validation, the last three background alphabets (sorted by name) are held out of
    ``train``; ``trainval`` is the whole background set.

Images are 105x105 1-bit drawings, resized to 28x28 greyscale (one channel).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch

from metastudio.api import (
    DatasetError, download, FewShotDataset, load_class_folders, Progress, text_progress, TreeSource
)

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
#: md5 of the official release files (the ones torchvision and most libraries check).
FILES = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
PROTOCOLS = ("vinyals", "lake")
SPLITS = ("train", "val", "trainval", "test")
LAKE_VAL_ALPHABETS = 3


def default_root() -> Path:
    import platformdirs

    return Path(os.environ.get("METASTUDIO_DATA_DIR") or platformdirs.user_data_dir("metastudio")) / "omniglot"


def _find_part(root: Path, part: str) -> Path | None:
    for candidate in (root / f"{part}.zip", root / part, root / "omniglot-py" / f"{part}.zip", root / "omniglot-py" / part):
        if candidate.exists():
            return candidate
    return None


def locate(root: str | os.PathLike | None = None, *, allow_download: bool = True, progress: Progress | None = None) -> dict[str, Path]:
    """Paths of ``images_background`` and ``images_evaluation`` (zip or folder) under ``root``.

    Missing files are downloaded from the official release (md5-checked) when
    ``allow_download`` is true; otherwise the error says where to get them.
    """
    root = Path(root).expanduser() if root else default_root()
    found: dict[str, Path] = {}
    for part, md5 in FILES.items():
        path = _find_part(root, part)
        if path is None:
            if not allow_download:
                raise DatasetError(
                    f"Omniglot's {part}.zip is not in '{root}'. Download it from "
                    f"{BASE_URL}/{part}.zip into that folder, or allow the download"
                )
            report, close = (progress, None) if progress else text_progress(f"downloading {part}.zip", "B", unit_scale=True)
            try:
                path = download(f"{BASE_URL}/{part}.zip", root / f"{part}.zip", md5=md5, progress=report)
            finally:
                if close:
                    close()
        found[part] = path
    return found


def vinyals_split(split: str) -> dict[str, list[str]]:
    """``{"background"|"evaluation": [alphabet/characterNN, ...]}`` of the Vinyals split."""
    names = {"trainval": ("train", "val")}.get(split, (split,))
    out: dict[str, list[str]] = {"background": [], "evaluation": []}
    for name in names:
        text = resources.files(__package__).joinpath(f"data/omniglot_vinyals_{name}.json").read_text()
        for part, alphabets in json.loads(text).items():
            for alphabet, characters in alphabets.items():
                out[part] += [f"{alphabet}/{c}" for c in characters]
    return {k: sorted(v) for k, v in out.items()}


def concat(datasets: list[FewShotDataset], name: str) -> FewShotDataset:
    datasets = [d for d in datasets if d.num_classes]
    return FewShotDataset(
        torch.cat([d.images for d in datasets]),
        [n for d in datasets for n in d.class_names],
        [s for d in datasets for s in d.class_sizes],
        name,
        [p for d in datasets for p in d.problems],
    )


def load_omniglot(
    root: str | os.PathLike | None = None,
    split: str = "train",
    protocol: str = "vinyals",
    *,
    image_size: int = 28,
    rotations: bool | None = None,
    allow_download: bool = True,
    progress: Progress | None = None,
    download_progress: Progress | None = None,
) -> FewShotDataset:
    """One split of Omniglot as a :class:`FewShotDataset` (see the module's docstring).

    ``progress(done, total)`` reports decoding (images), ``download_progress`` downloading
    (bytes; a text bar on stderr when None)."""
    if protocol not in PROTOCOLS:
        raise DatasetError(f"unknown Omniglot protocol '{protocol}': choose one of {', '.join(PROTOCOLS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown Omniglot split '{split}': choose one of {', '.join(SPLITS)}")
    paths = locate(root, allow_download=allow_download, progress=download_progress)
    if protocol == "vinyals":
        wanted = vinyals_split(split)
    else:
        background = TreeSource(paths["images_background"]).list_classes()
        alphabets = sorted({c.split("/")[0] for c in background})
        val_alphabets = set(alphabets[-LAKE_VAL_ALPHABETS:])
        in_val = lambda c: c.split("/")[0] in val_alphabets  # noqa: E731
        wanted = {
            "train": {"background": [c for c in background if not in_val(c)], "evaluation": []},
            "val": {"background": [c for c in background if in_val(c)], "evaluation": []},
            "trainval": {"background": list(background), "evaluation": []},
            "test": {"background": [], "evaluation": None},
        }[split]
    parts = []
    for part, classes in wanted.items():
        if classes == []:
            continue
        parts.append(
            load_class_folders(
                paths[f"images_{part}"], image_size=image_size, channels=1, classes=classes,
                name=f"omniglot-{part}", progress=progress,
            )
        )
    ds = concat(parts, f"omniglot-{protocol}-{split}")
    if rotations is None:
        rotations = protocol == "vinyals"
    if rotations:
        ds = ds.with_rotations()
    ds.name = f"omniglot-{protocol}-{split}"
    return ds
