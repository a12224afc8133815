"""Labelled batches over every class of a dataset: what an algorithm that trains as a plain
classifier (``trains_on`` ``"batches"``, see :class:`metastudio.algorithms.base.Algorithm`) is
given instead of episodes.

A batch's labels are the classes' indices in the dataset (``0 .. classes - 1``, the same for
every batch), unlike an episode's ``0 .. ways - 1``. :class:`BatchSampler` goes through the
images in a shuffled order, epoch after epoch; batch ``t`` depends only on the seed and ``t``,
so a resumed run trains on exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metastudio.errors import DatasetError


@dataclass(frozen=True)
class LabelledBatch:
    """``images`` (uint8 [B, C, H, W], or features [B, D] with a frozen backbone) and their
    classes, ``labels`` (int64 [B], indices into ``class_names``, one of ``classes`` classes)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        """How many classes the labels index (every class of the training data, not only the
        ones in this batch)."""
        return len(self.class_names)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LabelledBatch:
        return LabelledBatch(self.images.to(device, non_blocking=non_blocking),
                             self.labels.to(device, non_blocking=non_blocking), self.class_names)


class BatchSampler:
    """Batches of ``batch_size`` images of ``dataset`` (a
    :class:`~metastudio.data.datasets.FewShotDataset`), each image once per epoch, in an order
    drawn anew every epoch from ``seed``."""

    def __init__(self, dataset, batch_size: int, seed: int = 0):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"the batch size must be a whole number of at least 1, got {batch_size!r}")
        total = len(dataset.images)
        if total == 0 or dataset.num_classes < 2:
            raise DatasetError(f"training on labelled batches needs at least 2 classes with images; "
                               f"'{dataset.name}' has {dataset.num_classes} classes and {total} images")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.class_names = tuple(dataset.class_names)
        self._labels = torch.repeat_interleave(torch.arange(dataset.num_classes, dtype=torch.int64),
                                               torch.as_tensor(dataset.class_sizes, dtype=torch.int64))
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation), the last one used

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        """Batches per epoch (the last one of an epoch is completed from the next)."""
        return -(-len(self._labels) // self.batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed & (2**63 - 1), epoch])))
            self._order = (epoch, generator.permutation(len(self._labels)))
        return self._order[1]

    def rows(self, index: int) -> np.ndarray:
        """The dataset rows of batch ``index`` (cheap; no image is touched)."""
        total = len(self._labels)
        start = index * self.batch_size
        positions = np.arange(start, start + self.batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, total)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            out[chosen] = self._epoch_order(int(epoch))[offsets[chosen]]
        return out

    def batch(self, index: int) -> LabelledBatch:
        rows = torch.as_tensor(self.rows(index))
        images = self.dataset.images.index_select(0, rows.to(self.dataset.images.device))
        return LabelledBatch(images, self._labels[rows], self.class_names)


__all__ = ["BatchSampler", "LabelledBatch"]
