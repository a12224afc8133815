"""Episodes (N-way K-shot tasks) and the seeded sampler that draws them.

An :class:`Episode` holds uint8 images, so it is cheap to build, to keep in a fixed list and to
move to a GPU; algorithms turn images into floats on their own device.

Sampling is reproducible across machines and library versions: episode ``i`` of a sampler with
seed ``s`` takes raw 64-bit outputs of PCG64 seeded through ``SeedSequence([s, i])`` (both
guaranteed stable by NumPy, unlike the ``Generator`` methods built on them) and draws without
replacement by a partial Fisher-Yates shuffle of our own, over the dataset's classes in their
sorted order. Episodes are therefore random-access: a resumed training run continues with
exactly the episodes it would have seen, and an evaluation list is just ``range(n)`` of a
sampler with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metastudio.errors import DatasetError

#: Seed of the fixed evaluation episode lists (``metastudio eval`` and validation during training).
EVAL_SEED = 20170101


@dataclass(frozen=True)
class SupportSet:
    """Labelled images to adapt to: ``images`` uint8 [M, C, H, W], ``labels`` int64 [M] in 0..N-1."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def ways(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SupportSet:
        return SupportSet(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.class_names,
        )


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task: a support set and query images with their true labels.

    Images are uint8 tensors [count, C, H, W]; labels are int64 in ``0..ways-1``, where label
    ``j`` is the class ``class_names[j]``. Support images come grouped by class (all shots of
    class 0, then class 1, ...), queries likewise.
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    class_names: tuple[str, ...]
    shots: int

    @property
    def ways(self) -> int:
        return len(self.class_names)

    @property
    def support(self) -> SupportSet:
        return SupportSet(self.support_images, self.support_labels, self.class_names)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        return Episode(
            self.support_images.to(device, non_blocking=non_blocking),
            self.support_labels.to(device, non_blocking=non_blocking),
            self.query_images.to(device, non_blocking=non_blocking),
            self.query_labels.to(device, non_blocking=non_blocking),
            self.class_names,
            self.shots,
        )


@dataclass(frozen=True)
class EpisodeSpec:
    """Which images make an episode: ``classes`` [N] and, per class, image indices [N, K+Q]."""

    classes: np.ndarray
    images: np.ndarray
    shots: int


def stable_raw(seed: int, index: int, count: int) -> np.ndarray:
    """``count`` uint64 values from PCG64 seeded with ``SeedSequence([seed, index])``."""
    bits = np.random.PCG64(np.random.SeedSequence([int(seed) & (2**63 - 1), int(index)]))
    return bits.random_raw(count).astype(np.uint64)


def sample_without_replacement(n: int, k: int, raw: np.ndarray) -> np.ndarray:
    """``k`` distinct indices of ``range(n)`` in random order, from ``k`` raw uint64 values
    (partial Fisher-Yates; the modulo bias is below 2**-50 for any realistic ``n``)."""
    pool = np.arange(n, dtype=np.int64)
    for i in range(k):
        j = i + int(raw[i] % np.uint64(n - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k].copy()


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from a dataset, reproducibly.

    ``dataset`` is any object with ``class_names`` (sequence of str), ``class_sizes``
    (sequence of int) and ``gather(class_indices, image_indices) -> uint8 tensor
    [N, K+Q, C, H, W]`` -- see :class:`metastudio.data.datasets.FewShotDataset`.
    """

    def __init__(self, dataset, ways: int, shots: int, queries: int, seed: int = 0):
        if ways < 2:
            raise DatasetError(f"an episode needs at least 2 ways (classes), got {ways}")
        if shots < 1:
            raise DatasetError(f"an episode needs at least 1 shot per class, got {shots}")
        if queries < 0:
            raise DatasetError(f"queries must be 0 or more, got {queries}")
        sizes = np.asarray(dataset.class_sizes, dtype=np.int64)
        need = shots + queries
        eligible = np.flatnonzero(sizes >= need)
        if len(eligible) < ways:
            raise DatasetError(
                f"{ways}-way {shots}-shot {queries}-query episodes need {ways} classes with at "
                f"least {need} images each; this dataset has {len(eligible)} such classes "
                f"(of {len(sizes)})"
            )
        self.dataset = dataset
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, int(seed)
        self._eligible = eligible
        self._sizes = sizes

    def spec(self, index: int) -> EpisodeSpec:
        """The classes and images of episode ``index`` (cheap; no image is touched)."""
        need = self.shots + self.queries
        raw = stable_raw(self.seed, index, self.ways * (need + 1))
        picks = sample_without_replacement(len(self._eligible), self.ways, raw[: self.ways])
        classes = self._eligible[picks]
        images = np.stack([
            sample_without_replacement(int(self._sizes[c]), need, raw[self.ways + j * need : self.ways + (j + 1) * need])
            for j, c in enumerate(classes)
        ])
        return EpisodeSpec(classes=classes, images=images, shots=self.shots)

    def episode(self, index: int) -> Episode:
        return self.build(self.spec(index))

    def build(self, spec: EpisodeSpec) -> Episode:
        ways, shots = len(spec.classes), spec.shots
        queries = spec.images.shape[1] - shots
        block = self.dataset.gather(spec.classes, spec.images)  # [N, K+Q, C, H, W]
        labels = torch.arange(ways, dtype=torch.int64)
        names = tuple(self.dataset.class_names[c] for c in spec.classes)
        return Episode(
            support_images=block[:, :shots].reshape(ways * shots, *block.shape[2:]),
            support_labels=labels.repeat_interleave(shots),
            query_images=block[:, shots:].reshape(ways * queries, *block.shape[2:]),
            query_labels=labels.repeat_interleave(queries),
            class_names=names,
            shots=shots,
        )

    def __iter__(self) -> Iterator[Episode]:
        index = 0
        while True:
            yield self.episode(index)
            index += 1

    def fixed(self, count: int, start: int = 0) -> list[EpisodeSpec]:
        """A fixed list of episode specs (``start .. start+count-1``), e.g. for evaluation."""
        return [self.spec(i) for i in range(start, start + count)]


def stack_support(images_per_class: Sequence[torch.Tensor], class_names: Sequence[str]) -> SupportSet:
    """Build a :class:`SupportSet` from one uint8 image tensor [k_i, C, H, W] per class."""
    if len(images_per_class) != len(class_names):
        raise ValueError("one image tensor per class name is needed")
    empty = [n for n, t in zip(class_names, images_per_class) if len(t) == 0]
    if empty:
        raise DatasetError("these classes have no images: " + ", ".join(empty))
    images = torch.cat(list(images_per_class))
    labels = torch.cat([torch.full((len(t),), j, dtype=torch.int64) for j, t in enumerate(images_per_class)])
    return SupportSet(images, labels, tuple(class_names))
