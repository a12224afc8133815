"""The seeded N-way K-shot Q-query sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metastudio.data.datasets import FewShotDataset
from metastudio.data.episodes import EpisodeSampler, sample_without_replacement, stable_raw, stack_support
from metastudio.errors import DatasetError


def numbered_dataset(classes=10, per_class=7, size=4) -> FewShotDataset:
    """Each image's pixels hold (class, index) so episodes can be checked exactly."""
    images = torch.zeros(classes * per_class, 2, size, size, dtype=torch.uint8)
    for c in range(classes):
        for i in range(per_class):
            images[c * per_class + i, 0] = c
            images[c * per_class + i, 1] = i
    return FewShotDataset(images, [f"c{c}" for c in range(classes)], [per_class] * classes)


def test_episode_shapes_and_labels():
    ds = numbered_dataset()
    ep = EpisodeSampler(ds, ways=5, shots=2, queries=3, seed=1).episode(0)
    assert ep.support_images.shape == (10, 2, 4, 4) and ep.support_images.dtype == torch.uint8
    assert ep.query_images.shape == (15, 2, 4, 4)
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_labels.tolist() == [j for j in range(5) for _ in range(3)]
    assert ep.ways == 5 and ep.shots == 2 and len(ep.class_names) == 5


def test_labels_match_the_classes_and_images_are_distinct():
    ds = numbered_dataset()
    ep = EpisodeSampler(ds, ways=4, shots=2, queries=4, seed=7).episode(3)
    classes = [int(n[1:]) for n in ep.class_names]
    assert len(set(classes)) == 4
    for images, labels in ((ep.support_images, ep.support_labels), (ep.query_images, ep.query_labels)):
        assert [classes[label] for label in labels.tolist()] == images[:, 0, 0, 0].tolist()
    for j, c in enumerate(classes):
        ids = ep.support_images[ep.support_labels == j][:, 1, 0, 0].tolist() + ep.query_images[ep.query_labels == j][:, 1, 0, 0].tolist()
        assert len(ids) == len(set(ids)) == 6, "support and query images of a class never repeat"


def test_same_seed_same_episodes_other_seed_other_episodes():
    ds = numbered_dataset(classes=30)
    a = EpisodeSampler(ds, 5, 1, 5, seed=3)
    b = EpisodeSampler(ds, 5, 1, 5, seed=3)
    c = EpisodeSampler(ds, 5, 1, 5, seed=4)
    for i in (0, 1, 17):
        assert torch.equal(a.episode(i).support_images, b.episode(i).support_images)
        assert a.episode(i).class_names == b.episode(i).class_names
    assert [a.spec(i).classes.tolist() for i in range(5)] != [c.spec(i).classes.tolist() for i in range(5)]
    assert a.spec(0).classes.tolist() != a.spec(1).classes.tolist()


def test_episodes_are_the_same_on_every_machine():
    """Golden values: the stream comes from PCG64 raw output, stable across platforms and NumPy versions."""
    assert stable_raw(0, 0, 2).tolist() == [11749869230777074271, 4976686463289251617]
    spec = EpisodeSampler(numbered_dataset(classes=30), 5, 1, 2, seed=0).spec(0)
    assert spec.classes.tolist() == GOLDEN_CLASSES
    assert spec.images[0].tolist() == GOLDEN_IMAGES


GOLDEN_CLASSES = [11, 10, 1, 0, 21]
GOLDEN_IMAGES = [1, 4, 0]


def test_sampling_is_uniform_enough():
    counts = np.zeros(10)
    for i in range(2000):
        counts[sample_without_replacement(10, 3, stable_raw(5, i, 3))] += 1
    assert counts.sum() == 6000 and counts.min() > 500 and counts.max() < 700


def test_too_few_classes_or_images_is_a_clear_error():
    ds = numbered_dataset(classes=3, per_class=4)
    with pytest.raises(DatasetError, match="need 5 classes"):
        EpisodeSampler(ds, 5, 1, 1)
    with pytest.raises(DatasetError, match="at least 6 images"):
        EpisodeSampler(ds, 2, 1, 5)
    with pytest.raises(DatasetError, match="at least 2 ways"):
        EpisodeSampler(ds, 1, 1, 1)


def test_small_classes_are_skipped_not_sampled():
    images = torch.zeros(3 + 8 + 8, 1, 2, 2, dtype=torch.uint8)
    ds = FewShotDataset(images, ["small", "a", "b"], [3, 8, 8])
    sampler = EpisodeSampler(ds, 2, 2, 2)
    assert all("small" not in sampler.episode(i).class_names for i in range(20))


def test_stack_support_and_empty_class():
    s = stack_support([torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.ones(3, 1, 4, 4, dtype=torch.uint8)], ["a", "b"])
    assert s.labels.tolist() == [0, 0, 1, 1, 1] and s.ways == 2
    with pytest.raises(DatasetError, match="b"):
        stack_support([torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(0, 1, 4, 4, dtype=torch.uint8)], ["a", "b"])
