"""Command-line flags shared by several subcommands of ``metastudio``."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
DEBUG_HELP = "when something fails, print its traceback too (for a bug report)"
HP_ADAPTATION_HELP = "change an adaptation hyperparameter of the model (repeatable), e.g. --hp adapt_steps=10"


def seconds(text: str) -> float:
    """A --timeout value: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got '{text}'")
    return value


def timeout_arg(sp, each: str) -> None:
    sp.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                    help=f"give up when the model takes longer than SECONDS for {each} (a plugin that hangs, say): "
                         "the command stops with exit status 124 and names the plugin; default: no limit")


def common_args(sp, device: bool = True) -> None:
    """The flags every subcommand takes; --safe-mode and --debug may also come before the subcommand."""
    sp.add_argument("--safe-mode", action="store_true", default=argparse.SUPPRESS, help="load the built-in plugins only")
    sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    if device:
        sp.add_argument("--device", default="auto", help=DEVICE_HELP)
        sp.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="auto = bfloat16 mixed precision on CUDA, float32 elsewhere; bf16 = bfloat16 mixed precision on "
                             "the CPU too (about 1.4x faster training on CPUs with native bfloat16, AVX512-BF16 or AMX; "
                             "slower on others); fp32 turns mixed precision off")
