"""``metastudio --screenshot FILE`` tells the truth, through the installed command: when the
algorithm fails to adapt it prints the window's error at once (not after waiting for predictions
that will not come), saves the picture of that error and exits 1; a screenshot that can't be
written is an error too, and "screenshot saved" is said only of a file that exists."""

from __future__ import annotations

import os
import subprocess
import time

import faulty_plugins
from conftest import METASTUDIO_COMMAND
from gui_helpers import opened


def _window(tmp_path, *argv: str, site=None) -> subprocess.CompletedProcess:
    """Run the window command headless (Qt's offscreen platform), as ``--screenshot`` is used."""
    env = faulty_plugins.env(site) if site is not None else dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"),
               METASTUDIO_RECOVERY_DIR=str(tmp_path / "recovery"))
    return subprocess.run([METASTUDIO_COMMAND, *argv, "--device", "cpu"], env=env, capture_output=True, text=True,
                          timeout=170)


def test_a_failing_adaptation_is_printed_at_once_and_exits_1(tmp_path):
    site = tmp_path / "site"
    faulty_plugins.install(site, kinds=("raising_adapt",))
    model = faulty_plugins.make_model(site, "raising_adapt", tmp_path / "fault.safetensors", tmp_path)
    shot = tmp_path / "out.png"
    started = time.monotonic()
    done = _window(tmp_path, "--support", str(tmp_path / "support"), "--query", str(tmp_path / "query"),
                   "--model", str(model), "--screenshot", str(shot), site=site)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert took < 90, f"it waited {took:.0f} s"  # the predictions' wait is 180 s
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors, done.stderr[-3000:]
    said = errors[0]
    assert said.startswith("error: Could not learn the classes: ")
    assert faulty_plugins.RAISED["raising_adapt"] in said and faulty_plugins.origin_words("raising_adapt") in said
    assert "no predictions" not in done.stderr and "screenshot saved" not in done.stderr
    # The picture shows the error (kept for a bug report), and says it is one.
    assert f"screenshot of the error saved to {shot}" in done.stderr
    assert opened(shot.read_bytes()).width > 100


def test_a_screenshot_into_a_missing_folder_is_refused_before_the_window_opens(tmp_path):
    shot = tmp_path / "no-such-folder" / "out.png"
    done = _window(tmp_path, "--model", "protonet-omniglot", "--screenshot", str(shot))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: could not write the screenshot to {shot}: the folder {shot.parent} does not exist")
    assert "screenshot saved" not in done.stderr and not shot.parent.exists()


def test_a_screenshot_that_cannot_be_written_is_an_error_not_saved(tmp_path):
    from conftest import make_class_tree

    support = make_class_tree(tmp_path / "support", classes=2, per_class=2, size=28)
    shot = tmp_path / "out.xyz"  # no picture format is named so
    done = _window(tmp_path, "--support", str(support), "--model", "protonet-omniglot", "--screenshot", str(shot))
    assert done.returncode == 1, done.stderr[-3000:]
    assert (f"error: could not write the screenshot to {shot}: pictures named '.xyz' can't be written; "
            "end the name with .png") in done.stderr
    assert "screenshot saved" not in done.stderr and not shot.exists()
