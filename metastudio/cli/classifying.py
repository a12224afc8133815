"""What the commands that classify images share: ``--hp`` values, the ``--query`` files and
folders, adapting to a ``--support`` folder of class folders, and the printed predictions."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def parse_hparams(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--hp expects NAME=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def query_files(items: Sequence[str]) -> list[Path]:
    """The image files named by the --query files and folders. Every entry that can't be used
    (missing, a broken link or a loop, a pipe, a name that isn't text, a drawing or document
    format) is a ``warning:`` line on stderr and the rest is used; it is an error only when no
    file is left."""
    from metastudio.data.listing import NOT_FOUND, find_images
    from metastudio.errors import MetaStudioError

    files: list[Path] = []
    problems = []
    for item in items:
        found, bad = find_images([item])
        if not found and not bad and Path(item).expanduser().is_dir():
            print(f"warning: no image files in '{Path(item).expanduser()}'", file=sys.stderr)
        files += found
        problems += bad
    missing = next((p for p in problems if p.reason == NOT_FOUND), None) if not files else None
    for problem in problems:
        if problem is not missing:
            print(f"warning: {problem}; skipped", file=sys.stderr)
    if missing is not None:
        raise MetaStudioError(f"query '{missing.path}' does not exist")
    if not files:
        raise MetaStudioError("no query images to classify")
    return files


def adapt_to_support_folder(session, folder: str) -> None:
    """Adapt ``session`` to the class folders of ``folder`` (a folder or zip of one sub-folder of
    images per class), saying on stderr which files could not be used."""
    from metastudio.data.datasets import load_class_folders
    from metastudio.errors import MetaStudioError

    algorithm = session.algorithm
    support = load_class_folders(folder, image_size=algorithm.image_size, channels=algorithm.channels,
                                 fit=algorithm.fit, use_cache=False)
    for problem in support.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if support.num_classes < 2:
        raise MetaStudioError(
            f"the support folder '{folder}' has {support.num_classes} class with images; "
            "make one sub-folder per class, with at least two classes"
        )
    session.adapt_to([support.class_images(c) for c in range(support.num_classes)], support.class_names)


def print_predictions(result, labels: dict[str, str]) -> None:
    """One line per classified image: its best class and probability, or why it is unsure."""
    width = max(len(labels[i]) for i in result.probabilities)
    for image_id, row in result.probabilities.items():
        best = result.class_names[max(range(len(row)), key=row.__getitem__)]
        confidence = f"{100 * max(row):.1f}%"
        label = labels[image_id].ljust(width)
        if image_id in result.unsure:  # no answer, only the closest class
            print(f"{label}  unsure: {result.unsure[image_id]} (closest: {best}, {confidence})")
        else:
            print(f"{label}  {best}  ({confidence})")


__all__ = ["adapt_to_support_folder", "parse_hparams", "print_predictions", "query_files"]
