"""Built-in datasets: Omniglot and any folder (or zip) of class folders."""

from pathlib import Path

from metastudio.api import DatasetError, DatasetSpec, hookimpl, HyperParameter, load_folder_split
from .omniglot import PROTOCOLS, SPLITS, load_omniglot


PER_CLASS = HyperParameter("per_class", int, 0, "Use only the first N images (by file name) of each class; "
                           "0 uses them all.", 0, 1_000_000)


def _load_omniglot(root, split, *, image_size=None, progress=None, protocol="vinyals", **_):
    return load_omniglot(root, split, protocol, image_size=image_size or 28, progress=progress)


OMNIGLOT = DatasetSpec(
    "omniglot",
    _load_omniglot,
    "Omniglot handwritten characters (Lake et al. 2015), 28x28 greyscale; Vinyals split with "
    "rotations (default) or Lake's background/evaluation split. Downloaded when --root is not given.",
    splits=SPLITS,
    image_size=28,
    channels=1,
    options=(
        HyperParameter("protocol", str, "vinyals", "vinyals: Vinyals et al. character split with rotated classes; "
                       "lake: background alphabets for training, evaluation alphabets for testing.", choices=PROTOCOLS),
    ),
)

FOLDER = DatasetSpec(
    "folder",
    load_folder_split,
    "Any folder or zip of class folders (root/<class>/<images>, nested groups allowed); "
    "root/train, root/val, root/test are used as splits when present.",
    splits=("train", "val", "test"),
    image_size=84,
    channels=3,
    options=(HyperParameter("channels", int, 3, "1 for greyscale, 3 for colour.", choices=(1, 3)), PER_CLASS),
)


def _load_mini_imagenet(root, split, *, image_size=None, progress=None, per_class=0, **_):
    if root is None:
        raise DatasetError(
            "mini-ImageNet has no official download: pass --root, a folder holding train/val/test "
            "(folders or zips of class folders, as in the Ravi & Larochelle split)"
        )
    base = Path(root).expanduser()
    if not any((base / f"{split}{ext}").exists() for ext in ("", ".zip")):
        raise DatasetError(f"mini-ImageNet split '{split}' not found: expected {base / split} or {base / split}.zip")
    return load_folder_split(base, split, image_size=image_size or 84, channels=3, progress=progress,
                             per_class=per_class)


MINI_IMAGENET = DatasetSpec(
    "mini-imagenet",
    _load_mini_imagenet,
    "mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle split): 64/16/20 ImageNet classes of 600 "
    "colour images, 84x84. --root holds train/val/test as folders or zips of class folders.",
    splits=("train", "val", "test"),
    image_size=84,
    channels=3,
    options=(PER_CLASS,),
)


@hookimpl
def metastudio_datasets():
    return [OMNIGLOT, FOLDER, MINI_IMAGENET]
