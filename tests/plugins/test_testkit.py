"""The test kit's checks beyond the contract basics (those are in test_plugins.py): faults raised
by the code under test come out as the kit's own AssertionError naming the step and the
algorithm, empty query batches, resuming a training run, a frozen backbone, exported files run
again, an older learner's own as_module, CUDA (skipped without a GPU, saying so) and the report."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metastudio.algorithms.backbone import BackboneSpec
from metastudio.algorithms.base import Algorithm
from metastudio.data.datasets import DatasetSpec
from metastudio.engine.checkpoint import read_metadata
from metastudio.plugins import testkit
from metastudio.plugins.testkit import OPTIONAL_CHECKS, check_algorithm, check_backbone, check_dataset, skipped_checks
from metastudio_builtins.algorithms.matchingnet import MatchingNetworks
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks, ProtoLearner

from helpers import proto_with_learner


def check(cls, tiny_host, tmp_path, **kwargs):
    return check_algorithm(cls, backbone="tiny", host=tiny_host, steps=4, tmp_path=tmp_path, **kwargs)


# ----------------------------------------------------------------------------------------------
# faults of the code under test


class AdaptRaises(PrototypicalNetworks):
    name = "adaptraises"

    def adapt(self, support, progress=None):
        raise RuntimeError("the support set is on fire")


class TrainStepRaises(PrototypicalNetworks):
    name = "trainraises"

    def meta_train_step(self, episodes):
        raise KeyError("query_images")


class AssertsInForward(ProtoLearner):
    def forward(self, images):
        assert images.dtype == torch.float64, "wants doubles"
        return super().forward(images)


@pytest.mark.parametrize(("cls", "step", "raised"), [
    (AdaptRaises, "adapt", RuntimeError),
    (TrainStepRaises, "meta_train_step", KeyError),
    (proto_with_learner(AssertsInForward), "predict_proba", AssertionError),
])
def test_what_the_algorithm_raises_comes_out_as_the_kits_failure_naming_step_and_algorithm(cls, step, raised,
                                                                                        tiny_host, tmp_path):
    with pytest.raises(AssertionError) as caught:
        check(cls, tiny_host, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"[{step}] algorithm '{cls.name}' ({cls.__qualname__}) raised {raised.__name__}")
    assert type(caught.value.__cause__) is raised  # the original, with its traceback, is chained
    assert caught.value.__cause__.__traceback__ is not None


def test_a_backbone_or_dataset_that_raises_is_reported_by_the_kit_too(tmp_path):
    def broken_factory(channels, size):
        raise OSError("weights.bin is missing")

    with pytest.raises(AssertionError, match=r"^\[backbone\] backbone 'broken' raised OSError: weights.bin") as caught:
        check_backbone(BackboneSpec("broken", broken_factory))
    assert isinstance(caught.value.__cause__, OSError)

    def load(root, split, *, image_size=None, progress=None):
        raise ValueError(f"no index file in {root}")

    with pytest.raises(AssertionError, match=r"^\[dataset: load\] dataset 'noindex' raised ValueError: no index") as caught:
        check_dataset(DatasetSpec("noindex", load), tmp_path, "train")
    assert isinstance(caught.value.__cause__, ValueError)


# ----------------------------------------------------------------------------------------------
# empty query batches


class ChunkingLearner(ProtoLearner):
    """Predicts in chunks of its own, and has nothing to concatenate for no images."""

    def predict_proba(self, images):
        return torch.cat([super(ChunkingLearner, self).predict_proba(images[i : i + 4])
                          for i in range(0, len(images), 4)])


class FlatEmptyLearner(ProtoLearner):
    def predict_proba(self, images):
        return torch.zeros(0) if len(images) == 0 else super().predict_proba(images)


def test_empty_query_batches_must_give_empty_results(tiny_host, tmp_path):
    with pytest.raises(AssertionError, match=r"^\[empty queries\] .* raised \w+Error: torch.cat"):
        check(proto_with_learner(ChunkingLearner), tiny_host, tmp_path)
    with pytest.raises(AssertionError, match=r"\[empty queries: predict_proba\] predict_proba must return "
                                             r"\[queries, ways\] = \[0, 5\].*got \[0\]"):
        check(proto_with_learner(FlatEmptyLearner), tiny_host, tmp_path)


# ----------------------------------------------------------------------------------------------
# resume


class CountingProto(PrototypicalNetworks):
    """Halves its learning rate after every step it counts in a plain attribute, which no
    checkpoint holds: a resumed run starts counting again."""

    name = "countingproto"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_taken = 0

    def meta_train_step(self, episodes):
        for group in self.optimizer.param_groups:
            group["lr"] = self.hparams["lr"] * 0.5 ** self.steps_taken
        self.steps_taken += 1
        return super().meta_train_step(episodes)


class PythonRandomProto(PrototypicalNetworks):
    """Jitters its first weight after each step with numbers from Python's random module, whose
    state no checkpoint holds."""

    name = "pyrandomproto"

    def meta_train_step(self, episodes):
        metrics = super().meta_train_step(episodes)
        with torch.no_grad():
            next(self.parameters()).add_(random.gauss(0.0, 1e-3))
        return metrics


@pytest.mark.parametrize("cls", [CountingProto, PythonRandomProto])
def test_a_resumed_run_must_end_as_an_uninterrupted_one(cls, tiny_host, tmp_path):
    with pytest.raises(AssertionError, match=r"^\[resume\] a run stopped after 1 of 3 steps and resumed .* ends with "
                                             r"other weights than an uninterrupted run"):
        check(cls, tiny_host, tmp_path, hparams={"lr": 0.01})
    report = check(cls, tiny_host, tmp_path, hparams={"lr": 0.01}, skip={"resume"})
    assert report.skipped["resume"] == "left out by skip=" and "resume" not in report.passed


def test_the_resume_check_runs_the_trainer_and_passes_a_plain_algorithm(tiny_host, tmp_path):
    report = check(PrototypicalNetworks, tiny_host, tmp_path)
    assert "resume" in report.passed
    assert (tmp_path / "resume-stopped.resume.safetensors").is_file()  # the real trainer's checkpoint


class BatchesThenEpisodes(PrototypicalNetworks):
    """Learns as a classifier over every training class first (a head only training uses), then
    on episodes."""

    name = "batchesthenepisodes"
    trains_on = "batches+episodes"

    def start_batch_training(self, classes):
        self.training_modules["classifier"] = nn.Linear(self.backbone.out_features, classes)

    def batch_train_step(self, batch):
        logits = self.training_modules["classifier"](Algorithm.embed(self, batch.images))
        labels = batch.labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == labels).float().mean())}


class ForgetsTheBatchHead(BatchesThenEpisodes):
    """Keeps the training-only classifier outside training_modules, so no checkpoint holds it."""

    name = "forgetsbatchhead"

    def start_batch_training(self, classes):
        self.__dict__["loose_classifier"] = nn.Linear(self.backbone.out_features, classes)

    def make_optimizer(self, parameters):
        return super().make_optimizer(parameters + list(self.__dict__["loose_classifier"].parameters()))

    def batch_train_step(self, batch):
        self.training_modules["classifier"] = self.__dict__["loose_classifier"]
        try:
            return super().batch_train_step(batch)
        finally:
            del self.training_modules["classifier"]


def test_an_algorithm_that_trains_on_batches_then_episodes_is_checked_on_both(tiny_host, tmp_path):
    report = check(BatchesThenEpisodes, tiny_host, tmp_path, hparams={"lr": 0.01}, skip={"frozen backbone"})
    assert {"learning", "resume", "save/load"} <= set(report.passed)
    with pytest.raises(AssertionError, match=r"^\[resume\] a run stopped after 1 of 3 steps"):
        check(ForgetsTheBatchHead, tiny_host, tmp_path, hparams={"lr": 0.01}, skip={"frozen backbone"})
    # With a frozen backbone its episodes have nothing left to train, as `metastudio train` would find.
    with pytest.raises(AssertionError, match=r"^\[frozen backbone: meta_train_step on precomputed features\] "
                                             r"algorithm 'batchesthenepisodes' .* raised RuntimeError"):
        check(BatchesThenEpisodes, tiny_host, tmp_path, hparams={"lr": 0.01})


# ----------------------------------------------------------------------------------------------
# frozen backbones


class StubbornTrain(MatchingNetworks):
    """Overrides train() without the base class's: a frozen backbone goes into training mode."""

    name = "stubborntrain"

    def train(self, mode=True):
        nn.Module.train(self, mode)
        return self


