"""Hostile model files: metadata that does not fit the declared schema, and non-finite weights,
are refused with a CheckpointError naming the file and the field, by the Python API and by
``metastudio info``; the shipped models and the files MetaStudio writes still fit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import METASTUDIO_COMMAND
import torch
from safetensors.torch import save_file

from metastudio.engine import checkpoint as checkpoint_module
from metastudio.engine.checkpoint import load_model, load_tensors, read_metadata, save_model, save_tensors
from metastudio.engine.model_schema import MAX_DEPTH, parse_metadata
from metastudio.errors import CheckpointError
from metastudio.plugins.testkit import synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A protonet model file with a saved learner of 3 classes: (its metadata, its tensors)."""
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.plugins import get_host, reset_host

    reset_host()
    host = get_host()
    torch.manual_seed(0)
    cls, spec = host.algorithm("protonet"), host.backbone("conv4")
    algo = cls(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams={}).eval()
    episode = EpisodeSampler(synthetic_dataset(classes=6, per_class=4), 3, 1, 1, seed=1).episode(1)
    path = save_model(algo, tmp_path_factory.mktemp("base") / "base.safetensors", learner=algo.adapt(episode.support),
                      history=[{"step": 1, "loss": 1.0}], dataset={"name": "synthetic", "init": {"file": "x"}},
                      extra={"trained_steps": 1, "best_val_accuracy": None})
    reset_host()
    return load_tensors(path)


def _with(meta, **changes):
    return {**meta, **changes}


#: name -> (how to change the base metadata: a function of it, or a raw JSON text), words the error must hold
HOSTILE = {
    "list": ('[1, 2, 3]', "must be an object, not a list"),
    "string": ('"hello"', "must be an object, not 'hello'"),
    "deep": ("[" * 100_000 + "]" * 100_000, f"nests more than {MAX_DEPTH} levels"),
    "deep-field": (lambda m: _with(m, dataset={"a": json.loads("[" * 200 + "]" * 200)}), "levels"),
    "algorithm-list": (lambda m: _with(m, algorithm=["protonet"]), "field 'algorithm' must be a string, not a list"),
    "channels": (lambda m: _with(m, channels=-2), "field 'channels' must be 1 or 3, not -2"),
    "channels-bool": (lambda m: _with(m, channels=True), "field 'channels' must be a whole number, not true"),
    "image-size": (lambda m: _with(m, image_size=10**9), "field 'image_size' must be at most 4096, not 1000000000"),
    "image-size-missing": (lambda m: {k: v for k, v in m.items() if k != "image_size"}, "field 'image_size' is missing"),
    "hparams-list": (lambda m: _with(m, hyperparameters=[1]), "field 'hyperparameters' must be an object, not a list"),
    "hparam-type": (lambda m: _with(m, hyperparameters={"lr": [0.1]}),
                    "field 'hyperparameters.lr' must be a string, a number, true/false or null, not a list"),
    "hparam-huge": (lambda m: _with(m, hyperparameters={"lr": 1e300}), "field 'hyperparameters.lr' must be at most 1e+12"),
    "class-names-str": (lambda m: _with(m, class_names="abc"), "field 'class_names' must be a list or null, not 'abc'"),
    "class-name-int": (lambda m: _with(m, class_names=["a", 2, "c"]), "field 'class_names[1]' must be a string, not 2"),
    "class-names-few": (lambda m: _with(m, class_names=["a", "b"]), "field 'class_names' must name 3 classes"),
    "huge-int": ('{"format": "metastudio-model", "channels": 1' + "0" * 5000 + "}",
                 "field 'channels' holds a number of 5001 digits (100000000000...), more than the 40 allowed"),
    "huge-float": ('{"format": "metastudio-model", "image_size": 1e999}', "field 'image_size' holds a number too large to use (1e999)"),
    "nan": ('{"format": "metastudio-model", "history": [{"loss": NaN}]}', "field 'history[0].loss' holds NaN, which is not a usable number"),
    "optimizer-state": (lambda m: _with(m, optimizer={"param_groups": [], "state": []}),
                        "field 'optimizer.state' must be an object, not a list"),
}


def _write(path: Path, meta, tensors, change) -> Path:
    if callable(change):
        return save_tensors(path, tensors, change(dict(meta)))
    save_file(tensors, str(path), metadata={"metastudio": change})
    return path


@pytest.fixture(scope="module")
def hostile_files(adapted, tmp_path_factory):
    meta, tensors = adapted
    folder = tmp_path_factory.mktemp("hostile")
    return {name: _write(folder / f"{name}.safetensors", meta, tensors, change) for name, (change, _) in HOSTILE.items()}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_metadata_is_refused_naming_file_and_field(name, hostile_files, host):
    path, words = hostile_files[name], HOSTILE[name][1]
    for read in (read_metadata, lambda p: load_model(p, host)):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        assert str(path) in str(caught.value) and words in str(caught.value)


