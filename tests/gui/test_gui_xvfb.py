"""The real window on a real X server (Xvfb) at a laptop's 1366x768: opened by the installed
``metastudio`` command, it fits on the screen with its status bar, and shows predictions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_class_tree

SCREEN = (1366, 768)


@pytest.fixture
def xvfb_display():
    """A private Xvfb server at 1366x768 (its display number chosen by Xvfb itself)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0)")
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                               "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    try:
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def test_the_window_fits_a_1366x768_screen_and_shows_predictions(xvfb_display, tmp_path):
    root = make_class_tree(tmp_path / "support", classes=3, per_class=3, size=40)
    query = tmp_path / "query"
    query.mkdir()
    for c in range(3):
        (root / f"class{c:02d}" / "img002.png").rename(query / f"q{c}.png")
    shot = tmp_path / "window.png"
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb", "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "METASTUDIO_RECOVERY_DIR": str(tmp_path / "recovery")}
    command = Path(sys.executable).parent / "metastudio"
    done = subprocess.run([str(command), "--support", str(root), "--query", str(query), "--model", "protonet-omniglot",
                           "--device", "cpu", "--screenshot", str(shot)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"frame=(\S+) statusbar=(\S+) screen=(\S+)", done.stderr)
    assert found, done.stderr[-3000:]
    frame, bar, screen = ([int(v) for v in part.split(",")] for part in found.groups())
    assert screen[2:] == list(SCREEN)

    def inside(r) -> bool:
        return r[0] >= screen[0] and r[1] >= screen[1] and r[0] + r[2] <= screen[0] + screen[2] \
            and r[1] + r[3] <= screen[1] + screen[3]

    assert inside(frame), f"window {frame} is not within the screen {screen}"
    assert inside(bar) and bar[3] > 0, f"the status bar {bar} is off the screen {screen}"
    with Image.open(shot) as image:
        assert image.width <= SCREEN[0] and image.height <= SCREEN[1]
        colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 50, "the screenshot is blank"
