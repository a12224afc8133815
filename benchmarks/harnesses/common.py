"""What the harnesses share: the name of the machine's CPU, where results go, and how they are written.

The harnesses run as scripts (``python benchmarks/harnesses/NAME.py``), so this folder is first on
``sys.path`` and ``from common import ...`` finds this module.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

#: benchmarks/results: one folder per machine (see its README.md).
RESULTS = Path(__file__).resolve().parents[1] / "results"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_results_dir() -> Path:
    """The results folder of this machine's CPU: ``benchmarks/results/cpu-<cores>core`` (``cpu-2core`` on
    the project's standard machine), where CPU harnesses write by default."""
    return RESULTS / f"cpu-{os.cpu_count()}core"


def write_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` to ``path`` as indented JSON with a final newline, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def seconds_series(**series: list[float]) -> dict:
    """Each named list of timings as ``NAME_median`` and ``NAME`` (rounded to the millisecond), in that order."""
    out = {}
    for name, values in series.items():
        out[f"{name}_median"] = round(statistics.median(values), 3)
        out[name] = [round(x, 3) for x in values]
    return out
