"""Write the weights of the built-in ``conv4-omniglot`` backbone (plugins/backbones/data/conv4-omniglot.safetensors).

They are the Conv-4 of a Prototypical Networks model meta-trained on the Omniglot *train* characters of
the Vinyals split (never val or test), by default the shipped ``protonet-omniglot``. The file is written
once and committed: the backbone is "pretrained" (frozen models do not save it and rebuild it from this
file), so it must not change when ``protonet-omniglot`` is retrained.

    python benchmarks/tools/extract_conv4_omniglot.py [MODEL] [OUT]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from metastudio.engine.checkpoint import load_tensors

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "resources/models/protonet-omniglot.safetensors")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "plugins/backbones/data/conv4-omniglot.safetensors")
    meta, tensors = load_tensors(model)
    if (meta.get("algorithm"), meta.get("backbone"), meta.get("channels")) != ("protonet", "conv4", 1):
        sys.exit(f"{model} is not a Prototypical Networks model on a 1-channel Conv-4")
    dataset = meta.get("dataset") or {}
    if dataset.get("split") != "train" or dataset.get("protocol") != "vinyals":
        sys.exit(f"{model} was not trained on the Vinyals train split only: {dataset}")
    weights = {k.removeprefix("backbone."): v.contiguous() for k, v in tensors.items() if k.startswith("backbone.")}
    provenance = {
        "source": model.name, "source_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "algorithm": meta["algorithm"], "dataset": dataset, "trained_steps": meta.get("trained_steps"),
        "best_val_accuracy": meta.get("best_val_accuracy"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out), metadata={"metastudio": json.dumps(provenance)})
    print(f"wrote {out}: {len(weights)} tensors from {model}")


if __name__ == "__main__":
    main()
