"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn

from metastudio.algorithms.backbone import BackboneSpec


def assert_standalone_reproduces(learner, algorithm, query_images: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """The learner's stand-alone copy (what export traces): in eval mode, plain float32 CPU
    weights without autograd (no channels_last); the softmax of its logits on the uint8
    ``query_images`` scaled to [0, 1] is ``predict_proba`` within ``atol``; traced on two images
    it gives the same for all of them (no batch size baked in); and it is a copy: changing the
    algorithm's weights afterwards (which this does) does not reach it. Returns its probabilities."""
    module = learner.standalone()
    assert not module.training and not module.algorithm.training
    params = list(module.parameters())
    assert all(not p.requires_grad and p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    assert all(p.is_contiguous() for p in params), "plain NCHW weights, not channels_last"
    x = query_images.float() / 255
    with torch.no_grad():
        probs = module(x).softmax(1)
    assert torch.allclose(probs, learner.predict_proba(query_images), atol=atol)
    traced = torch.jit.trace(module, x[:2], check_trace=False)
    with torch.no_grad():
        assert torch.allclose(traced(x).softmax(1), probs, atol=atol), "the traced module works for another batch size"
        for p in algorithm.parameters():
            p.add_(1.0)
        assert torch.equal(module(x).softmax(1), probs), "the module holds copies"
    return probs


def assert_exports_match(learner, algorithm, folder, query_images: torch.Tensor, atol: float = 1e-4) -> None:
    """Export the learner as TorchScript and as ONNX (``export_learner``, which itself checks the
    written file on a batch of 3) into ``folder``, then run each file the plain way
    (``torch.jit.load``, an onnxruntime session) on all the uint8 ``query_images`` scaled to
    [0, 1]: both give ``predict_proba``'s probabilities within ``atol``."""
    import warnings

    import numpy as np
    import pytest

    from metastudio.engine.export import EXPORT_FORMATS, export_learner

    ort = pytest.importorskip("onnxruntime")
    expected = learner.predict_proba(query_images).numpy()
    x = query_images.numpy().astype(np.float32) / 255
    for fmt in EXPORT_FORMATS:
        model_file, _ = export_learner(learner, algorithm, folder / fmt, fmt)
        if fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch's notice that TorchScript is deprecated
                got = torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()
        else:
            got = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        np.testing.assert_allclose(got, expected, atol=atol, err_msg=f"the {fmt} export")


def meta_train_steps(algo, batches) -> list[dict[str, float]]:
    """One meta-training step of ``algo`` on each batch of episodes (its optimiser set up for that
    many), in training mode; then eval mode. Returns each step's metrics."""
    algo.configure_training(len(batches))
    algo.train()
    metrics = [algo.meta_train_step(batch) for batch in batches]
    algo.eval()
    return metrics


def meta_train_on_tiny_episodes(algo, steps: int, *, per_class: int = 8, train_queries: int = 3,
                                test_episodes: int = 10) -> tuple[list[float], float, float]:
    """Meta-train ``algo`` for ``steps`` steps, each on two 3-way 1-shot episodes (``train_queries``
    queries a class) of a synthetic dataset of 16 classes; its accuracy (``evaluate_episode``, in
    eval mode) on ``test_episodes`` other 3-way 1-shot, 3-query episodes before and after.
    Returns (the steps' losses, accuracy before, accuracy after)."""
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.plugins.testkit import synthetic_dataset

    ds = synthetic_dataset(classes=16, per_class=per_class)
    train, test = EpisodeSampler(ds, 3, 1, train_queries, seed=0), EpisodeSampler(ds, 3, 1, 3, seed=1)

    def accuracy() -> float:
        algo.eval()
        return sum(algo.evaluate_episode(test.episode(i)) for i in range(test_episodes)) / test_episodes

    before = accuracy()
    metrics = meta_train_steps(algo, [[train.episode(2 * i), train.episode(2 * i + 1)] for i in range(steps)])
    return [m["loss"] for m in metrics], before, accuracy()


def assert_adapts_and_reads_each_query_alone(host, tmp_path, algo, episode, one: int) -> torch.Tensor:
    """Adapted to the episode's support set, ``algo`` (in eval mode) gives probabilities over the
    episode's classes for its queries, the same for query ``one`` alone as among the others, and
    the same after saving and loading (``assert_round_trip``); its learner exports
    (:func:`assert_exports_match`). Returns the probabilities."""
    from conftest import assert_round_trip

    learner = algo.adapt(episode.support)
    probs = learner.predict_proba(episode.query_images)
    count = len(episode.query_images)
    assert probs.shape == (count, episode.ways) and torch.allclose(probs.sum(1), torch.ones(count), atol=1e-5)
    assert torch.allclose(learner.predict_proba(episode.query_images[one : one + 1]), probs[one : one + 1], atol=1e-5)
    assert torch.equal(assert_round_trip(host, tmp_path, algo, episode), probs)
    assert_exports_match(learner, algo, tmp_path / "export", episode.query_images)
    return probs


def assert_probabilities(probs: torch.Tensor, queries: int, ways: int) -> None:
    """``probs`` is what predict_proba promises: float32 CPU probabilities [queries, ways] without
    autograd history, non-negative, each row summing to 1."""
    assert probs.shape == (queries, ways) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert not probs.requires_grad and bool((probs >= 0).all())
    assert torch.allclose(probs.sum(1), torch.ones(queries))


def accuracy_before_and_after_training(algo, train_ways: int, steps: int) -> tuple[float, float, list[dict]]:
    """Mean accuracy of ``algo`` on 10 test episodes (3-way 1-shot, 3 queries a class, of a
    16-class synthetic dataset) before and after ``steps`` meta-training steps on
    ``train_ways``-way 1-shot episodes of the same dataset, and the metrics of those steps."""
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.plugins.testkit import synthetic_dataset

    ds = synthetic_dataset(classes=16, per_class=8)
    train = EpisodeSampler(ds, train_ways, 1, 3, seed=0)
    test = EpisodeSampler(ds, 3, 1, 3, seed=1)
    algo.configure_training(steps)
    algo.eval()
    before = sum(algo.evaluate_episode(test.episode(i)) for i in range(10)) / 10
    algo.train()
    metrics = [algo.meta_train_step([train.episode(i)]) for i in range(steps)]
    algo.eval()
    after = sum(algo.evaluate_episode(test.episode(i)) for i in range(10)) / 10
    return before, after, metrics


def adapt_in_one_step(algo, support):
    """``algo.adapt(support)`` with a progress callback, which must hear of exactly one step
    (a one-pass adaptation, without a loss); returns the learner, for the support set's classes."""
    from metastudio.algorithms.base import AdaptProgress

    steps = []
    learner = algo.adapt(support, progress=steps.append)
    assert steps == [AdaptProgress(1, 1, None)]
    assert learner.class_names == support.class_names
    return learner


def adapt_and_predict(algo, episode):
    """:func:`adapt_in_one_step` to the episode's support set, then ``predict_proba`` of its
    queries, checked by :func:`assert_probabilities` (an empty batch gives [0, ways]); returns
    the learner and the probabilities."""
    learner = adapt_in_one_step(algo, episode.support)
    probs = learner.predict_proba(episode.query_images)
    assert_probabilities(probs, len(episode.query_images), episode.ways)
    assert learner.predict_proba(episode.query_images[:0]).shape == (0, episode.ways)
    return learner, probs


def _methods(*, loss: bool = False):
    """meta_train_step and adapt of a tiny prototype algorithm; ``loss``: adapt reports one."""
    from metastudio.api import AdaptProgress, Learner, class_means

    class CentroidLearner(Learner):
        def __init__(self, algorithm, means, class_names):
            super().__init__(class_names, algorithm)
            self.register_buffer("means", means)

        def forward(self, images):
            return -torch.cdist(self.algorithm.embed(images), self.means)

    def meta_train_step(self, episodes):
        losses = []
        for ep in episodes:
            means = class_means(self.training_embed(ep.support_images), ep.support_labels.to(self.device), ep.ways)
            scores = -torch.cdist(self.training_embed(ep.query_images), means)
            losses.append(torch.nn.functional.cross_entropy(scores, ep.query_labels.to(self.device)))
        loss = torch.stack(losses).mean()
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": 0.5}

    def adapt(self, support, progress=None):
        with self.evaluating(), torch.no_grad():
            means = class_means(self.embed_all(support.images), support.labels.to(self.device), support.ways)
        if progress:
            progress(AdaptProgress(1, 1, 0.5 if loss else None))
        return CentroidLearner(self, means, support.class_names)

    return {"meta_train_step": meta_train_step, "adapt": adapt}


def define_algorithm(name: str, *bases, loss: bool = False, **attributes):
    """Define a named nearest-centroid algorithm class (which runs the declaration checks of
    ``Algorithm.__init_subclass__``), with ``bases`` (default: Algorithm) and class ``attributes``."""
    from metastudio.api import Algorithm

    body = {"name": name, "title": name.title(), "family": "metric", "description": "test only",
            **_methods(loss=loss), **attributes}
    return type(name.title().replace("-", ""), bases or (Algorithm,), body)


def register_algorithm(host, cls):
    """Register ``cls`` in ``host`` as a plugin module offering it would be."""
    import types

    from metastudio.plugins.hookspecs import hookimpl

    host.register_module(types.SimpleNamespace(metastudio_algorithms=hookimpl(lambda: [cls])), f"test-{cls.name}")


# -- a tiny backbone and Prototypical Networks variants, for fast test-kit checks ----------------
class TinyNet(nn.Module):
    """A one-layer CNN: a backbone that makes the test kit's checks fast."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.out_features = 32

    def forward(self, x):
        return self.body(x)


#: TinyNet as the backbone "tiny" (the ``tiny_host`` fixture registers it).
TINY = BackboneSpec("tiny", lambda c, s: TinyNet(c), "A one-layer CNN for fast tests.")


def proto_with_learner(learner_cls: type):
    """Prototypical Networks whose learners are ``learner_cls(algorithm, prototypes, class_names)``."""
    from metastudio_builtins.algorithms.protonet import PrototypicalNetworks

    class Proto(PrototypicalNetworks):
        def adapt(self, support, progress=None):
            learner = super().adapt(support, progress)
            return learner_cls(self, learner.prototypes, learner.class_names)

    Proto.__name__ = Proto.__qualname__ = f"{learner_cls.__name__}Proto"
    return Proto
