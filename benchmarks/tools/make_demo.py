#!/usr/bin/env python
"""Build a demo project's folders (not part of this repository: the images are read from
../shared/data).

``--photos`` (the README's picture): 5 mini-ImageNet validation classes, named in plain words,
5 photos each as examples and 10 more each to classify, plus two pictures that belong to no
class (a handwritten character and noise), shuffled:

    python benchmarks/tools/make_demo.py --photos --out demo
    Xvfb :99 -screen 0 1366x768x24 &
    DISPLAY=:99 metastudio --support demo/support --query demo/query --screenshot docs/screenshot.png

Without it: 5 Omniglot characters of the evaluation alphabets (never seen when the shipped
model was trained), 3 drawings each as examples and 3 more each to classify, for
``--model protonet-omniglot``. Omniglot is MIT-licensed (Lake et al. 2015).
"""

from __future__ import annotations

import argparse
import random
import shutil
import zipfile
from pathlib import Path

CHARACTERS = [("Atlantean", "character05"), ("Glagolitic", "character12"), ("Keble", "character03"),
              ("Malayalam", "character20"), ("Tibetan", "character08")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--omniglot", default="../shared/data/omniglot", help="folder holding images_evaluation.zip")
    p.add_argument("--out", default="demo")
    p.add_argument("--photos", action="store_true", help="the photo demo (mini-ImageNet val) instead")
    p.add_argument("--mini-imagenet", default="../shared/data/mini-imagenet", help="folder holding val.zip")
    args = p.parse_args()
    if args.photos:
        photos(Path(args.mini_imagenet) / "val.zip", Path(args.omniglot) / "images_evaluation.zip", Path(args.out))
        return
    archive = zipfile.ZipFile(Path(args.omniglot) / "images_evaluation.zip")
    names = archive.namelist()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "query").mkdir(parents=True)
    queries = []
    for alphabet, character in CHARACTERS:
        files = sorted(n for n in names if n.startswith(f"images_evaluation/{alphabet}/{character}/") and n.endswith(".png"))
        folder = out / "support" / f"{alphabet} {int(character[-2:])}"
        folder.mkdir(parents=True)
        for i, f in enumerate(files[:3]):
            (folder / f"{i + 1}.png").write_bytes(archive.read(f))
        queries += files[3:6]
    random.Random(3).shuffle(queries)
    for i, f in enumerate(queries):
        (out / "query" / f"drawing-{i + 1:02d}.png").write_bytes(archive.read(f))
    print(f"wrote {out}/support ({len(CHARACTERS)} classes x 3) and {out}/query ({len(queries)} images)")


PHOTO_CLASSES = [("n01855672", "goose"), ("n02091244", "ibizan hound"), ("n02114548", "white wolf"),
                 ("n02138441", "meerkat"), ("n02174001", "rhinoceros beetle")]


def photos(val_zip: Path, omniglot_zip: Path, out: Path) -> None:
    import numpy as np
    from PIL import Image

    archive = zipfile.ZipFile(val_zip)
    names = archive.namelist()
    shutil.rmtree(out, ignore_errors=True)
    (out / "query").mkdir(parents=True)
    queries = []
    for wnid, name in PHOTO_CLASSES:
        files = sorted(n for n in names if n.startswith(f"val/{wnid}/") and n.endswith(".jpg"))
        folder = out / "support" / name
        folder.mkdir(parents=True)
        for i, f in enumerate(files[:5]):
            (folder / f"{i + 1}.jpg").write_bytes(archive.read(f))
        queries += [(f, archive.read(f)) for f in files[5:15]]
    character = sorted(n for n in zipfile.ZipFile(omniglot_zip).namelist() if n.endswith(".png"))[0]
    queries.append((character, zipfile.ZipFile(omniglot_zip).read(character)))
    random.Random(3).shuffle(queries)
    for i, (f, data) in enumerate(queries):
        (out / "query" / f"photo-{i + 1:02d}{Path(f).suffix}").write_bytes(data)
    noise = np.random.default_rng(3).integers(0, 256, (84, 84, 3), dtype=np.uint8)
    Image.fromarray(noise).save(out / "query" / f"photo-{len(queries) + 1:02d}.png")
    print(f"wrote {out}/support ({len(PHOTO_CLASSES)} classes x 5) and {out}/query ({len(queries) + 1} images)")


if __name__ == "__main__":
    main()
