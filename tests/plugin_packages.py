"""Plugin packages installed as a third party's would be: a module and its ``.dist-info``
(METADATA and entry_points.txt) in a site folder, which then goes on ``sys.path``."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path


def write_distribution(site: Path, entry_point: str, dist: str, module: str, source: str,
                       version: str = "1.0") -> None:
    """Write module ``module`` (``source``) and the distribution ``dist`` ``version`` whose
    ``metastudio`` entry point ``entry_point`` names it into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[metastudio]\n{entry_point} = {module}\n")


def on_path(site: Path, monkeypatch) -> None:
    """Put ``site`` on ``sys.path`` for this test (after everything is written, so no finder
    caches a half-made tree)."""
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()


def install(site: Path, monkeypatch, plugins: dict[str, tuple[str, str, str]], version: str = "1.0") -> None:
    """Install plugin packages into ``site`` and put it on sys.path.

    ``plugins`` maps an entry-point name to (distribution name, module name, module source).
    """
    for entry_point, (dist, module, source) in plugins.items():
        write_distribution(Path(site), entry_point, dist, module, source, version)
    on_path(Path(site), monkeypatch)
