"""Unsure predictions: saying that a query image is not like any of a person's classes.

A few-shot classifier always answers with one of the support set's classes, so without a check a
blank picture, noise or a handwritten character gets a photo class and a percentage. Every
:class:`~metastudio.algorithms.base.Learner` therefore also answers :meth:`predict_open_set`
(``Learner.predict_open_set``): the probabilities plus, for each query, a *score* in units of its
rule's threshold, so that a query is **unsure** ("not like any of your classes") when its score
is above 1, whatever the rule. Two rules:

* **Distance rule** (learners with an embedding; the built-in Prototypical Networks). Each class
  has a prototype (the mean of its examples' features) and the support set says how far an image
  of a class lies from its prototype: the within-class variance ``s2`` (mean squared distance of
  an image to the mean of its class, unbiased: the squared distances summed over all classes,
  divided by the examples minus the classes). A new image of class ``c`` is then expected at
  squared distance ``e_c = s2 * (1 + 1/n_c)`` from the prototype of ``c`` (``n_c`` examples: the
  prototype itself is off by ``s2 / n_c``). The query's ratio is ``min_c ||z - p_c||^2 / e_c``:
  about 1 for an image of one of the classes, whatever the number of examples, and far above 1
  for one unlike them all; the query is unsure when it is above :data:`DISTANCE_THRESHOLD`.
  With one example per class ``s2`` cannot be measured, so it is shrunk towards a prior taken
  from the distances between the prototypes: the within-class variance is
  :data:`SPREAD_RATIO` times the between-class one (measured on the photos model's held-out
  classes), and the prior counts as :data:`PRIOR_WEIGHT` degrees of freedom, so with five or more
  examples per class the support set's own spread dominates. See :func:`fit_distance_rule`.
* **Maximum-probability rule** (Hendrycks & Gimpel 2017), the fallback for a learner that only
  has probabilities: the confidence above chance ``c = (p_max - 1/N) / (1 - 1/N)`` (0 for a
  uniform answer, 1 for a certain one); unsure when ``c`` is below
  :data:`CONFIDENCE_THRESHOLD`. It is weaker: a confident wrong answer on nonsense stays
  confident.

Besides, an image with a side under :data:`MIN_SIDE` pixels is too small to recognise
(:func:`too_small_reason`), whatever the rule says.

The thresholds are calibrated on held-out data, never on the images they are measured on:
mini-ImageNet *train* classes (which the photos model's centring mean also came from, but
which no evaluation uses) for the in-class side, and Omniglot's *background* alphabets plus
noise and flat colours of other seeds for the out-of-domain side; ``benchmarks/harnesses/openset_photos.py
--calibrate`` recomputes them and ``docs/benchmarks.md`` has the numbers on mini-ImageNet val.
This module uses torch only (no Qt).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: The reason shown for a query the rule finds unlike every class.
REASON_UNLIKE = "not like any of your classes"

#: Smallest side, in pixels, of an image that can be recognised. Measured with the photos model
#: on mini-ImageNet val photos shrunk to s x s before use (16-way, 5 examples per class at full
#: size; docs/benchmarks.md, "Unsure predictions"): 89 % right at full size (84 px), 64 % at 24,
#: 46 % at 16, 29 % at 12 and 12 % at 8 (chance 6 %). At 16 pixels accuracy is half that of full
#: size; below it fewer than a third of the answers are right, so such images get no confident
#: prediction. An image at least as big as the model's own input is never
#: too small (see too_small_reason), so models with small inputs keep their small images.
MIN_SIDE = 16

#: Distance rule: unsure when the nearest-prototype ratio is above this. The 95th percentile of
#: in-class ratios of the photos model on mini-ImageNet *train* episodes (2- and 5-way, 1, 2, 5
#: and 10 examples per class, weighted alike), so that about 5 % of the images of a person's
#: classes are unsure (``benchmarks/harnesses/openset_photos.py --calibrate``; measured on val in
#: docs/benchmarks.md). It is a constant of the rule, not a setting of each model: the ratio is
#: normalised by the support set's own spread, so its in-class distribution hardly moves with the
#: number of examples or classes (the per-setting 95th percentiles are 1.28-1.41), and a person
#: gets the same meaning of "unsure" from every model that has the distance rule. It and
#: SPREAD_RATIO are the photos model's; with another embedding the in-class ratios spread
#: differently, and the rule is then more or less strict than this 5 %.
DISTANCE_THRESHOLD = 1.36

#: Distance rule, few examples per class: the within-class variance is taken as this many times
#: the between-class variance of the prototypes when the support set cannot tell it (3.06 for
#: the photos model's features of mini-ImageNet train classes). Other models have other ratios;
#: it only matters with one or two examples per class.
SPREAD_RATIO = 3.1

#: Distance rule: degrees of freedom the prior spread counts for against the support set's own
#: (``M - N`` for M examples of N classes): as much as five measured distances, so that it decides
#: with one example per class and weighs a fifth with 5 classes of 5 examples.
PRIOR_WEIGHT = 5.0

#: Maximum-probability rule: unsure when the confidence above chance is below this. The 5th
#: percentile of in-class confidences of the photos model on the same mini-ImageNet train
#: episodes as DISTANCE_THRESHOLD (0.339), so about 5 % of in-class images are unsure with it too.
CONFIDENCE_THRESHOLD = 0.34

RULES = ("distance", "max-probability")


@dataclass(frozen=True)
class OpenSetPrediction:
    """What :meth:`Learner.predict_open_set` returns.

    ``probabilities`` [Q, N] are those of ``predict_proba``; ``scores`` [Q] (float32, CPU) say
    how unlike the classes each query is, in units of the rule's threshold: a query is unsure
    when its score is above 1 (:attr:`unsure`). ``rule`` is ``"distance"`` or
    ``"max-probability"`` (see the module docstring)."""

    probabilities: torch.Tensor
    scores: torch.Tensor
    rule: str

    @property
    def unsure(self) -> torch.Tensor:
        """Bool [Q]: True where the query is not like any of the classes."""
        return self.scores > 1.0


# -- the maximum-probability rule ---------------------------------------------------------------
def confidence_above_chance(probabilities: torch.Tensor) -> torch.Tensor:
    """``(p_max - 1/N) / (1 - 1/N)`` per row of probabilities [Q, N]: 0 at chance, 1 when certain
    (1 for every row when N is 1)."""
    probabilities = probabilities.float()
    ways = probabilities.shape[1] if probabilities.dim() == 2 else 0
    if ways <= 1:
        return torch.ones(len(probabilities))
    chance = 1.0 / ways
    return ((probabilities.max(1).values - chance) / (1.0 - chance)).clamp(0.0, 1.0)


def max_probability_prediction(probabilities: torch.Tensor,
                               threshold: float = CONFIDENCE_THRESHOLD) -> OpenSetPrediction:
    """The fallback rule on probabilities [Q, N]: unsure when the confidence above chance is below
    ``threshold`` (score ``(1 - c) / (1 - threshold)``, above 1 exactly then)."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"the confidence threshold must be in [0, 1), got {threshold}")
    confidence = confidence_above_chance(probabilities)
    scores = ((1.0 - confidence) / (1.0 - threshold)).float().cpu()
    return OpenSetPrediction(probabilities, scores, "max-probability")


