"""Evaluation: mean accuracy and its 95% confidence interval over a fixed list of episodes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field


from metastudio.algorithms.base import Algorithm
from metastudio.engine.control import Control
from metastudio.data.episodes import EpisodeSampler, EpisodeSpec
from metastudio.errors import MetaStudioError


class EvaluationCancelled(MetaStudioError):
    """The evaluation's :class:`Control` was cancelled; a partial mean would mislead, so none is given."""


@dataclass
class EvalResult:
    """``accuracy`` and ``ci95`` in percent; ``ci95`` = 1.96 x standard error of the mean over
    episodes (the convention of the few-shot literature)."""

    accuracy: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    per_episode: list[float] = field(default_factory=list, repr=False)

    def line(self) -> str:
        return f"accuracy {self.accuracy:.2f} ± {self.ci95:.2f} % ({self.episodes} episodes)"

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("per_episode")
        return d


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 1.96 x standard error (sample standard deviation) of ``values``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def evaluate(
    algorithm: Algorithm,
    sampler: EpisodeSampler,
    episodes: int | Sequence[EpisodeSpec],
    *,
    progress: Callable[[int, int], None] | None = None,
    control: Control | None = None,
) -> EvalResult:
    """Adapt to each episode's support set and score its queries; episodes ``0..n-1`` of
    ``sampler`` (whose seed fixes them) or the given specs. The algorithm's mode is restored.
    Raises :class:`EvaluationCancelled` when ``control`` is cancelled before the end."""
    specs = sampler.fixed(episodes) if isinstance(episodes, int) else list(episodes)
    if not specs:
        raise ValueError("evaluation needs at least one episode")
    was_training = algorithm.training
    algorithm.eval()
    accs: list[float] = []
    device = algorithm.device
    try:
        for i, spec in enumerate(specs, 1):
            if control is not None and control.should_stop():
                raise EvaluationCancelled(f"evaluation cancelled after {len(accs)} of {len(specs)} episodes")
            episode = sampler.build(spec).to(device, non_blocking=True)
            accs.append(algorithm.evaluate_episode(episode))
            if progress:
                progress(i, len(specs))
    finally:
        algorithm.train(was_training)
    mean, ci = mean_ci95(accs)
    return EvalResult(100 * mean, 100 * ci, len(accs), sampler.ways, sampler.shots, sampler.queries, accs)
