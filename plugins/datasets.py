"""Built-in datasets: Omniglot and any folder (or zip) of class folders."""

from metastudio.core.algorithm import HyperParameter
from metastudio.core.datasets import DatasetSpec, load_folder_split
from metastudio.core.omniglot import PROTOCOLS, SPLITS, load_omniglot
from metastudio.plugins import hookimpl


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
    options=(HyperParameter("channels", int, 3, "1 for greyscale, 3 for colour.", choices=(1, 3)),),
)


@hookimpl
def metastudio_datasets():
    return [OMNIGLOT, FOLDER]
