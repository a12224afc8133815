"""Which model suits a person's own examples best: cross-validation on their labelled images.

A person who has labelled a few images per class wants to know which of the installed models
tells *their* classes apart best, and how fast. :class:`ModelComparison` answers with the
examples alone: each candidate model adapts to some of them and predicts the others
(leave-one-out, or stratified K-fold), and every model gets the same folds. The result is one
:class:`ModelScore` a model (accuracy with a 95 % interval, time to adapt, time per image, how
many adaptations) and the best model, said plainly (:attr:`Comparison.verdict`).

Each model is loaded and adapted through :class:`~metastudio.app.session.ClassifierSession`,
so plugin faults, time limits, cancelling and bad model files are handled as the app handles
them, and a frozen-backbone model (``photos``) embeds each image once for all its folds (its
feature cache). One model that cannot serve the examples (it fails to load, or it tells fewer
classes apart than there are) or that fails while adapting is a row saying why; the others run.

The held-out rule: a class with a single example cannot be held out without removing the class
from what the model adapts to (it would then be a question the model cannot answer), so such an
example is never held out. It is always among the examples adapted to, and
:attr:`Comparison.notes` names the classes this applies to. Leave-one-out also keeps the
classes as balanced as the person's examples: while one example is held out, one example of
every other class is set aside (:func:`make_folds` says why).

Nothing here imports Qt: the desktop app runs a comparison in a worker thread, shows progress
through ``progress`` and stops it with :meth:`ModelComparison.cancel` (or ``should_stop``).
"""

from __future__ import annotations

import fnmatch
import math
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metastudio.app.catalogue import models_dirs, plugin_models, resolve_model, shipped_models
from metastudio.app.session import ClassifierSession, SupportSpec
from metastudio.errors import (
    CheckpointError, ImageLoadError, MetaStudioError, PluginCancelled, for_person,
)

#: The ``folds`` value for leave-one-out.
LEAVE_ONE_OUT = "loo"
#: The z value of a two-sided 95 % interval.
Z95 = 1.959963984540054


# ------------------------------------------------------------------------------------------------
# candidates and the support set


@dataclass(frozen=True)
class Candidate:
    """A model to compare: how people name it, and its file."""

    name: str
    path: Path


def candidate_models(models: Sequence[str] | None = None, host=None) -> list[Candidate]:
    """The models to compare: every shipped model (``resources/models`` and
    ``$METASTUDIO_MODELS_DIR``), then every model a plugin ships, each by name; or those ``models``
    names: a model name or file, or a pattern with ``*`` and ``?`` (``*-photos``) matched against
    the names of the shipped and plugin models. A name that is not found, or a pattern that matches
    nothing, raises :class:`~metastudio.errors.CheckpointError` before anything runs."""
    from_plugins = plugin_models(host)
    catalogue = [Candidate(n, _shipped_path(n)) for n in shipped_models()]
    catalogue += [Candidate(n, Path(from_plugins[n].path)) for n in sorted(from_plugins)]
    if not models:
        return catalogue
    chosen: list[Candidate] = []
    for name in models:
        if any(ch in name for ch in "*?["):
            matched = [c for c in catalogue if fnmatch.fnmatchcase(c.name, name)]
            if not matched:
                raise CheckpointError(f"no model's name matches '{name}' (models: "
                                      f"{', '.join(c.name for c in catalogue) or 'none'})")
        else:
            matched = [Candidate(name, resolve_model(name, host))]
        chosen += [c for c in matched if c.name not in {d.name for d in chosen}]
    return chosen


def _shipped_path(name: str) -> Path:
    """The file of the shipped model ``name``: the first of :func:`models_dirs` that has it."""
    return next(d / f"{name}.safetensors" for d in models_dirs() if (d / f"{name}.safetensors").is_file())