class NoFrozenBackbone(MatchingNetworks):
    name = "nofrozen"

    def __init__(self, *args, freeze_backbone=False, **kwargs):
        if freeze_backbone:
            raise ValueError("this algorithm fine-tunes its backbone")
        super().__init__(*args, **kwargs)


def test_a_frozen_backbone_trains_on_features_and_round_trips(tiny_host, tmp_path):
    report = check(MatchingNetworks, tiny_host, tmp_path)
    assert "frozen backbone" in report.passed and "frozen backbone: training" not in report.skipped
    meta = read_metadata(tmp_path / "matchingnet-testkit-frozen.safetensors")
    assert meta["backbone"] == "tiny-testkit-pretrained" and meta["backbone_frozen"] is True  # the kit's seeded copy
    plain = check(PrototypicalNetworks, tiny_host, tmp_path)  # nothing to train but the frozen backbone
    assert "frozen backbone" in plain.passed and "nothing left to train" in plain.skipped["frozen backbone: training"]


def test_a_frozen_backbone_must_stay_frozen(tiny_host, tmp_path):
    with pytest.raises(AssertionError, match=r"^\[frozen backbone\] a frozen backbone must stay in eval mode"):
        check(StubbornTrain, tiny_host, tmp_path)
    report = check(NoFrozenBackbone, tiny_host, tmp_path)
    assert report.skipped["frozen backbone"].endswith("this algorithm fine-tunes its backbone")


