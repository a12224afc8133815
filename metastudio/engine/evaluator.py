"""Evaluation: mean accuracy and its 95% confidence interval over a fixed list of episodes.

The algorithm is a plugin's code: each episode's adaptation and prediction go through
:func:`~metastudio.engine.guard.call_guarded` (a failure is a
:class:`~metastudio.errors.PluginError` naming the plugin, with an optional time limit per call)
and the probabilities are checked, so a faulty algorithm stops the evaluation with its name
instead of giving a wrong accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field


from metastudio.algorithms.base import Algorithm, query_accuracy
from metastudio.engine.control import Control
from metastudio.data.episodes import Episode, EpisodeSampler, EpisodeSpec
from metastudio.engine.guard import algorithm_words, call_guarded, check_probabilities
from metastudio.errors import MetaStudioError, PluginError, PluginOrigin, plugin_of


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


def episode_accuracy(algorithm: Algorithm, episode: Episode, *, origin: PluginOrigin | None = None,
                     time_limit: float | None = None) -> float:
    """The accuracy (0..1) of ``algorithm`` on one episode, each call into it guarded
    (:func:`call_guarded`, ``time_limit`` seconds each).

    An algorithm that keeps :meth:`Algorithm.evaluate_episode` as the base class writes it is
    adapted and asked for probabilities here, step by step, and its probabilities are checked
    (shape, NaN, rows summing to 1); one that overrides it (one forward pass for support and
    queries, say) is called as it is, and what it returns must be a number from 0 to 1."""
    if type(algorithm).evaluate_episode is Algorithm.evaluate_episode:
        learner = call_guarded(algorithm.adapt, episode.support, what="adapting to an episode's support set",
                               origin=origin, time_limit=time_limit)
        probs = call_guarded(learner.predict_proba, episode.query_images, what="predicting an episode's queries",
                             origin=origin, time_limit=time_limit)
        check_probabilities(probs, len(episode.query_images), episode.ways, what=algorithm_words(algorithm),
                            origin=origin)
        return query_accuracy(probs, episode)
    accuracy = call_guarded(algorithm.evaluate_episode, episode, what="evaluating an episode", origin=origin,
                            time_limit=time_limit)
    try:
        value = float(accuracy)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # False for NaN too
        raise PluginError(f"evaluating an episode gave the accuracy {accuracy!r}, not a number from 0 to 1", origin)
    return value


def evaluate(
    algorithm: Algorithm,
    sampler: EpisodeSampler,
    episodes: int | Sequence[EpisodeSpec],
    *,
    progress: Callable[[int, int], None] | None = None,
    control: Control | None = None,
    origin: PluginOrigin | None = None,
    time_limit: float | None = None,
) -> EvalResult:
    """Adapt to each episode's support set and score its queries; episodes ``0..n-1`` of
    ``sampler`` (whose seed fixes them) or the given specs. The algorithm's mode is restored.
    Raises :class:`EvaluationCancelled` when ``control`` is cancelled before the end.

    ``origin`` names the algorithm's plugin in a :class:`~metastudio.errors.PluginError` when
    it fails (see :func:`episode_accuracy`; by default the plugin whose module defines the
    algorithm's class); ``time_limit`` (seconds) bounds each call into it
    (:class:`~metastudio.errors.PluginTimeout` past it)."""
    if origin is None:
        origin = plugin_of(type(algorithm).__module__)
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
            accs.append(episode_accuracy(algorithm, episode, origin=origin, time_limit=time_limit))
            if progress:
                progress(i, len(specs))
    finally:
        algorithm.train(was_training)
    mean, ci = mean_ci95(accs)
    return EvalResult(100 * mean, 100 * ci, len(accs), sampler.ways, sampler.shots, sampler.queries, accs)