@dataclass
class SupportFolder:
    """The labelled examples of a class-folder tree: ``support`` as the session takes it (class
    name, [(image id, file path), ...]), sorted by class and file name; ``problems`` are the
    entries that could not be used, each worded with its reason."""

    support: list[tuple[str, list[tuple[str, Path]]]]
    problems: list[str]


def read_support_folder(folder: str | os.PathLike, unpack_to: str | os.PathLike | None = None) -> SupportFolder:
    """The examples of ``folder`` (one sub-folder of images per class), or of a zip holding such
    a tree, whose images are written into ``unpack_to`` (a folder the caller removes afterwards;
    needed for a zip). Raises :class:`~metastudio.errors.DatasetError` for a path that is
    neither, or a tree without classes."""
    from metastudio.data.datasets import TreeSource

    source = TreeSource(folder)
    tree = source.list_classes()
    problems = list(source.problems)
    if not source.is_zip:
        support = [(name, [(member, source.path / member) for member in members]) for name, members in tree.items()]
        return SupportFolder(support, problems)
    if unpack_to is None:
        raise MetaStudioError(f"'{source.path}' is a zip: give a folder to unpack its images into")
    read, support = source.reader(), []
    for c, (name, members) in enumerate(tree.items()):
        items = []
        for i, member in enumerate(members):
            target = Path(unpack_to) / f"{c:04d}" / f"{i:05d}{Path(member).suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.write_bytes(read(member))
            except ImageLoadError as e:
                problems.append(str(e))
                continue
            items.append((source.describe(member), target))
        support.append((name, items))
    return SupportFolder(support, problems)


def usable_support(support: SupportSpec) -> tuple[list[tuple[str, list[tuple[str, Any]]]], list[str]]:
    """The support set with only the files that decode as pictures (each decoded once, small),
    classes left without any dropped, and a line for each file or class left out."""
    from metastudio.data.imagestore import ImageStore

    store = ImageStore(16, 1)
    kept, problems = [], []
    for name, items in support:
        good = []
        for image_id, path in items:
            try:
                store.get(path)
                good.append((image_id, path))
            except ImageLoadError as e:
                problems.append(str(e))
            except OSError as e:
                problems.append(str(ImageLoadError(str(path), e.strerror or str(e))))
        if good:
            kept.append((name, good))
        else:
            problems.append(f"class '{name}' left out: it has no usable images")
    return kept, problems


# ------------------------------------------------------------------------------------------------
# folds and the interval


def parse_folds(value: str | int) -> str | int:
    """``"loo"`` or a number of folds of at least 2 (from a command line's text too)."""
    if isinstance(value, str) and value.strip().lower() in (LEAVE_ONE_OUT, "leave-one-out"):
        return LEAVE_ONE_OUT
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"folds must be 'loo' (leave-one-out) or a number of at least 2, got '{value}'") from None
    if k < 2:
        raise ValueError(f"folds must be 'loo' (leave-one-out) or a number of at least 2, got {k}")
    return k


@dataclass(frozen=True)
class Fold:
    """One adaptation of a comparison: the examples it predicts (``held_out``) and those it
    neither adapts to nor predicts (``set_aside``), as (class index, example index) pairs."""

    held_out: tuple[tuple[int, int], ...]
    set_aside: tuple[tuple[int, int], ...] = ()


