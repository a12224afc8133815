"""Model files (safetensors + JSON, never pickle), the trainer (events, best model, cancel, NaN,
resume) and the evaluator."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

from metastudio.engine import checkpoint as checkpoint_module
from metastudio.engine.checkpoint import load_model, read_metadata, save_model
from metastudio.engine.control import Control
from metastudio.data.episodes import EpisodeSampler
from metastudio.errors import CheckpointError, TrainingError
from metastudio.engine.evaluator import evaluate, mean_ci95
from metastudio.engine.trainer import (
    CheckpointEvent,
    FinishedEvent,
    StepEvent,
    TrainConfig,
    Trainer,
    ValidationEvent,
)
from metastudio.plugins.testkit import synthetic_dataset


def make_algorithm(host, seed=0, **hparams):
    torch.manual_seed(seed)
    cls, spec = host.algorithm("protonet"), host.backbone("conv4")
    return cls(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams=hparams)


@pytest.fixture
def data():
    ds = synthetic_dataset(classes=12, per_class=8)
    return EpisodeSampler(ds, 5, 1, 3, seed=1), EpisodeSampler(ds, 3, 1, 3, seed=99)


def test_round_trip_gives_identical_predictions_and_metadata(host, data, tmp_path):
    train, val = data
    algo = make_algorithm(host, distance="cosine", temperature=5.0)
    algo.configure_training(10)
    for i in range(3):
        algo.meta_train_step([train.episode(i)])
    algo.eval()
    ep = val.episode(0)
    before = algo.adapt(ep.support).predict_proba(ep.query_images)
    path = save_model(algo, tmp_path / "m.safetensors", history=[{"step": 3, "loss": 1.0}], dataset={"name": "synthetic"})
    loaded = load_model(path, host)
    after = loaded.algorithm.adapt(ep.support).predict_proba(ep.query_images)
    assert torch.allclose(before, after, atol=1e-6)
    meta = read_metadata(path)
    assert meta["algorithm"] == "protonet" and meta["backbone"] == "conv4" and meta["image_size"] == 28
    assert meta["hyperparameters"]["distance"] == "cosine" and meta["hyperparameters"]["temperature"] == 5.0
    assert meta["history"] == [{"step": 3, "loss": 1.0}] and meta["dataset"]["name"] == "synthetic"
    # The file is plain safetensors: a header length, a JSON header, raw tensor bytes -- no pickle.
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert "__metadata__" in header and b"\x80\x04" not in raw[:2]


def test_saved_learner_restores_without_the_support_set(host, data, tmp_path):
    _, val = data
    algo = make_algorithm(host).eval()
    ep = val.episode(1)
    learner = algo.adapt(ep.support)
    path = save_model(algo, tmp_path / "adapted.safetensors", learner=learner)
    loaded = load_model(path, host)
    assert loaded.learner is not None and loaded.learner.class_names == ep.class_names
    assert torch.allclose(loaded.learner.predict_proba(ep.query_images), learner.predict_proba(ep.query_images), atol=1e-6)


def test_the_learner_tensors_are_saved_under_their_names_and_not_as_the_module_state(host, data, tmp_path):
    _, val = data
    algo = make_algorithm(host).eval()
    learner = algo.adapt(val.episode(1).support)
    assert set(learner.learner_state()) == {"prototypes", "open_set_prototypes", "open_set_expected"}
    assert any(k.startswith("algorithm.backbone.") for k in learner.state_dict()), "state_dict is nn.Module's"
    path = save_model(algo, tmp_path / "adapted.safetensors", learner=learner)
    from safetensors.torch import load_file

    saved = load_file(path)
    assert torch.equal(saved["learner.prototypes"], learner.prototypes)
    assert not any(k.startswith("learner.algorithm.") for k in saved)


def test_a_learner_overriding_state_dict_the_old_way_is_saved_with_a_warning(host, data, tmp_path):
    from metastudio.algorithms.base import Learner

    _, val = data
    algo = make_algorithm(host).eval()
    ep = val.episode(1)
    prototypes = algo.adapt(ep.support).prototypes

    class OlderLearner(Learner):
        def state_dict(self):
            return {"prototypes": prototypes}

    with pytest.warns(DeprecationWarning, match="rename state_dict to learner_state"):
        path = save_model(algo, tmp_path / "old.safetensors", learner=OlderLearner(ep.class_names))
    restored = load_model(path, host).learner
    assert torch.equal(restored.prototypes, prototypes)
    assert torch.allclose(restored.predict_proba(ep.query_images), algo.adapt(ep.support).predict_proba(ep.query_images))


def test_bad_model_files_give_clear_errors(host, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors", host)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="not a MetaStudio model file, or it is damaged"):
        load_model(junk, host)
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    with pytest.raises(CheckpointError):
        load_model(pickle_file, host)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="without MetaStudio metadata"):
        load_model(foreign, host)


def test_a_model_of_an_unknown_algorithm_names_it(host, tmp_path):
    algo = make_algorithm(host)
    path = save_model(algo, tmp_path / "m.safetensors")
    meta, tensors = checkpoint_module.load_tensors(path)
    meta["algorithm"] = "not-installed"
    checkpoint_module.save_tensors(path, tensors, meta)
    with pytest.raises(CheckpointError, match="not-installed"):
        load_model(path, host)


def test_a_full_disk_keeps_the_previous_model(host, tmp_path, monkeypatch):
    algo = make_algorithm(host)
    path = save_model(algo, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_model(algo, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def collect(events):
    return lambda e: events.append(e)


def test_trainer_emits_events_validates_and_keeps_the_best(host, data, tmp_path):
    train, val = data
    algo = make_algorithm(host)
    events = []
    out = tmp_path / "best.safetensors"
    result = Trainer(algo, train, TrainConfig(steps=12, val_every=4, val_episodes=6, log_every=2), out,
                     val_sampler=val, listener=collect(events)).run()
    steps = [e for e in events if isinstance(e, StepEvent)]
    vals = [e for e in events if isinstance(e, ValidationEvent)]
    assert [e.step for e in steps] == list(range(2, 13, 2))
    assert all(math.isfinite(e.loss) and 0 <= e.accuracy <= 1 and e.episodes_per_second > 0 for e in steps)
    assert [e.step for e in vals] == [4, 8, 12]
    assert result.best_accuracy == max(e.accuracy for e in vals)
    assert isinstance(events[-1], FinishedEvent) and events[-1].status == "completed"
    meta = read_metadata(out)
    assert meta["best_val_accuracy"] == pytest.approx(result.best_accuracy)
    saved_at = [e.step for e in events if isinstance(e, CheckpointEvent) and e.kind == "best"]
    assert saved_at == [e.step for e in vals if e.improved]
    assert [h["step"] for h in meta["history"]] == [v.step for v in vals if v.step <= saved_at[-1]]


def test_cancel_stops_within_one_step_and_resume_matches_an_uninterrupted_run(host, data, tmp_path):
    train, _ = data
    straight = make_algorithm(host, seed=5)
    Trainer(straight, train, TrainConfig(steps=6, val_every=100, seed=5), tmp_path / "a.safetensors").run()

    interrupted = make_algorithm(host, seed=5)
    control = Control()
    events = []

    def stop_after_three(e):
        events.append(e)
        if isinstance(e, StepEvent) and e.step == 3:
            control.cancel()

    out = tmp_path / "b.safetensors"
    result = Trainer(interrupted, train, TrainConfig(steps=6, val_every=100, log_every=1, seed=5), out,
                     listener=stop_after_three, control=control).run()
    assert result.status == "cancelled" and result.steps_done == 3
    resumed = make_algorithm(host, seed=123)  # other initial weights: everything must come from the checkpoint
    result = Trainer(resumed, train, TrainConfig(steps=6, val_every=100, seed=5), out).run(resume=True)
    assert result.status == "completed" and result.steps_done == 6
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_model(host, data, tmp_path):
    train, val = data
    algo = make_algorithm(host)
    original = algo.meta_train_step
    calls = {"n": 0}

    def poisoned(episodes):
        calls["n"] += 1
        metrics = original(episodes)
        return {**metrics, "loss": float("nan")} if calls["n"] >= 5 else metrics

    algo.meta_train_step = poisoned
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingError, match="became nan at step 5.*best model so far"):
        Trainer(algo, train, TrainConfig(steps=10, val_every=2, val_episodes=3), out, val_sampler=val).run()
    assert read_metadata(out)["trained_steps"] in (2, 4)


def test_pause_blocks_until_resumed():
    import threading
    import time

    control = Control()
    control.pause()
    finished = []
    worker = threading.Thread(target=lambda: finished.append(control.should_stop()))
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive() and control.paused
    control.resume()
    worker.join(2)
    assert finished == [False]


def test_evaluator_mean_and_confidence_interval(host, data):
    _, val = data
    algo = make_algorithm(host)
    result = evaluate(algo, val, 20)
    assert result.episodes == 20 and len(result.per_episode) == 20
    mean, ci = mean_ci95(result.per_episode)
    assert result.accuracy == pytest.approx(100 * mean) and result.ci95 == pytest.approx(100 * ci)
    assert result.line().startswith("accuracy ") and "(20 episodes)" in result.line()
    assert evaluate(algo, val, 20).accuracy == result.accuracy  # fixed episodes, deterministic
    assert mean_ci95([1.0, 0.0]) == (0.5, pytest.approx(1.96 * math.sqrt(0.5 / 2)))


def test_cancel_during_validation_validates_on_resume_and_matches_an_uninterrupted_run(host, data, tmp_path):
    train, val = data
    config = dict(steps=6, val_every=3, val_episodes=4, log_every=1, seed=2)
    straight = make_algorithm(host, seed=2)
    reference = Trainer(straight, train, TrainConfig(**config), tmp_path / "a.safetensors", val_sampler=val).run()

    control = Control()

    def cancel_at_validation(e):
        if isinstance(e, StepEvent) and e.step == 3:
            control.cancel()  # the evaluator sees it before its first episode

    first = Trainer(make_algorithm(host, seed=2), train, TrainConfig(**config), tmp_path / "b.safetensors",
                    val_sampler=val, listener=cancel_at_validation, control=control).run()
    assert first.status == "cancelled" and first.steps_done == 3 and first.history == []
    events = []
    resumed = make_algorithm(host, seed=7)
    result = Trainer(resumed, train, TrainConfig(**config), tmp_path / "b.safetensors", val_sampler=val,
                     listener=collect(events)).run(resume=True)
    assert [e.step for e in events if isinstance(e, ValidationEvent)] == [3, 6]
    assert [(h["step"], h["val_accuracy"]) for h in result.history] == [(h["step"], h["val_accuracy"]) for h in reference.history]
    assert [h["loss"] for h in result.history] == pytest.approx([h["loss"] for h in reference.history], abs=1e-5)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_a_frozen_backbone_is_neither_trained_nor_saved(host, data, tmp_path, seeded_conv4):
    _, val = data
    spec = seeded_conv4
    backbone = spec.build(1, 28)
    reference = {k: v.clone() for k, v in backbone.state_dict().items()}
    cls = host.algorithm("protonet")
    algo = cls(backbone, backbone_name=spec.name, image_size=28, channels=1, freeze_backbone=True)
    algo.train()
    assert not algo.backbone.training and not any(p.requires_grad for p in algo.backbone.parameters())
    ep = val.episode(0)
    features = algo.embed(ep.query_images)
    assert not features.requires_grad
    assert all(torch.equal(v, reference[k]) for k, v in algo.backbone.state_dict().items()), "batch norm must not move"
    assert not any(k.startswith("backbone.") for k in algo.state_dict())
    with pytest.raises(ValueError, match="nothing to train"):
        algo.configure_training(5)
    path = save_model(algo, tmp_path / "frozen.safetensors")
    meta, tensors = checkpoint_module.load_tensors(path)
    assert meta["backbone_frozen"] is True and not any(k.startswith("backbone.") for k in tensors)
    loaded = load_model(path, host).algorithm  # the backbone is rebuilt by its (pretrained) plugin
    assert loaded.backbone_frozen
    a = algo.adapt(ep.support).predict_proba(ep.query_images)
    b = loaded.adapt(ep.support).predict_proba(ep.query_images)
    assert torch.allclose(a, b, atol=1e-6)


def test_a_randomly_initialised_backbone_cannot_be_frozen_away(host, data, tmp_path, capsys):
    from metastudio.cli import main

    from conftest import make_class_tree

    algo = host.algorithm("protonet")(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28,
                                      channels=1, freeze_backbone=True)
    path = save_model(algo, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="no pretrained weights"):
        load_model(path, host)
    root = make_class_tree(tmp_path / "d", classes=3, per_class=3)
    assert main(["train", "--algorithm", "protonet", "--backbone", "conv4", "--freeze-backbone", "--dataset", "folder",
                 "--root", str(root), "--episodes", "1", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "needs a pretrained backbone" in capsys.readouterr().err
