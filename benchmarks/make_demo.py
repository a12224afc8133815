#!/usr/bin/env python
"""Build the README's demo: 5 Omniglot characters of the evaluation alphabets (never seen when
the shipped model was trained), 3 drawings each as examples and 3 more each, shuffled, to
classify. Omniglot is MIT-licensed (Lake et al. 2015); the images are read from the official
zip and are not part of this repository.

    python benchmarks/make_demo.py --omniglot ../shared/data/omniglot --out demo
    QT_QPA_PLATFORM=offscreen metastudio --support demo/support --query demo/query \\
        --model protonet-omniglot --screenshot docs/screenshot.png
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
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
