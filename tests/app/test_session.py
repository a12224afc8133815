"""ClassifierSession: adapt-and-predict on files, as the app (and other front ends) use it."""

from __future__ import annotations

import pytest

from conftest import make_class_tree


@pytest.fixture
def session(host):
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.session import ClassifierSession

    s = ClassifierSession(host, "cpu")
    s.load(resolve_model("protonet-omniglot"))
    return s


def spec(root, classes, per_class=5):
    return [(f"class{c:02d}", [(f"{c}-{i}", root / f"class{c:02d}" / f"img{i:03d}.png") for i in range(per_class)])
            for c in range(classes)]


def test_hints_before_there_are_two_classes_with_images(session, tmp_path):
    from metastudio.app.session import ClassifierSession

    root = make_class_tree(tmp_path / "t", classes=2, per_class=6)
    assert session.run([], []).hint.startswith("Add at least two classes")
    assert "second class" in session.run(spec(root, 1), []).hint
    empty = [("a", []), ("b", [])]
    assert session.run(empty, []).status == "hint"
    r = session.run([("a", spec(root, 1)[0][1]), ("b", [])], [])
    assert r.status == "hint" and "'b'" in r.hint
    assert isinstance(session, ClassifierSession)


def test_predictions_problems_and_notes(session, tmp_path):
    root = make_class_tree(tmp_path / "t", classes=3, per_class=6)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    support = spec(root, 3) + [("empty class", [])]
    support[0][1].append(("bad", bad))
    queries = [(f"q{c}", root / f"class{c:02d}" / "img005.png") for c in range(3)] + [("gone", tmp_path / "missing.png")]
    r = session.run(support, queries)
    assert r.status == "ok"
    assert r.class_names == ["class00", "class01", "class02"]
    assert set(r.probabilities) == {"q0", "q1", "q2"}
    for probs in r.probabilities.values():
        assert len(probs) == 3 and sum(probs) == pytest.approx(1, abs=1e-5)
    assert set(r.problems) == {"bad", "gone"}
    assert "'empty class'" in r.notes[0]
    # everything is plain Python (safe to send across threads)
    assert all(type(p) is float for probs in r.probabilities.values() for p in probs)
    # the same request gives the same answer; only new files are decoded again
    decoded = session._store.decoded
    again = session.run(support, queries)
    assert again.probabilities == r.probabilities and session._store.decoded == decoded


def test_hyperparameter_overrides_and_reload(session, tmp_path):
    from metastudio.app.catalogue import resolve_model
    from metastudio.errors import FixedHyperParameterError

    path = resolve_model("protonet-omniglot")
    info = session.load(path, {"distance": "cosine"})
    assert info.hyperparameters["distance"] == "cosine"
    assert session.load(path, {"distance": "cosine"}) is info  # cached
    with pytest.raises(ValueError, match="distance must be one of"):
        session.load(path, {"distance": "manhattan"})
    with pytest.raises(FixedHyperParameterError, match="feature_transform is fixed by the trained model"):
        session.load(path, {"feature_transform": "cl2n"})  # needs a stored feature mean the model lacks
    with pytest.raises(Exception, match="cannot be read"):
        session.load(tmp_path / "nope.safetensors")


def test_thumbnails(tmp_path):
    from metastudio.errors import ImageLoadError
    from metastudio.app.session import thumbnail_rgb

    root = make_class_tree(tmp_path / "t", classes=1, per_class=1, size=300)
    data, w, h = thumbnail_rgb(root / "class00" / "img000.png", 64)
    assert (w, h) == (64, 64) and len(data) == 64 * 64 * 3
    (tmp_path / "x.jpg").write_text("no")
    with pytest.raises(ImageLoadError):
        thumbnail_rgb(tmp_path / "x.jpg")


def test_adapting_then_classifying_gives_what_run_gives(session, host, tmp_path):
    """adapt_to (decoded support images) then classify (files) is run in two steps."""
    from metastudio.app.session import ClassifierSession
    from metastudio.data.datasets import load_class_folders

    root = make_class_tree(tmp_path / "t", classes=3, per_class=6)
    queries = [(f"q{c}", root / f"class{c:02d}" / "img005.png") for c in range(3)] + [("gone", tmp_path / "no.png")]
    whole = session.run(spec(root, 3), queries)
    assert session.classify(queries).probabilities == whole.probabilities  # run leaves its classifier in place

    steps = ClassifierSession(host, "cpu")
    info = steps.load(session.info.path)
    assert steps.classify(queries).status == "hint"
    ds = load_class_folders(root, image_size=info.image_size, channels=info.channels, use_cache=False, max_per_class=5)
    assert steps.adapt_to([ds.class_images(c) for c in range(3)], ds.class_names) == []  # no losses: one pass
    parts = steps.classify(queries)
    assert parts.status == "ok" and parts.class_names == whole.class_names == ["class00", "class01", "class02"]
    assert parts.probabilities == whole.probabilities and parts.unsure == whole.unsure
    assert set(parts.problems) == {"gone"}


def test_the_classes_a_model_file_holds(session, host, tmp_path):
    from metastudio.app.session import ClassifierSession
    from metastudio.engine.checkpoint import save_model

    root = make_class_tree(tmp_path / "t", classes=2, per_class=6)
    queries = [(f"q{c}", root / f"class{c:02d}" / "img005.png") for c in range(2)]
    adapted = session.run(spec(root, 2), queries)
    path = save_model(session.algorithm, tmp_path / "classes.safetensors", learner=session.learner)
    assert not session.use_saved_classes() and session.classify(queries).status == "hint"  # its file holds none

    other = ClassifierSession(host, "cpu")
    other.load(path)
    assert other.learner is None and other.classify(queries).status == "hint"  # nothing adapted yet
    assert other.use_saved_classes()
    result = other.classify(queries)
    assert result.class_names == ["class00", "class01"]
    for image_id, probs in result.probabilities.items():
        assert probs == pytest.approx(adapted.probabilities[image_id], abs=1e-6)


def test_write_predictions_takes_a_result_or_its_dict(session, tmp_path):
    import csv

    from metastudio.app.session import write_predictions

    from PIL import Image

    root = make_class_tree(tmp_path / "t", classes=2, per_class=6)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    queries = [("a", root / "class00" / "img005.png"), ("t", tiny), ("gone", tmp_path / "no.png")]
    result = session.run(spec(root, 2), queries)
    assert "t" in result.unsure and "gone" in result.problems
    labels = [("gone", "no.png"), ("t", "tiny.png"), ("a", "a.png")]
    for given, name in ((result, "r.csv"), (result.as_dict(), "d.csv")):
        path = write_predictions(tmp_path / name, given, labels)
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        assert [r["file"] for r in rows] == ["tiny.png", "a.png"]  # the order given; no row for no.png
        assert rows[0]["unsure"] == result.unsure["t"] and rows[1]["unsure"] == ""
        assert float(rows[1]["class00"]) == pytest.approx(result.probabilities["a"][0], abs=1e-6)
    assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
