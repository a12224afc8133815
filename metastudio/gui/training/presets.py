"""What the Meta-train form offers before anyone types: episode settings that suit each dataset,
the Preset picker's entries, the spin boxes of the episode and validation fields, and one plain
line about every field."""

from __future__ import annotations

from typing import Any, NamedTuple

#: Episode settings that suit each dataset (the shipped Omniglot model used 60-way 1-shot 5
#: queries; ProtoNet trained mini-ImageNet 1-shot with 20-30 ways). Unknown datasets get "folder".
DATASET_DEFAULTS: dict[str, dict[str, int]] = {
    "omniglot": dict(ways=60, shots=1, queries=5, episodes=8000, val_every=500, val_episodes=200,
                     val_ways=5, val_shots=1, val_queries=15),
    "mini-imagenet": dict(ways=20, shots=1, queries=15, episodes=20000, val_every=1000, val_episodes=200,
                          val_ways=5, val_shots=1, val_queries=15),
    "folder": dict(ways=3, shots=1, queries=2, episodes=200, val_every=50, val_episodes=20,
                   val_ways=3, val_shots=1, val_queries=2),
}
#: The order of the dataset picker (other datasets follow, sorted).
DATASET_ORDER = ("omniglot", "mini-imagenet", "folder")

#: The Preset picker's entries: a title, one plain sentence, and the plan fields they set (every
#: field with a widget but the location, plus ``fit``). The other fields of the plan (seed,
#: device, splits) stay as they are. Episode counts suit a laptop: minutes, not hours.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "handwriting": {
        "title": "Handwriting (Omniglot)",
        "note": "Trains a new model for handwritten characters and symbols on the Omniglot alphabets "
                "(downloaded the first time, unless Location points to a copy). A few minutes on a laptop.",
        # Omniglot's episodes (the recipe of the shipped model), with far fewer of them.
        "plan": dict(algorithm="protonet", backbone="conv4", dataset="omniglot", freeze_backbone=False,
                     **{**DATASET_DEFAULTS["omniglot"], "episodes": 500, "val_every": 250, "val_episodes": 100},
                     val_holdout=0, hparams={}, options={}, fit="stretch"),
    },
    # Matching Networks, not Prototypical Networks: on a frozen backbone ProtoNet has nothing to
    # train (the shipped photos model is that), while Matching Networks learn their temperature
    # (the recipe of matchingnet-photos, docs/benchmarks.md).
    "photos": {
        "title": "Photos",
        "note": "Trains a model for your kind of photos on top of a ready-made photo network. Choose a "
                "folder (or .zip) with one sub-folder of pictures per class as Location.",
        "plan": dict(algorithm="matchingnet", backbone="efficientnet-lite0", dataset="folder", freeze_backbone=True,
                     **DATASET_DEFAULTS["folder"], val_holdout=0, hparams={"feature_transform": "power-cl2n"},
                     options={}, fit="center-crop"),
    },
}
#: The preset a new panel starts with.
DEFAULT_PRESET = "handwriting"
#: The Preset picker's entry for settings of one's own (chosen as soon as a field is edited).
CUSTOM = "custom"
CUSTOM_NOTE = "Your own settings."

#: One plain line about each field of the form (its tooltip; the label shows it too).
FIELD_TIPS = {
    "preset": "Ready-made settings for a common case; changing any field makes it Custom.",
    "algorithm": "The learning method: how the model learns to tell new classes apart from a few examples.",
    "backbone": "The network that turns each picture into numbers for the learning method to compare.",
    "freeze": "Keep a ready-made (pretrained) network as it is and train only what sits on top: faster, "
              "and it keeps what it already knows.",
    "dataset": "The collection to learn from: Omniglot (handwriting), mini-ImageNet (photos) or a folder of your own.",
    "root": "Where the pictures are: a folder or .zip file with one sub-folder of pictures per class.",
    "browse": "Choose the folder or .zip file that holds the pictures.",
    "ways": "How many classes each practice round mixes.",
    "shots": "How many labelled examples of each class a practice round shows.",
    "queries": "How many more pictures of each class a practice round asks the model to sort.",
    "episodes": "How many practice rounds to train for: more takes longer and usually learns better.",
    "batch_steps": "How many steps this method learns as a plain classifier of every training class, each on a "
                   "batch of pictures, before any practice rounds.",
    "batch_size": "How many pictures each of those steps learns from.",
    "val_every": "How many practice rounds between two tests on classes it does not train on; the best model "
                 "so far is kept.",
    "val_episodes": "How many rounds each test has: more gives a steadier score and takes longer.",
    "val_ways": "How many classes each test round mixes.",
    "val_shots": "How many labelled examples of each class a test round shows.",
    "val_queries": "How many pictures of each class a test round asks the model to sort.",
    "val_holdout": "Test on this many classes kept out of the training data (0: on the dataset's own "
                   "validation classes).",
}


class SpinField(NamedTuple):
    """A whole-number field of the plan shown as a spin box (its tooltip is ``FIELD_TIPS[key]``)."""

    key: str  #: the plan's field
    label: str  #: the text beside it
    name: str  #: its accessible name
    minimum: int
    maximum: int
    default: int


# No mnemonics in these labels: Alt+E, Alt+V, Alt+H... belong to the main window's menus.
#: The practice rounds, in two columns (ways and shots, then queries and episodes).
EPISODE_FIELDS = (
    SpinField("ways", "Ways:", "Ways", 2, 10_000, 5),
    SpinField("shots", "Shots:", "Shots", 1, 10_000, 1),
    SpinField("queries", "Queries:", "Queries", 0, 10_000, 15),
    SpinField("episodes", "Episodes:", "Episodes", 1, 100_000_000, 1000),
)
#: Plain training on labelled batches of every training class, for the methods that learn so
#: (SimpleShot, Baseline++); shown only for them.
BATCH_FIELDS = (
    SpinField("batch_steps", "Batch steps:", "Batch steps", 1, 100_000_000, 2000),
    SpinField("batch_size", "Batch size:", "Batch size", 1, 100_000, 64),
)
#: The validation details behind Advanced, in two columns.
VALIDATION_FIELDS = (
    SpinField("val_every", "Validate every:", "Validate every", 1, 100_000_000, 500),
    SpinField("val_episodes", "Val. episodes:", "Validation episodes", 1, 1_000_000, 200),
    SpinField("val_ways", "Val. ways:", "Validation ways", 2, 10_000, 5),
    SpinField("val_shots", "Val. shots:", "Validation shots", 1, 10_000, 1),
    SpinField("val_queries", "Val. queries:", "Validation queries", 0, 10_000, 15),
    SpinField("val_holdout", "Held-out classes:", "Held-out classes", 0, 1_000_000, 0),
)