#: One hostile file of each kind for the installed command (each run starts torch: about 2 s of
#: CPU); the test above checks every one through the API, and benchmarks/tools/robustness.py
#: runs the model files of tests/corpus.py through the command.
THROUGH_THE_COMMAND = ("list", "deep", "huge-int", "class-names-few", "hparam-type")


def test_metastudio_info_says_what_is_wrong_in_one_line(hostile_files):
    """Hostile files through the installed command: exit 1, one line, no traceback."""
    runs = {name: subprocess.Popen([METASTUDIO_COMMAND, "info", str(hostile_files[name])], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in THROUGH_THE_COMMAND}
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert run.returncode == 1 and out == "", (name, err)
        assert len(lines) == 1 and "Traceback" not in err, (name, err)
        assert str(hostile_files[name]) in lines[0] and HOSTILE[name][1] in lines[0], (name, lines[0])


def test_non_finite_weights_are_refused_naming_the_tensor(adapted, host, tmp_path):
    meta, tensors = adapted
    for bad in (float("nan"), float("inf")):
        broken = dict(tensors)
        name = next(k for k, v in tensors.items() if v.is_floating_point() and not k.startswith("learner."))
        broken[name] = tensors[name].clone()
        broken[name].view(-1)[0] = bad
        path = save_tensors(tmp_path / "nan.safetensors", broken, meta)
        with pytest.raises(CheckpointError, match=rf"'{path}'.*tensor '{name}' holds NaN or infinite values"):
            load_model(path, host)
    assert read_metadata(path)["algorithm"] == "protonet"  # the metadata alone is still readable


def test_files_metastudio_writes_still_open(adapted, host, tmp_path):
    meta, tensors = adapted
    loaded = load_model(save_tensors(tmp_path / "m.safetensors", tensors, meta), host)
    assert loaded.learner is not None and list(loaded.learner.class_names) == meta["class_names"]
    extra = _with(meta, future_field={"anything": [1, "two"]}, stored_dtype="float16",
                  adaptation_defaults={"changed": {"adapt_steps": 1}}, optimizer={"param_groups": [{}], "state": {"0": {}}},
                  trainer={"step": 3, "config": {"seed": 2**127}})
    assert read_metadata(save_tensors(tmp_path / "extra.safetensors", tensors, extra))["future_field"]["anything"] == [1, "two"]
    for shipped in sorted((ROOT / "resources" / "models").glob("*.safetensors")):
        assert read_metadata(shipped)["format"] == "metastudio-model"
        checkpoint_module.load_tensors(shipped)  # finite weights


def test_nesting_up_to_the_limit_opens_and_one_more_level_is_refused():
    def document(depth):
        return json.dumps({"format": "metastudio-model", "algorithm": "a", "backbone": "b", "image_size": 1,
                           "channels": 1, "deep": json.loads("[" * (depth - 1) + "]" * (depth - 1)),
                           "created": "[[[[ brackets in a string do not count \\\" [[["})

    assert parse_metadata(document(MAX_DEPTH), "f")["image_size"] == 1
    with pytest.raises(CheckpointError, match=f"model file 'f': its metadata nests more than {MAX_DEPTH} levels"):
        parse_metadata(document(MAX_DEPTH + 1), "f")


def test_random_json_is_refused_only_with_checkpoint_error():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(st.sampled_from(["format", "channels", "image_size", "algorithm",
                                                                "backbone", "hyperparameters", "class_names", "x"]),
                                               inner, max_size=6), max_leaves=20)
    base = {"format": "metastudio-model", "algorithm": "a", "backbone": "b", "image_size": 28, "channels": 1}

    @hypothesis.settings(max_examples=150, deadline=None, database=None)
    @hypothesis.given(documents, st.booleans())
    def check(document, over_base):
        if over_base and isinstance(document, dict):
            document = {**base, **document}
        try:
            parse_metadata(json.dumps(document), "f")
        except CheckpointError as e:
            assert "'f'" in str(e)

    check()


@pytest.mark.parametrize("change, words", [
    ({"hyperparameters": {"lr": "fast"}}, "the model's hyperparameters do not fit protonet: lr must be of type"),
    ({"hyperparameters": {"no_such": 1}}, "protonet has no hyperparameter no_such"),
    ({"algorithm": "not-installed"}, "not-installed"),
])
def test_metadata_that_fits_the_schema_but_not_the_algorithm_names_the_file(change, words, adapted, host, tmp_path):
    meta, tensors = adapted
    path = save_tensors(tmp_path / "m.safetensors", tensors, _with(meta, **change))
    with pytest.raises(CheckpointError) as caught:
        load_model(path, host)
    assert str(caught.value).startswith(f"model file '{path}': ") and words in str(caught.value)


# ----------------------------------------------------------------------------------------------
# Class names against the saved learner of each built-in family