# -- the distance rule --------------------------------------------------------------------------
@dataclass(frozen=True)
class DistanceRule:
    """A support set's prototypes [N, D] and the squared distance ``expected`` [N] at which a new
    image of each class is expected from its prototype (see :func:`fit_distance_rule`)."""

    prototypes: torch.Tensor
    expected: torch.Tensor

    def ratios(self, features: torch.Tensor) -> torch.Tensor:
        """``min_c ||x - p_c||^2 / expected_c`` [Q] for features [Q, D]: about 1 for an image of
        one of the classes, larger the less it is like any of them."""
        x = features.float()
        p = self.prototypes.to(x.device, torch.float32)
        d = (x.pow(2).sum(1, keepdim=True) - 2 * x @ p.t() + p.pow(2).sum(1)).clamp_min(0)
        return (d / self.expected.to(x.device, torch.float32)).min(1).values

    def predict(self, features: torch.Tensor, probabilities: torch.Tensor,
                threshold: float = DISTANCE_THRESHOLD) -> OpenSetPrediction:
        """The distance rule's prediction for features [Q, D] with their probabilities [Q, N]."""
        if threshold <= 0:
            raise ValueError(f"the distance threshold must be positive, got {threshold}")
        scores = (self.ratios(features) / threshold).float().cpu()
        return OpenSetPrediction(probabilities, scores, "distance")


