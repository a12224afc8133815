"""Text progress bars for headless use (the CLI, scripts); a GUI passes its own callbacks."""

from __future__ import annotations

import sys
from collections.abc import Callable


def text_progress(desc: str, unit: str = "it", *, unit_scale: bool = False) -> tuple[Callable[[int, int | None], None], Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, and a function closing it.

    The bar is hidden when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)

    def progress(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close
