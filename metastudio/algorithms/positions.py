"""Algorithms whose output has a fixed number of label positions (``max_ways``).

A model-based learner such as MANN or Meta Networks classifies into ``max_ways`` output
positions fixed when it is built; an episode's N classes take N of them. Such an algorithm
declares :func:`max_ways_hyperparameter` and inherits :class:`LabelPositionsMixin` before
:class:`~metastudio.algorithms.base.Algorithm`: runs with more ways are refused before any data
loads (:meth:`~metastudio.algorithms.base.Algorithm.ways_limit`), and so are support sets and
episodes with more classes than the model has positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metastudio.algorithms.hyperparameters import HyperParameter


def max_ways_hyperparameter(help: str) -> HyperParameter:
    """The ``max_ways`` hyperparameter (2 to 1000, default 20, ``architecture``: the output layer's size)."""
    return HyperParameter("max_ways", int, 20, help, 2, 1000, role="architecture")


class LabelPositionsMixin:
    """``ways_limit`` from ``max_ways``, and the checks that a support set or an episode fits."""

    @classmethod
    def ways_limit(cls, hparams: Mapping[str, Any]) -> int | None:
        return int(hparams["max_ways"])

    def check_support_ways(self, ways: int) -> None:
        """ValueError, for the person adapting, when a support set has more classes than positions."""
        if ways > self.hparams["max_ways"]:
            raise ValueError(f"this {self.title} model tells at most {self.hparams['max_ways']} classes apart "
                             f"(max_ways); the support set has {ways}")

    def check_episode_ways(self, ways: int) -> None:
        """ValueError when a training episode has more classes than positions."""
        if ways > self.hparams["max_ways"]:
            raise ValueError(f"{self.title} has {self.hparams['max_ways']} label positions; an episode has {ways} "
                             "classes")


__all__ = ["LabelPositionsMixin", "max_ways_hyperparameter"]
