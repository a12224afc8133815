"""An autosave's sidecar JSON is read through the bounded reader with its own schema: a sidecar
that is damaged, hostile or of the wrong shape is ignored (the pid in the autosave's name and
the file's time stand in), and the autosave itself is still offered for recovery."""

from __future__ import annotations

import json

import pytest
from conftest import dead_pid

from metastudio.app.project import Project, Recovery

NAME = "autosave-{pid}-0123abcd.metastudio"


@pytest.fixture
def autosave(tmp_path):
    """An autosave (of an empty project) left by a session that is no longer running, no sidecar."""
    pid = dead_pid()
    path = tmp_path / "rec" / NAME.format(pid=pid)
    project = Project()
    project.add_class("Only class")
    project.write(path)
    project.close()
    return path, pid


def test_a_good_sidecar_is_used(autosave):
    path, pid = autosave
    other = dead_pid(pid + 1)  # the sidecar's pid wins over the name's
    path.with_suffix(".json").write_text(json.dumps(
        {"pid": other, "project_path": "/home/me/cats.metastudio", "saved_at": "2024-01-02T10:00:00+00:00",
         "a later field": [1]}))
    [found] = Recovery.find(path.parent)
    assert (found.pid, found.project_path, found.saved_at) == (other, "/home/me/cats.metastudio",
                                                                "2024-01-02T10:00:00+00:00")


SIDECARS = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"pid":' * 50_000 + b"1" + b"}" * 50_000,
    "pid-5000-digits": b'{"pid": ' + b"9" * 5000 + b"}",
    "pid-huge": json.dumps({"pid": 2**40}).encode(),
    "pid-negative": json.dumps({"pid": -5}).encode(),
    "pid-text": json.dumps({"pid": "12"}).encode(),
    "pid-true": json.dumps({"pid": True}).encode(),
    "pid-float": b'{"pid": 12.0}',
    "pid-nan": b'{"pid": NaN}',
    "path-number": json.dumps({"project_path": 5}).encode(),
    "path-long": json.dumps({"project_path": "p" * 40_000}).encode(),
    "saved-at-list": json.dumps({"saved_at": ["2024"]}).encode(),
    "saved-at-long": json.dumps({"saved_at": "9" * 1000}).encode(),
    "a-list": b"[1, 2]",
    "a-string": b'"sidecar"',
    "not-json": b"{nope",
    "not-utf8": b'{"project_path": "\xff"}',
    "empty": b"",
    "too-large": b'{"project_path": "' + b"x" * (2 << 20) + b'"}',
}


@pytest.mark.parametrize("name", sorted(SIDECARS))
def test_a_bad_sidecar_is_ignored_and_the_autosave_still_offered(name, autosave):
    path, pid = autosave
    path.with_suffix(".json").write_bytes(SIDECARS[name])
    [found] = Recovery.find(path.parent)
    assert found.path == path and found.pid == pid and found.project_path is None
    assert found.saved_at[:4].isdigit() and len(found.saved_at) < 40  # the file's time, not the sidecar's
    with Project.open(found.path) as restored:
        assert [c.name for c in restored.classes] == ["Only class"]


def test_a_sidecar_that_is_a_folder_is_ignored(autosave):
    path, pid = autosave
    path.with_suffix(".json").mkdir()
    [found] = Recovery.find(path.parent)
    assert found.pid == pid and found.project_path is None


def test_a_sidecar_with_an_odd_time_falls_back_to_the_file_time_for_ordering(autosave):
    path, pid = autosave
    path.with_suffix(".json").write_text(json.dumps({"pid": pid, "saved_at": "not a time"}))
    [found] = Recovery.find(path.parent)
    assert found.saved_at == "not a time" and found.pid == pid
