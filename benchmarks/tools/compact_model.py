#!/usr/bin/env python
"""Store a model file's float32 weights as float16, to keep shipped models under the repository's
5 MB limit per file. The metadata is kept and records it (``stored_dtype``). On loading, the
weights are copied into the model's float32 parameters (``load_state_dict`` casts them), so the
model computes in float32 as before. Only the rounding of each weight to float16 changes: re-measure
the model's numbers after compacting.

    python benchmarks/tools/compact_model.py resources/models/mann-photos.safetensors
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: rewrite MODEL in place")
    args = p.parse_args()
    with safe_open(str(args.model), "pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(metadata["metastudio"])
    if meta.get("optimizer"):
        raise SystemExit(f"{args.model} is a resume checkpoint (it has optimizer state): compact only a finished model")
    halved = 0
    for name, tensor in tensors.items():
        if tensor.dtype == torch.float32:
            tensors[name] = tensor.to(torch.float16)
            halved += 1
    meta["stored_dtype"] = "float16"
    metadata["metastudio"] = json.dumps(meta)
    out = args.out or args.model
    before = args.model.stat().st_size
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    shutil.copymode(args.model, tmp)
    tmp.replace(out)
    print(f"{out}: {halved} tensors to float16, {before / 1e6:.2f} MB -> {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