def make_folds(class_sizes: Sequence[int], folds: str | int, seed: int = 0, *, balanced: bool = True) -> list[Fold]:
    """The folds of a comparison over classes of ``class_sizes`` examples.

    ``"loo"`` (leave-one-out): one fold per example, in class and example order, holding that
    example out. With ``balanced`` (the default) one example of every other class is set aside
    in that fold too, a different one each time (in an order shuffled with ``seed``). Every
    class then adapts with one example fewer than the person gave, so the classes stay as
    balanced as their own examples. Without it, the held-out example's class always has one
    example fewer than the others, and a model that adapts by a few large gradient steps (MAML,
    Meta-LSTM) then nearly never predicts that class: maml-photos is right on 0 of the 25 demo
    photos (5 classes x 5) unbalanced, 24 balanced.

    A number K (stratified K-fold): each class's examples are shuffled with ``seed`` and dealt
    in turn into K folds, every class starting with the first fold, so each class gives up the
    same share in each fold (nothing is set aside). A fold that gets no example (K above the
    largest class) is left out.

    Either way an example of a class with a single example is never held out, nor set aside
    (see the module's docstring), and no fold takes every example of a class."""
    folds = parse_folds(folds)
    rng = random.Random(seed)
    orders = []
    for n in class_sizes:
        order = list(range(n))
        rng.shuffle(order)
        orders.append(order)
    if folds == LEAVE_ONE_OUT:
        made: list[Fold] = []
        for c, i in [(c, i) for c, n in enumerate(class_sizes) if n >= 2 for i in range(n)]:
            f = len(made)  # the f-th example of each other class's shuffled order is set aside
            aside = [(k, orders[k][f % n]) for k, n in enumerate(class_sizes) if k != c and n >= 2] if balanced else []
            made.append(Fold(((c, i),), tuple(aside)))
        return made
    dealt: list[list[tuple[int, int]]] = [[] for _ in range(folds)]
    for c, n in enumerate(class_sizes):
        if n >= 2:
            for j, i in enumerate(orders[c]):
                dealt[j % folds].append((c, i))
    return [Fold(tuple(sorted(f))) for f in dealt if f]


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (0..1) of a proportion of ``correct`` out of ``total``.

    It is the interval the comparison gives, over the held-out predictions pooled from every fold.
    With leave-one-out each fold predicts one image, so a fold's accuracy is 0 or 1. The mean ± 1.96
    standard errors over folds that ``metastudio eval`` reports over episodes
    (:func:`~metastudio.engine.evaluator.mean_ci95`) becomes the normal ("Wald") interval of a
    proportion. That interval is known to cover the truth far less often than 95 % on a few dozen
    predictions. It is ``100 ± 0 %`` whenever every prediction is right, and it can go past 0 or
    100. Wilson's interval stays within 0..1, is not empty at 0 % or 100 %, and covers close to
    95 % from a few predictions up. K-fold uses it too, so that both read the same (with K around
    5, a t interval over K fold accuracies would be too wide to tell models apart). The held-out
    predictions are not fully independent (the folds' training sets overlap), so the interval is
    a guide to how much the examples can tell, not an exact bound."""
    if total <= 0:
        raise ValueError("no predictions")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends, not 1e-16 off
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class ModelScore:
    """How one model did (plain values).

    ``status``: ``"ok"`` (it was scored), ``"unusable"`` (it cannot serve these examples:
    ``reason`` says why and it was not run), ``"failed"`` (it failed while adapting or
    predicting: ``reason``), or ``"cancelled"``. ``accuracy``, ``ci95_low`` and ``ci95_high``
    are percent (the Wilson interval, :func:`wilson_interval`), None unless ok. Times are
    seconds: ``adapt_seconds`` the median of its adaptations, ``first_adapt_seconds`` the first
    one (it also decodes the images and, for a frozen backbone, embeds them),
    ``seconds_per_image`` the prediction time over the images predicted and ``total_seconds``
    from loading the model to its last prediction."""

    name: str
    path: str
    status: str
    reason: str = ""
    title: str = ""
    algorithm: str = ""
    correct: int = 0
    predicted: int = 0
    accuracy: float | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    adaptations: int = 0
    adapt_seconds: float | None = None
    first_adapt_seconds: float | None = None
    seconds_per_image: float | None = None
    total_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.predicted > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareProgress:
    """Where a comparison stands: the model being scored (``model_index`` from 1 of ``models``),
    its folds done of ``folds``; ``score`` is set once that model is finished (its row)."""

    model: str
    model_index: int
    models: int
    folds_done: int
    folds: int
    score: ModelScore | None = None


@dataclass
class Comparison:
    """What :meth:`ModelComparison.run` found: a :class:`ModelScore` per candidate in the order
    given, the ``best`` model's name (None when none could be scored), the classes and number of
    examples, how many are ``held_out`` (predicted) over how many ``adaptations`` (folds) a model,
    and ``notes`` about the examples (classes never held out, files left out)."""

    folds: str | int
    seed: int
    classes: list[str]
    examples: int
    held_out: int
    scores: list[ModelScore]
    best: str | None
    notes: list[str] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    balanced: bool = True
    adaptations: int = 0

    @property
    def verdict(self) -> str:
        """The best model and how sure that is, in one or two plain sentences."""
        return verdict(self)

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (for JSON, or to send across threads)."""
        d = asdict(self)
        d["verdict"] = self.verdict
        return d


def _speed(score: ModelScore) -> float:
    return (score.adapt_seconds or 0.0) + (score.seconds_per_image or 0.0)


def best_model(scores: Sequence[ModelScore]) -> ModelScore | None:
    """The scored model with the highest accuracy; between equal accuracies, the fastest (median
    adaptation plus one prediction); None when none was scored."""
    scored = [s for s in scores if s.ok]
    if not scored:
        return None
    return min(scored, key=lambda s: (-s.correct / s.predicted, _speed(s)))


def _names(names: Sequence[str], most: int = 5) -> str:
    """``a``, ``a and b``, ``a, b and c``, ``a, b, c, d, e and 2 more``."""
    if len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} more"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(comparison: Comparison) -> str:
    """See :attr:`Comparison.verdict`."""
    best = next((s for s in comparison.scores if s.name == comparison.best), None)
    if best is None:
        why = "it was cancelled" if comparison.cancelled else "no model could be scored on these examples"
        return f"No best model: {why}."
    text = (f"Best: {best.name}, right on {best.correct} of {best.predicted} held-out examples "
            f"({best.accuracy:.1f} %, 95 % interval {best.ci95_low:.1f} to {best.ci95_high:.1f} %)")
    others = [s for s in comparison.scores if s.ok and s is not best]
    tied = [s.name for s in others if s.correct * best.predicted == best.correct * s.predicted]
    text += f"; as accurate as {_names(tied)}, and faster." if tied else "."
    close = [s.name for s in others if s.ci95_high >= best.ci95_low and s.name not in tied]
    if close:
        text += (f" {_names(close)} {'is' if len(close) == 1 else 'are'} within the margin of error: with this few "
                 "examples they may do as well; label more images to tell them apart.")
    if comparison.cancelled:
        text += " The comparison was cancelled, so only the models finished before are compared."
    return text