def within_class_variance(features: torch.Tensor, labels: torch.Tensor, ways: int, *,
                          spread_ratio: float = SPREAD_RATIO,
                          prior_weight: float = PRIOR_WEIGHT) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Prototypes [ways, D], shots per class [ways] and the within-class variance ``s2`` of a
    support set's features [M, D] (labels [M] in 0..ways-1), or ``s2 = 0.0`` when it cannot be
    told (one class with one example, or every image the same).

    ``s2 = (SS + k * prior) / (M - ways + k)``: ``SS`` the squared distances of the images to
    their class means, ``k`` = ``prior_weight``, and ``prior = r * B / (1 + r * h)`` with ``r`` =
    ``spread_ratio``, ``B`` half the mean squared distance between two prototypes and ``h`` the
    mean over pairs of ``(1/n_i + 1/n_j) / 2``: the within-class variance that makes the
    prototypes as far apart as they are, if it is ``r`` times the between-class variance (each
    prototype is off its class's true mean by ``s2 / n`` on average, hence ``h``)."""
    x = features.detach().double()
    labels = labels.to(x.device)
    onehot = torch.nn.functional.one_hot(labels, ways).to(x.dtype)
    counts = onehot.sum(0)
    prototypes = onehot.t() @ x / counts.clamp_min(1).unsqueeze(1)
    ss = float((x - prototypes[labels]).pow(2).sum())
    dof = float(len(x) - int((counts > 0).sum()))
    prior, weight = 0.0, 0.0
    present = torch.nonzero(counts > 0).flatten()
    if len(present) >= 2 and prior_weight > 0:
        p, n = prototypes[present], counts[present]
        i, j = torch.triu_indices(len(p), len(p), 1)
        between = float((p[i] - p[j]).pow(2).sum(1).mean()) / 2
        h = float(((1 / n[i] + 1 / n[j]) / 2).mean())
        prior, weight = spread_ratio * between / (1 + spread_ratio * h), prior_weight
    if dof + weight <= 0:
        return prototypes.float(), counts, 0.0
    return prototypes.float(), counts, (ss + weight * prior) / (dof + weight)


def fit_distance_rule(features: torch.Tensor, labels: torch.Tensor, ways: int, *,
                      spread_ratio: float = SPREAD_RATIO,
                      prior_weight: float = PRIOR_WEIGHT) -> DistanceRule | None:
    """The distance rule for a support set's features [M, D] (the space the distances are taken
    in, see :meth:`Learner.predict_open_set`) with labels [M] in 0..ways-1, or None when the
    spread cannot be told (then the learner uses the maximum-probability rule)."""
    prototypes, counts, s2 = within_class_variance(features, labels, ways, spread_ratio=spread_ratio,
                                                   prior_weight=prior_weight)
    scale = float(prototypes.pow(2).sum(1).mean()) if len(prototypes) else 0.0
    if not math.isfinite(s2) or s2 <= 1e-12 * scale or s2 <= 0:  # identical images: no spread to compare with
        return None
    expected = (s2 * (1 + 1 / counts.clamp_min(1).double())).float()
    return DistanceRule(prototypes, expected)


# -- images too small to recognise --------------------------------------------------------------
def too_small_reason(width: int, height: int, image_size: int | None = None, min_side: int = MIN_SIDE) -> str | None:
    """Why an image of ``width`` x ``height`` pixels is too small to recognise, in plain words,
    or None when it is big enough. The limit is ``min_side``, or the model's ``image_size``
    when that is smaller (an image as big as the model's input is never too small)."""
    limit = min(min_side, image_size) if image_size else min_side
    if min(width, height) >= limit:
        return None
    return f"too small to recognise ({width}×{height} pixels)"


def unsure_reasons(ids: Sequence[str], unlike: Sequence[bool], sizes: Sequence[tuple[int, int]],
                   image_size: int | None = None) -> dict[str, str]:
    """Why each query gets no confident prediction, by id, in plain words (what
    ``SessionResult.unsure`` holds): too small to recognise (its (width, height) in ``sizes``),
    else not like any of the classes where ``unlike`` (``OpenSetPrediction.unsure``) says so.
    ``image_size`` is the model's input size (an image as big is never too small)."""
    reasons = {}
    for image_id, far, (width, height) in zip(ids, unlike, sizes):
        reason = too_small_reason(width, height, image_size) or (REASON_UNLIKE if far else None)
        if reason:
            reasons[image_id] = reason
    return reasons


__all__ = ["CONFIDENCE_THRESHOLD", "DISTANCE_THRESHOLD", "MIN_SIDE", "PRIOR_WEIGHT", "REASON_UNLIKE", "RULES",
           "SPREAD_RATIO", "DistanceRule", "OpenSetPrediction", "confidence_above_chance", "fit_distance_rule",
           "max_probability_prediction", "too_small_reason", "unsure_reasons", "within_class_variance"]