def test_a_builtin_head_meta_trains_on_frozen_features(tmp_path):
    report = check_algorithm(MatchingNetworks, tmp_path=tmp_path, steps=4, skip={"resume"})
    assert "frozen backbone" in report.passed and "frozen backbone: training" not in report.skipped


# ----------------------------------------------------------------------------------------------
# export


class OwnModuleLearner(ProtoLearner):
    """An older learner with its own as_module, which export writes, giving other probabilities."""

    def as_module(self):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(len(self.class_names)), nn.Softmax(1))


def test_export_files_are_run_again_and_an_older_as_module_must_agree(tiny_host, tmp_path):
    report = check(PrototypicalNetworks, tiny_host, tmp_path, export_formats=("torchscript", "onnx"))
    assert {"export torchscript", "export onnx"} <= set(report.passed)
    assert (tmp_path / "protonet-export-onnx" / "model.onnx").is_file()
    with pytest.raises(AssertionError, match=r"^\[as_module\] the module of OwnModuleLearner.as_module"):
        check(proto_with_learner(OwnModuleLearner), tiny_host, tmp_path)


def test_onnx_is_left_out_unless_asked_for_and_bad_arguments_are_refused(tiny_host, tmp_path):
    report = check(PrototypicalNetworks, tiny_host, tmp_path)
    assert "export torchscript" in report.passed and "export onnx" not in report.passed
    assert "export_formats" in report.skipped["onnx"]
    left_out = check(PrototypicalNetworks, tiny_host, tmp_path, skip={"export"})
    assert left_out.skipped["export"] == "left out by skip=" and not any("export" in c for c in left_out.passed)
    with pytest.raises(ValueError, match="cannot skip learning"):
        check(PrototypicalNetworks, tiny_host, tmp_path, skip={"learning"})
    with pytest.raises(ValueError, match="cannot export coreml"):
        check(PrototypicalNetworks, tiny_host, tmp_path, export_formats=("coreml",))
    assert set(OPTIONAL_CHECKS) >= {"resume", "frozen backbone", "cuda", "bf16", "onnx", "empty queries", "export"}


# ----------------------------------------------------------------------------------------------
# CUDA and the report


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the note given where there is no CUDA device")
def test_without_cuda_the_cuda_checks_are_skipped_saying_so(tiny_host, tmp_path):
    before = len(skipped_checks())
    report = check(PrototypicalNetworks, tiny_host, tmp_path)
    for name in ("cuda", "bf16"):
        assert "no CUDA device" in report.skipped[name] and name not in report.passed
    assert ("protonet", "cuda", report.skipped["cuda"]) in skipped_checks()[before:]
    assert report.seconds > 0 and report.algorithm == "protonet"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_model_predicts_as_on_the_cpu_in_float32_and_bfloat16(tiny_host, tmp_path):
    report = check(PrototypicalNetworks, tiny_host, tmp_path)
    assert {"cuda", "bf16"} <= set(report.passed)
    assert check(MatchingNetworks, tiny_host, tmp_path).passed[-2:] == ["cuda", "bf16"]


def test_a_report_lists_every_check_that_ran(tiny_host, tmp_path):
    report = check(PrototypicalNetworks, tiny_host, tmp_path)
    assert report.passed[:3] == ["class", "roles", "learning"]
    for name in ("adapt", "empty queries", "forward", "export torchscript", "save/load", "resume", "frozen backbone"):
        assert name in report.passed
    assert testkit.CheckReport is type(report)