@pytest.fixture(scope="module")
def learners(tmp_path_factory):
    """algorithm name -> (metadata, tensors) of a model file with a learner adapted to 3 classes
    of 2 shots (6 support images), for each of the nine built-in algorithms (Conv-4, 28 px)."""
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.plugins import get_host, reset_host

    from conftest import BUILTIN_ALGORITHMS

    reset_host()
    host, threads = get_host(), torch.get_num_threads()
    torch.set_num_threads(1)
    folder, out = tmp_path_factory.mktemp("learners"), {}
    try:
        episode = EpisodeSampler(synthetic_dataset(classes=6, per_class=4), 3, 2, 1, seed=1).episode(1)
        for name in BUILTIN_ALGORITHMS:
            torch.manual_seed(0)
            cls, spec = host.algorithm(name), host.backbone("conv4")
            algo = cls(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams={}).eval()
            out[name] = load_tensors(save_model(algo, folder / f"{name}.safetensors", learner=algo.adapt(episode.support)))
    finally:
        torch.set_num_threads(threads)
        reset_host()
    return out


#: algorithm -> (a number of class names its saved 3-class learner cannot have, the tensor the error names)
WRONG_COUNT = {
    "protonet": (2, "learner.prototypes"),
    "relationnet": (4, "learner.class_embeddings"),
    "matchingnet": (2, "learner.onehot"),
    "siamese": (7, "learner.support"),  # more classes than support images
    "maml": (2, "learner.fast.head_weight"),
    "reptile": (4, "learner.fast.head_weight"),
    "metalstm": (2, "learner.fast.head_weight"),
    "mann": (21, "learner.label"),  # more classes than its 20 label positions
    "metanet": (21, "learner.example.out.weight"),
}


@pytest.mark.parametrize("algorithm", sorted(WRONG_COUNT))
def test_class_names_that_disagree_with_the_learner_are_refused_naming_the_tensor(algorithm, learners, host, tmp_path):
    meta, tensors = learners[algorithm]
    count, tensor = WRONG_COUNT[algorithm]
    assert len(meta["class_names"]) == 3
    loaded = load_model(save_tensors(tmp_path / "good.safetensors", tensors, meta), host)
    assert loaded.learner.predict_proba(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 3)
    path = save_tensors(tmp_path / "bad.safetensors", tensors, _with(meta, class_names=[f"c{i}" for i in range(count)]))
    for read in (read_metadata, lambda p: load_model(p, host)):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"model file '{path}': field 'class_names' must name ") and f"not {count}" in message
        assert f"tensor '{tensor}'" in message, message


def test_metanet_needs_a_support_image_per_class(learners, host, tmp_path):
    meta, tensors = learners["metanet"]
    path = save_tensors(tmp_path / "m.safetensors", tensors, _with(meta, class_names=list("abcdefg")))
    with pytest.raises(CheckpointError, match=r"must name at most 6 classes \(tensor 'learner.keys' holds 6 support "
                                              r"images\), not 7"):
        load_model(path, host)


def test_support_tensors_that_disagree_with_each_other_are_refused(learners, host, tmp_path):
    meta, tensors = learners["matchingnet"]
    broken = {**tensors, "learner.onehot": tensors["learner.onehot"][:5].clone()}
    path = save_tensors(tmp_path / "m.safetensors", broken, meta)
    with pytest.raises(CheckpointError, match=rf"'{path}': tensor 'learner.onehot' holds 5 support images and "
                                              r"tensor 'learner.support' 6; they must hold the same ones"):
        load_model(path, host)


def test_a_tensor_without_the_class_axis_is_refused(learners, host, tmp_path):
    meta, tensors = learners["maml"]
    broken = {**tensors, "learner.fast.head_bias": torch.zeros(3)}
    path = save_tensors(tmp_path / "m.safetensors", broken, meta)
    with pytest.raises(CheckpointError, match=r"tensor 'learner.fast.head_bias' has shape \[3\], which holds no classes"):
        read_metadata(path)


def test_siamese_support_labels_must_name_a_class(learners):
    from metastudio.engine.model_schema import check_labels

    meta, tensors = learners["siamese"]
    check_labels(meta, tensors, "m")  # the saved labels are 0, 1, 2
    assert sorted(set(tensors["learner.labels"].tolist())) == [0, 1, 2]
    with pytest.raises(CheckpointError, match=r"'m': tensor 'learner.labels' holds class 2, but field 'class_names' "
                                              r"names 2 classes \(0 to 1\)"):
        check_labels(_with(meta, class_names=["a", "b"]), tensors, "m")
    negative = {**tensors, "learner.labels": tensors["learner.labels"] - 1}
    with pytest.raises(CheckpointError, match="holds class -1"):
        check_labels(meta, negative, "m")
    with pytest.raises(CheckpointError, match="must hold whole numbers"):
        check_labels(meta, {"learner.labels": tensors["learner.labels"].float()}, "m")
