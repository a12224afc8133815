"""Training on labelled batches over every training class (trains_on "batches" and
"batches+episodes"): the batch sampler, the trainer's two kinds of steps, resume, what the model
file keeps, and the two built-in algorithms that train so (SimpleShot, Baseline++)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import torch
from conftest import METASTUDIO_COMMAND
from torch import nn

from metastudio.api import Algorithm, LabelledBatch
from metastudio.app.runs import TrainingPlan, prepare_run
from metastudio.data.batches import BatchSampler
from metastudio.data.episodes import EVAL_SEED, EpisodeSampler
from metastudio.engine.checkpoint import load_model, read_metadata
from metastudio.engine.control import Control
from metastudio.engine.evaluator import evaluate
from metastudio.engine.trainer import StepEvent, TrainConfig, Trainer
from metastudio.errors import DatasetError
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.baselinepp import BaselinePlusPlus
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks
from metastudio_builtins.algorithms.simpleshot import SimpleShot


def build(host, cls, seed=0, **hparams):
    torch.manual_seed(seed)
    return cls(host.backbone("conv4").build(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams=hparams)


# -- the sampler ---------------------------------------------------------------------------------
def test_batches_cover_every_image_once_per_epoch_and_repeat_from_the_seed():
    ds = synthetic_dataset(classes=5, per_class=6)
    sampler = BatchSampler(ds, batch_size=7, seed=3)
    rows = [sampler.rows(i) for i in range(len(sampler) * 2)]
    first_epoch = torch.cat([torch.as_tensor(r) for r in rows])[:30]
    assert sorted(first_epoch.tolist()) == list(range(30))  # every image once in the first 30 places
    again = BatchSampler(ds, batch_size=7, seed=3)
    assert all((again.rows(i) == rows[i]).all() for i in reversed(range(len(rows))))  # any order of asking
    assert not (BatchSampler(ds, 7, seed=4).rows(0) == rows[0]).all()
    batch = sampler.batch(2)
    assert batch.images.shape == (7, 1, 28, 28) and batch.classes == 5
    for image, label in zip(batch.images, batch.labels):  # a label is its image's class in the dataset
        assert any(torch.equal(image, other) for other in ds.class_images(int(label)))


def test_a_batch_sampler_refuses_what_cannot_make_batches():
    ds = synthetic_dataset(classes=5, per_class=2)
    for size in (0, -3, 2.5, True):
        with pytest.raises(DatasetError, match="batch size"):
            BatchSampler(ds, size)
    with pytest.raises(DatasetError, match="at least 2 classes"):
        BatchSampler(ds.subset([0]), 4)


# -- the contract ----------------------------------------------------------------------------------
def test_an_algorithm_that_says_it_trains_on_batches_must_have_a_batch_step():
    with pytest.raises(TypeError, match="'halfdone'.*needs a batch_train_step"):
        type("HalfDone", (PrototypicalNetworks,), {"name": "halfdone", "trains_on": "batches+episodes"})
    with pytest.raises(TypeError, match="trains_on must be one of"):
        type("Odd", (PrototypicalNetworks,), {"name": "odd", "trains_on": "pictures"})
    with pytest.raises(TypeError, match="needs a meta_train_step"):
        type("NoEpisodes", (Algorithm,), {"name": "noepisodes", "adapt": lambda self, s, p=None: None})


def test_the_trainer_refuses_steps_that_do_not_fit_the_algorithm(host, tmp_path):
    ds = synthetic_dataset(classes=6, per_class=4)
    episodes, batches = EpisodeSampler(ds, 3, 1, 1), BatchSampler(ds, 8)
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="trains on labelled batches only"):
        Trainer(build(host, SimpleShot), None, TrainConfig(steps=4, batch_steps=2), out, batch_sampler=batches)
    with pytest.raises(ValueError, match="trains on episodes only"):
        Trainer(build(host, PrototypicalNetworks), episodes, TrainConfig(steps=4, batch_steps=2), out,
                batch_sampler=batches)
    with pytest.raises(ValueError, match="need a batch sampler"):
        Trainer(build(host, SimpleShot), None, TrainConfig(steps=4, batch_steps=4), out)


class PretrainedProto(PrototypicalNetworks):
    """Prototypical Networks with a pretraining stage on batches (a linear head over every class)."""

    name = "pretrainedproto"
    trains_on = "batches+episodes"

    def start_batch_training(self, classes):
        self.training_modules["head"] = nn.Linear(self.backbone.out_features, classes)

    def batch_train_step(self, batch: LabelledBatch):
        logits = self.training_modules["head"](Algorithm.embed(self, batch.images))
        loss = nn.functional.cross_entropy(logits, batch.labels)
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == batch.labels).float().mean())}


def test_batches_then_episodes_labels_each_kind_and_the_model_file_leaves_the_head_out(host, tmp_path):
    ds = synthetic_dataset(classes=8, per_class=6)
    val = EpisodeSampler(synthetic_dataset(classes=5, per_class=4, seed=1), 3, 1, 2, seed=EVAL_SEED)
    events = []
    algo = build(host, PretrainedProto)
    out = tmp_path / "m.safetensors"
    Trainer(algo, EpisodeSampler(ds, 4, 1, 2), TrainConfig(steps=6, batch_steps=3, log_every=2, val_every=3,
                                                           val_episodes=2),
            out, val_sampler=val, batch_sampler=BatchSampler(ds, 8), listener=events.append).run()
    steps = [(e.step, e.kind) for e in events if isinstance(e, StepEvent)]
    assert steps == [(2, "batch"), (3, "batch"), (4, "episode"), (6, "episode")]  # the stage change ends a window
    history = read_metadata(out)["history"]
    assert [(h["step"], h["kind"]) for h in history][:2] == [(3, "batch"), (6, "episode")][: len(history)]
    loaded = load_model(out, SimpleNamespace(algorithm=lambda name: PretrainedProto, backbone=host.backbone))
    assert not any(k.startswith("training_modules.") for k in loaded.algorithm.state_dict())
    assert "head" not in loaded.algorithm.training_modules  # only training had it


@pytest.mark.parametrize("cls", [SimpleShot, BaselinePlusPlus])
def test_resumed_batch_training_matches_an_uninterrupted_run(host, tmp_path, cls):
    ds = synthetic_dataset(classes=6, per_class=5)

    def run(algo, out, control=None, listener=None, resume=False):
        return Trainer(algo, None, TrainConfig(steps=6, batch_steps=6, val_every=100, log_every=1, seed=2), out,
                       batch_sampler=BatchSampler(ds, 8, seed=2), control=control, listener=listener).run(resume)

    straight = build(host, cls, seed=1)
    run(straight, tmp_path / "a.safetensors")
    control = Control()
    interrupted = build(host, cls, seed=1)
    result = run(interrupted, tmp_path / "b.safetensors", control,
                 lambda e: control.cancel() if isinstance(e, StepEvent) and e.step == 3 else None)
    assert result.steps_done == 3
    resumed = build(host, cls, seed=99)  # everything, the training head too, comes from the checkpoint
    assert run(resumed, tmp_path / "b.safetensors", resume=True).steps_done == 6
    with straight.with_training_modules(), resumed.with_training_modules():
        a, b = straight.state_dict(), resumed.state_dict()
    assert any(k.startswith("training_modules.") for k in a)
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name


# -- SimpleShot and Baseline++ -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SimpleShot, BaselinePlusPlus])
def test_batch_trained_algorithms_learn_and_beat_the_untrained_network(host, tmp_path, cls):
    train = synthetic_dataset(classes=10, per_class=8)
    test = EpisodeSampler(synthetic_dataset(classes=8, per_class=6, seed=7), 5, 1, 3, seed=EVAL_SEED)
    specs = test.fixed(20)
    algo = build(host, cls, lr=3e-3)
    before = evaluate(algo, test, specs).accuracy
    events = []
    Trainer(algo, None, TrainConfig(steps=40, batch_steps=40, val_every=100, log_every=10), tmp_path / "m.safetensors",
            batch_sampler=BatchSampler(train, 16), listener=events.append).run()
    losses = [e.loss for e in events if isinstance(e, StepEvent)]
    assert losses[-1] < losses[0] and all(e.kind == "batch" for e in events if isinstance(e, StepEvent))
    after = evaluate(algo, test, specs).accuracy
    assert after > before and after > 60, (before, after)


def test_simpleshot_keeps_the_centring_mean_of_the_trained_network(host):
    algo = build(host, SimpleShot)
    ds = synthetic_dataset(classes=6, per_class=5)
    algo.prepare_batch_training(6)
    algo.configure_training(20)
    sampler = BatchSampler(ds, 10)
    for step in range(20):
        algo.batch_train_step(sampler.batch(step))
    with torch.inference_mode(), algo.evaluating():
        true_mean = Algorithm.embed(algo, ds.images).mean(0)
    assert torch.nn.functional.cosine_similarity(algo.feature_mean, true_mean, dim=0) > 0.95


@pytest.mark.parametrize("cls", [SimpleShot, BaselinePlusPlus])
def test_batch_trained_algorithms_pass_the_test_kit(cls, tmp_path):
    check_algorithm(cls, tmp_path=tmp_path, hparams={"lr": 3e-3})


def test_baselinepp_fine_tunes_under_inference_mode_and_reports_each_step(host):
    algo = build(host, BaselinePlusPlus, adapt_steps=5).eval()
    episode = EpisodeSampler(synthetic_dataset(classes=4, per_class=3), 3, 2, 1).episode(0)
    seen = []
    with torch.inference_mode():  # as the app's session may call it
        learner = algo.adapt(episode.support, seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5] and all(p.loss is not None for p in seen)
    assert seen[-1].loss < seen[0].loss
    assert learner.predict_proba(episode.query_images).shape == (3, 3)


# -- through a plan and the command ---------------------------------------------------------------------
def test_a_plan_needs_batch_steps_exactly_for_algorithms_that_train_on_batches(host, tmp_path):
    base = dict(dataset="folder", backbone="conv4", out=str(tmp_path / "m.safetensors"), val_split=None)
    with pytest.raises(ValueError, match="give the number of those steps"):
        prepare_run(TrainingPlan(algorithm="simpleshot", root=str(tmp_path), **base), host)
    with pytest.raises(ValueError, match="trains on episodes only"):
        prepare_run(TrainingPlan(algorithm="protonet", root=str(tmp_path), batch_steps=5, **base), host)


def test_metastudio_train_simpleshot_on_a_folder(tmp_path, folder_data):
    out = tmp_path / "simpleshot.safetensors"
    run = subprocess.run([METASTUDIO_COMMAND, "train", "--algorithm", "simpleshot", "--backbone", "conv4",
                          "--dataset", "folder", "--root", str(folder_data), "--batch-steps", "12",
                          "--batch-size", "8", "--val-every", "6", "--val-episodes", "4", "--val-ways", "2",
                          "--val-shots", "1", "--val-queries", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "batch" in run.stdout + run.stderr
    meta = read_metadata(out)
    assert meta["algorithm"] == "simpleshot" and meta["dataset"]["batch_steps"] == 12
    assert "ways" not in meta["dataset"]