# ------------------------------------------------------------------------------------------------
# the use case


class _Stopped(Exception):
    """The comparison was cancelled between two calls into a model."""


class ModelComparison:
    """Cross-validate ``candidates`` (see :func:`candidate_models`) on ``support`` (a session
    support set: class name, [(image id, file path), ...]).

    ``folds`` is ``"loo"`` or a number K, ``balanced`` whether leave-one-out sets aside an
    example of every other class too (see :func:`make_folds`; ``seed`` fixes the shuffles);
    ``time_limit`` bounds each call into a model's plugin (one adaptation, one prediction), as
    in :class:`ClassifierSession`. ``progress(CompareProgress)`` is called before each fold and
    when each model is finished; ``should_stop()`` is asked before each fold. :meth:`cancel`
    (from any thread) stops at once, also within a plugin call. :meth:`run` does the work."""

    def __init__(self, registry, support: SupportSpec, candidates: Sequence[Candidate], *,
                 folds: str | int = LEAVE_ONE_OUT, seed: int = 0, balanced: bool = True, device="auto",
                 time_limit: float | None = None,
                 progress: Callable[[CompareProgress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.registry = registry
        self.candidates = list(candidates)
        self.folds = parse_folds(folds)
        self.seed = int(seed)
        self.balanced = bool(balanced)
        self.progress = progress
        self._should_stop = should_stop
        self._stopped = threading.Event()
        self.session = ClassifierSession(registry, device, time_limit=time_limit)
        self.support, self.problems = usable_support(support)
        names = [name for name, _ in self.support]
        if len(names) < 2:
            raise MetaStudioError(f"comparing models needs at least two classes with usable images; "
                                  f"the examples have {len(names)}")
        sizes = [len(items) for _, items in self.support]
        self.fold_list = make_folds(sizes, self.folds, self.seed, balanced=self.balanced)
        if not self.fold_list:
            raise MetaStudioError("every class has a single example, so none can be held out to test a model: "
                                  "give at least one class two examples or more")

    def cancel(self) -> None:
        """Stop the comparison (from any thread): the plugin call running now is abandoned, the
        model being scored is reported as cancelled and no other model is run."""
        self._stopped.set()
        self.session.cancel()

    def stopping(self) -> bool:
        if not self._stopped.is_set() and self._should_stop is not None and self._should_stop():
            self._stopped.set()
        return self._stopped.is_set()

    def notes(self) -> list[str]:
        """What a person should know about the examples: classes never held out, files left out."""
        single = [name for name, items in self.support if len(items) == 1]
        notes = []
        if single:
            quoted = ", ".join(f"'{n}'" for n in single)
            notes.append(f"{quoted} {'has' if len(single) == 1 else 'have'} a single example: it is always among "
                         "the examples adapted to and never held out (holding it out would remove its class)")
        if self.folds == LEAVE_ONE_OUT and self.balanced and len(self.fold_list) > 0:
            notes.append("while an example is held out, one example of every other class is set aside too, so that "
                         "the classes stay as balanced as your examples (the seed picks which)")
        elif self.folds != LEAVE_ONE_OUT and len(self.fold_list) < self.folds:
            notes.append(f"{self.folds} folds were asked for but the largest class has {len(self.fold_list)} "
                         f"examples: {len(self.fold_list)} folds are used")
        notes += [f"left out: {p}" for p in self.problems]
        return notes

    def run(self) -> Comparison:
        """Score every candidate in turn (one failing never stops the others) and pick the best."""
        start = time.perf_counter()
        scores: list[ModelScore] = []
        for index, candidate in enumerate(self.candidates, 1):
            if self.stopping():
                scores.append(ModelScore(candidate.name, str(candidate.path), "cancelled", "not run: cancelled"))
                continue
            score = self._score(candidate, index)
            scores.append(score)
            self._tell(candidate.name, index, score.adaptations, score)
        best = best_model(scores)
        examples = sum(len(items) for _, items in self.support)
        return Comparison(
            self.folds, self.seed, [n for n, _ in self.support], examples, sum(len(f.held_out) for f in self.fold_list),
            scores, best.name if best else None, self.notes(), cancelled=self._stopped.is_set(),
            seconds=time.perf_counter() - start, balanced=self.balanced, adaptations=len(self.fold_list))

    def _tell(self, model: str, index: int, done: int, score: ModelScore | None = None) -> None:
        if self.progress is not None:
            self.progress(CompareProgress(model, index, len(self.candidates), done, len(self.fold_list), score))

    def _score(self, candidate: Candidate, index: int) -> ModelScore:
        """Load the candidate, check it can serve the examples, then run every fold."""
        start = time.perf_counter()
        score = ModelScore(candidate.name, str(candidate.path), "unusable")
        try:
            info = self.session.load(candidate.path)
            score.title, score.algorithm = info.title, info.algorithm
            algorithm = self.session.algorithm
            limit = type(algorithm).ways_limit(algorithm.hparams)
        except Exception as error:  # noqa: BLE001 - a model that cannot load is a row saying why
            score.reason = f"cannot be loaded: {for_person(error).message}"
            score.total_seconds = time.perf_counter() - start
            return score
        if limit is not None and limit < len(self.support):
            score.reason = (f"tells at most {limit} classes apart (max_ways={limit}) and the examples have "
                            f"{len(self.support)} classes")
            score.total_seconds = time.perf_counter() - start
            return score
        self._run_folds(candidate, index, score)
        score.total_seconds = time.perf_counter() - start
        return score

    def _run_folds(self, candidate: Candidate, index: int, score: ModelScore) -> None:
        """Adapt to each fold's kept examples and predict its held-out ones, filling ``score``."""
        adapt_times: list[float] = []
        predict_seconds = 0.0
        try:
            for done, fold in enumerate(self.fold_list):
                self._tell(candidate.name, index, done)
                if self.stopping():
                    raise _Stopped
                train, tests, truth = self._split(fold)
                t0 = time.perf_counter()
                adapted = self.session.run(train, [], should_stop=self.stopping)
                t1 = time.perf_counter()
                if adapted.status == "cancelled":
                    raise _Stopped
                if adapted.status != "ok":
                    raise MetaStudioError(adapted.hint)
                adapt_times.append(t1 - t0)
                result = self.session.classify(tests)
                predict_seconds += time.perf_counter() - t1
                for image_id, row in result.probabilities.items():
                    best = max(range(len(row)), key=row.__getitem__)
                    score.correct += int(result.class_names[best] == truth[image_id])
                    score.predicted += 1
                score.adaptations += 1
        except Exception as error:  # noqa: BLE001 - one failing model never stops the others
            if isinstance(error, (_Stopped, PluginCancelled)) and self._stopped.is_set():
                score.status = "cancelled"
                score.reason = f"cancelled after {score.adaptations} of {len(self.fold_list)} adaptations"
                return
            score.status = "failed"
            score.reason = (f"failed after {score.adaptations} of {len(self.fold_list)} adaptations: "
                            f"{for_person(error).message}")
            return
        self._finish(score, adapt_times, predict_seconds)

    def _split(self, fold: Fold):
        """(support without the fold's held-out and set-aside examples, the held-out [(id, path)],
        their true classes)."""
        held_out = fold.held_out
        out = set(held_out) | set(fold.set_aside)
        train = [(name, [item for i, item in enumerate(items) if (c, i) not in out])
                 for c, (name, items) in enumerate(self.support)]
        tests = [self.support[c][1][i] for c, i in held_out]
        truth = {self.support[c][1][i][0]: self.support[c][0] for c, i in held_out}
        return train, tests, truth

    def _finish(self, score: ModelScore, adapt_times: list[float], predict_seconds: float) -> None:
        if score.predicted == 0:
            score.status, score.reason = "failed", "none of the held-out images could be predicted"
            return
        low, high = wilson_interval(score.correct, score.predicted)
        score.status = "ok"
        score.accuracy = 100 * score.correct / score.predicted
        score.ci95_low, score.ci95_high = 100 * low, 100 * high
        score.adapt_seconds = statistics.median(adapt_times)
        score.first_adapt_seconds = adapt_times[0]
        score.seconds_per_image = predict_seconds / score.predicted
        held_out = sum(len(f.held_out) for f in self.fold_list)
        if score.predicted < held_out:
            score.notes.append(f"{held_out - score.predicted} held-out images could not be read by this model")


def compare_models(registry, support: SupportSpec, candidates: Sequence[Candidate], **options) -> Comparison:
    """:class:`ModelComparison` ``(registry, support, candidates, **options).run()``."""
    return ModelComparison(registry, support, candidates, **options).run()


__all__ = [
    "Candidate", "CompareProgress", "Comparison", "Fold", "LEAVE_ONE_OUT", "ModelComparison", "ModelScore", "SupportFolder",
    "best_model", "candidate_models", "compare_models", "make_folds", "parse_folds", "read_support_folder",
    "usable_support", "verdict", "wilson_interval",
]
