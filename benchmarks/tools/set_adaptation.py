#!/usr/bin/env python
"""Copy a trained model with other defaults for its *adaptation* hyperparameters.

A model keeps the hyperparameters it was trained with; ``adaptation`` ones (how many SGD steps
MAML takes on your examples, which batch-norm statistics it uses...) may take other values when
the model is used (``metastudio eval --hp``, the app's Model box). This writes a copy whose
defaults are the chosen values, e.g. the number of adaptation steps chosen on the val split
(benchmarks/recipes/eval_maml.sh), so that the app uses them without anyone setting them. The weights,
the training history and the dataset description are kept; ``training`` and ``architecture``
hyperparameters cannot be changed (the same check as ``--hp``).

    python benchmarks/tools/set_adaptation.py runs/maml-omniglot.safetensors resources/models/maml-omniglot.safetensors \\
        --hp adapt_steps=1 --why "chosen on 200 val episodes per setting, benchmarks/recipes/eval_maml.sh"
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--hp", action="append", required=True, metavar="NAME=VALUE")
    p.add_argument("--why", default="", help="a note kept in the metadata (adaptation_defaults.why)")
    args = p.parse_args()

    from metastudio.cli import _parse_hparams
    from metastudio.engine.checkpoint import load_model, load_tensors, save_tensors
    from metastudio.plugins import get_host

    overrides = _parse_hparams(args.hp)
    meta, tensors = load_tensors(args.model)
    try:
        algorithm = load_model(args.model, get_host(), "cpu", overrides).algorithm
    except ValueError as e:  # a training or architecture hyperparameter, an unknown name, a bad value
        raise SystemExit(f"error: {e}") from None
    changed = {k: algorithm.hparams[k] for k in overrides}
    new_meta = {**meta, **algorithm.config(),
                "adaptation_defaults": {"changed": changed, "trained_with": {k: meta["hyperparameters"].get(k)
                                                                             for k in changed}, "why": args.why}}
    save_tensors(args.out, tensors, new_meta)
    print(f"{args.out}: {', '.join(f'{k}={v}' for k, v in changed.items())}")


if __name__ == "__main__":
    main()
