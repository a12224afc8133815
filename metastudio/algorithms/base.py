"""The algorithm contract: what every few-shot algorithm (built-in or plugin) implements.

An :class:`Algorithm` is a ``torch.nn.Module`` holding everything that meta-training learns
(a backbone and any heads). It does four things:

1. **Meta-train**: :meth:`Algorithm.meta_train_step` takes a batch of :class:`Episode` s, makes
   one optimisation step and returns plain-float metrics (at least ``loss`` and ``accuracy``).
   The optimiser and learning-rate schedule are built by :meth:`Algorithm.configure_training`.
   An algorithm that learns as a plain classifier over every training class (SimpleShot,
   Baseline++, the pretraining stage of many others) says so in :attr:`Algorithm.trains_on`
   and gets :class:`LabelledBatch` es in :meth:`Algorithm.batch_train_step` instead, with the
   number of classes given once beforehand (:meth:`Algorithm.start_batch_training`).
   Validation is always on episodes, so every algorithm's numbers compare.
2. **Adapt**: :meth:`Algorithm.adapt` turns a person's :class:`SupportSet` into a
   :class:`Learner` -- a classifier for exactly those classes. Adaptation may take several
   steps (gradient descent in MAML-like methods); it reports each through ``progress`` so a
   GUI can plot it live.
3. **Predict**: a :class:`Learner` is a ``torch.nn.Module`` whose ``forward`` is its prediction:
   float images [B, C, H, W] in [0, 1] -> logits [B, N], computed with the same functions as
   meta-training and reaching everything it uses (the algorithm, prototypes, fast weights...)
   through its module tree. :meth:`Learner.predict_proba` (written once, in the base) turns
   uint8 query images into probabilities with it, :meth:`Learner.predict_open_set` also says
   which queries are not like any of the classes ("unsure"; optional: the default rule works
   from the probabilities alone), and :mod:`metastudio.engine.export` writes a stand-alone copy
   of it (:meth:`Learner.standalone`) as TorchScript or ONNX.
4. **Persist**: the algorithm's ``state_dict`` goes to safetensors and everything else (name,
   version, backbone, image size, hyperparameters, history) to JSON metadata -- see
   :mod:`metastudio.engine.checkpoint`; a learner's own tensors (:meth:`Learner.learner_state`)
   may be saved with it and rebuilt by :meth:`Algorithm.restore_learner`. Nothing is ever
   pickled.

Hyperparameters are declared as :class:`HyperParameter` (type, default, range, help, role) so
that forms, CLI flags and validation are derived from one declaration. The ``role`` says when a
value matters: only while meta-training (``training``), in the shape or meaning of the trained
weights (``architecture``), or when a trained model adapts and predicts (``adaptation``). Only
``adaptation`` ones may differ from the trained values when a model is used
(:meth:`Algorithm.adaptation_overrides`).

Images enter as uint8 tensors [B, C, H, W]; :meth:`Algorithm.prepare` moves them to the
algorithm's device and scales them to floats in [0, 1]. :meth:`Algorithm.embed` takes either
(prepared floats are what a learner's ``forward`` passes it).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from metastudio.data.batches import LabelledBatch
from metastudio.data.episodes import Episode, SupportSet
from metastudio.errors import FixedHyperParameterError, MetaStudioDeprecationWarning
from metastudio.data.images import FITS
from metastudio.algorithms.capabilities import CAPABILITIES, check_declarations
from metastudio.algorithms.hyperparameters import TRAINING_HYPERPARAMETERS, HyperParameter
from metastudio.algorithms.openset import OpenSetPrediction, max_probability_prediction

#: What an algorithm meta-trains on (:attr:`Algorithm.trains_on`): episodes only; labelled
#: batches over every training class only; or batches first (``TrainingPlan.batch_steps`` of
#: them), then episodes.
TRAINS_ON = ("episodes", "batches", "batches+episodes")


def class_means(features: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Mean feature of each class [ways, D] of ``features`` [M, D] labelled ``labels`` [M] in
    ``0..ways-1``; classes may have different numbers of examples (one with none gets zeros)."""
    onehot = torch.nn.functional.one_hot(labels, ways).to(features.dtype)  # [M, ways]
    return onehot.t() @ features / onehot.sum(0).clamp_min(1).unsqueeze(1)


def query_accuracy(scores: torch.Tensor, episode: Episode) -> float:
    """Fraction (0..1) of the episode's queries whose highest score [Q, N] is their class."""
    return float((scores.argmax(1) == episode.query_labels.to(scores.device)).float().mean())


@dataclass(frozen=True)
class AdaptProgress:
    """One step of adaptation: ``step`` of ``total`` (1-based), with the support loss if any."""

    step: int
    total: int
    loss: float | None = None


#: What adapt calls with each step of adaptation: progress(AdaptProgress(step, total, loss)).
ProgressCallback = Callable[[AdaptProgress], None]


class Learner(nn.Module):
    """A classifier adapted to one support set, made by :meth:`Algorithm.adapt`: a
    ``torch.nn.Module`` whose :meth:`forward` is its prediction.

    The algorithm it was adapted with is its submodule ``algorithm`` (when given to the
    constructor or assigned), and whatever adaptation produced (prototypes, support embeddings,
    fast weights...) is held as buffers, parameters or submodules, so that the module tree holds
    everything :meth:`forward` uses. Learners are not moved, copied or switched between train and
    eval mode while in use (that would move the algorithm too): predicting runs the algorithm in
    eval mode by itself, and :meth:`standalone` makes a separate copy for export.
    """

    #: True for a learner that must see all queries in one forward pass (transductive batch
    #: norm, say); otherwise :meth:`predict_proba` runs queries in chunks of the algorithm's
    #: ``embed_chunk``.
    joint_queries: ClassVar[bool] = False

    def __init__(self, class_names: Sequence[str], algorithm: Algorithm | None = None):
        super().__init__()
        self.class_names = tuple(class_names)
        self.training = False  # the learner's own mode only: the algorithm's is left as it is
        if algorithm is not None:
            self.algorithm = algorithm

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, N] for float images [B, C, H, W] with values in [0, 1] (as
        :meth:`Algorithm.prepare` makes them: at the model's size, on the learner's device);
        their softmax is the class probabilities, columns in the order of :attr:`class_names`.

        Everything it uses must be reached through the module tree, and it must not branch in
        Python on the batch size: it is traced and exported with a dynamic batch dimension
        (:mod:`metastudio.engine.export`). Write it with the same functions meta-training uses,
        so that there is one implementation of the computation. A learner that does not
        implement it must override :meth:`predict_proba` and cannot be exported."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Learner.forward (images -> logits)")

    def query_chunk(self, count: int) -> int:
        """How many of ``count`` queries :meth:`predict_proba` runs through :meth:`forward` at a
        time: all of them with :attr:`joint_queries`, else the algorithm's ``embed_chunk``."""
        return max(1, count) if self.joint_queries else self.algorithm.embed_chunk

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities [Q, N] (rows sum to 1, float32, on the CPU) for uint8 images [Q, C, H, W]:
        the softmax of :meth:`forward` on the images prepared by :meth:`Algorithm.prepare`, in
        the algorithm's eval mode, without autograd, in chunks of :meth:`query_chunk` queries."""
        if len(images) == 0:
            return torch.zeros(0, len(self.class_names))
        algorithm = self.algorithm
        chunk = self.query_chunk(len(images))
        parts = []
        with torch.inference_mode(), algorithm.evaluating():
            for i in range(0, len(images), chunk):
                prepared = algorithm.prepare(images[i : i + chunk])
                with algorithm.cached_as(prepared, images[i : i + chunk]):
                    parts.append(self(prepared).float().softmax(1).cpu())
        return torch.cat(parts)

    def predict(self, images: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Predicted class names and the probabilities they come from."""
        probs = self.predict_proba(images)
        return [self.class_names[i] for i in probs.argmax(1).tolist()], probs

    def predict_open_set(self, images: torch.Tensor) -> OpenSetPrediction:
        """The probabilities of :meth:`predict_proba` and which queries are **unsure**: not like
        any of the classes (a blank picture, noise, a drawing among photos...), so that their
        best class should not be shown as an answer.

        Returns an :class:`~metastudio.algorithms.openset.OpenSetPrediction`: ``probabilities`` [Q, N]
        (the same as ``predict_proba``), ``scores`` [Q] (float32, CPU) in units of the rule's
        threshold, and ``rule``; a query is unsure when its score is above 1
        (``prediction.unsure``). Images too small to recognise are a separate check, on the file
        (:func:`metastudio.algorithms.openset.too_small_reason`), not part of this method.

        The default is the **maximum-probability rule**: the confidence above chance
        ``c = (p_max - 1/N) / (1 - 1/N)`` is compared with
        :data:`~metastudio.algorithms.openset.CONFIDENCE_THRESHOLD` (score ``(1 - c) / (1 - threshold)``);
        it needs nothing but ``predict_proba``, so every learner has it. It is weak on nonsense
        that the model happens to be sure about.

        A learner with an embedding should override it with the **distance rule**
        (:class:`~metastudio.algorithms.openset.DistanceRule`, as Prototypical Networks do): fit it at
        adaptation with :func:`~metastudio.algorithms.openset.fit_distance_rule` on the support
        features (it measures how far the examples of a class lie from their prototype), then
        return ``rule.predict(query_features, probabilities)``: the distance of the query to its
        nearest prototype divided by the distance an image of that class is expected at, unsure
        above :data:`~metastudio.algorithms.openset.DISTANCE_THRESHOLD`. Compute the probabilities
        and the features from one forward pass, with the same functions :meth:`forward` uses, and
        fall back to this default (``super().predict_open_set(images)``) where the rule cannot be
        fitted, i.e. where ``fit_distance_rule`` returned None."""
        return max_probability_prediction(self.predict_proba(images))

    def learner_state(self) -> dict[str, torch.Tensor]:
        """Tensors that, with the algorithm's weights and the class names, rebuild this learner
        (:meth:`Algorithm.restore_learner`); saved with the model by
        :func:`metastudio.engine.checkpoint.save_model`. Empty (the default) when the learner
        cannot be saved.

        A learner written for the older contract, which returned these tensors from an
        overridden ``state_dict()``, still works: its ``state_dict()`` is called, with a
        ``DeprecationWarning``. (``state_dict`` is ``nn.Module``'s, which export relies on.)"""
        if type(self).state_dict is not nn.Module.state_dict:
            warnings.warn(
                f"{type(self).__name__} overrides state_dict() to return the tensors that rebuild it; "
                "rename state_dict to learner_state", MetaStudioDeprecationWarning, stacklevel=2)
            return dict(self.state_dict())
        return {}

    def standalone(self) -> nn.Module:
        """A self-contained copy of this learner, for use without MetaStudio
        (:mod:`metastudio.engine.export`): deep-copied with its algorithm (so later changes to
        the algorithm do not reach it; the algorithm's optimiser, schedule and feature cache are
        left out), on the CPU in plain float32 (contiguous memory format, no mixed precision),
        in eval mode, without autograd. Calling it is calling :meth:`forward` (logits)."""
        left_out: dict[int, Any] = {}
        for module in self.modules():
            if isinstance(module, Algorithm):
                for value in (module.feature_cache, module.optimizer, module.scheduler):
                    if value is not None:
                        left_out[id(value)] = None
        clone = copy.deepcopy(self, left_out)
        clone.to("cpu", torch.float32).to(memory_format=torch.contiguous_format)
        clone.requires_grad_(False).eval()
        for module in clone.modules():
            if isinstance(module, Algorithm):
                module.use_amp = False
                module.memory_format = torch.contiguous_format
                # Nothing of a copy is trained: a frozen backbone's weights are held (and listed
                # by state_dict, which torch.export reads) like any others.
                module.backbone_frozen = False
        return clone

    def as_module(self) -> nn.Module:
        """Deprecated: :meth:`standalone` with a softmax after it (class probabilities [B, N]),
        as :mod:`metastudio.engine.export` writes it."""
        warnings.warn("Learner.as_module() is deprecated: a learner is a module; export it with "
                      "metastudio.engine.export.export_learner, or use Learner.standalone()",
                      MetaStudioDeprecationWarning, stacklevel=2)
        return Probabilities(self.standalone())


class Probabilities(nn.Module):
    """A classifier module giving logits (a stand-alone :class:`Learner`), followed by a softmax:
    float images [B, C, H, W] in [0, 1] -> class probabilities [B, N] (float32)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.training = classifier.training

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).float().softmax(1)


class Algorithm(nn.Module, ABC):
    """Base class of every few-shot algorithm. Subclasses set the class attributes and
    implement :meth:`meta_train_step` and :meth:`adapt`.

    The constructor receives the backbone already built for the data's channels and image size,
    plus hyperparameter values (missing ones take their defaults; unknown ones are an error).
    """

    #: Registry name (lower case, e.g. ``"protonet"``).
    name: ClassVar[str] = ""
    #: Version of the algorithm's implementation and saved-state layout.
    version: ClassVar[str] = "1"
    #: Human-readable name and one-sentence description for pickers.
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: ``metric``, ``model`` or ``optimization`` (the product's three families).
    family: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = TRAINING_HYPERPARAMETERS
    #: What meta-training gives it (one of :data:`TRAINS_ON`): ``"episodes"`` for
    #: :meth:`meta_train_step`, ``"batches"`` for :meth:`batch_train_step`, or
    #: ``"batches+episodes"`` for both, batches first. Checked when the class is defined: the
    #: methods it names must be implemented.
    trains_on: ClassVar[str] = "episodes"
    # Capabilities (see metastudio.algorithms.capabilities), checked when the class is defined.
    #: Meta-training distorts its images at random while the ``distort`` hyperparameter is on
    #: (:meth:`training_embed`); declare :data:`~metastudio.algorithms.augment.DISTORT` and
    #: ``DISTORT_PROB`` with it. Refused on a frozen backbone, whose features are computed once.
    distorts_training_images: ClassVar[bool] = False
    #: :meth:`adapt` reports the support loss of each of its steps through ``progress``
    #: (gradient steps, say); the app plots it live while adapting.
    reports_adaptation_loss: ClassVar[bool] = False
    #: It can be built with ``freeze_backbone=True`` (a pretrained backbone kept as it is, its
    #: features computed once); False refuses ``--freeze-backbone`` runs before any data loads.
    supports_frozen_backbone: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            return  # a base for other algorithms (no registry name): checked in its subclasses
        where = f"algorithm '{cls.name}' ({cls.__module__}.{cls.__qualname__})"
        if cls.trains_on not in TRAINS_ON:
            raise TypeError(f"{where}: trains_on must be one of {', '.join(map(repr, TRAINS_ON))}, "
                            f"not {cls.trains_on!r}")
        needed = {"episodes": "meta_train_step", "batches": "batch_train_step"}
        for part, method in needed.items():
            if part in cls.trains_on.split("+") and getattr(cls, method) is getattr(Algorithm, method):
                raise TypeError(f"{where}: trains_on={cls.trains_on!r} needs a {method} method")
        check_declarations(cls, Algorithm, where)

    def __init__(
        self,
        backbone: nn.Module,
        *,
        backbone_name: str,
        image_size: int,
        channels: int,
        hparams: Mapping[str, Any] | None = None,
        freeze_backbone: bool = False,
        fit: str = "stretch",
    ):
        """Built by the engine: ``backbone`` (an ``nn.Module`` whose ``out_features`` is its
        feature width) and its registry name, the image side and channels the model sees, the
        hyperparameter values (validated into :attr:`hparams`), whether the backbone is frozen
        and how other image shapes are made square. A subclass that needs layers or buffers of
        its own makes them in its ``__init__(self, *args, **kwargs)`` after calling
        ``super().__init__(*args, **kwargs)``."""
        super().__init__()
        # channels_last makes the convolutions ~1.5x faster on CPUs (oneDNN) and on GPUs.
        #: The memory format :meth:`prepare` gives images (a stand-alone copy uses the contiguous one).
        self.memory_format = torch.channels_last
        self.backbone = backbone.to(memory_format=self.memory_format)
        self.backbone_name = backbone_name
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.hparams = self.resolve_hparams(hparams or {})
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.use_amp = True
        #: bfloat16 mixed precision on the CPU as well (``--precision bf16``): about 1.4x faster
        #: training on CPUs with native bfloat16 (AVX512-BF16, AMX); off by default, as float32
        #: is faster on CPUs without it and the numbers differ a little.
        self.amp_on_cpu = False
        #: A frozen backbone (a pretrained one, say) is never trained, always runs in eval mode,
        #: and is not saved: model files hold only what the algorithm learned, and loading
        #: rebuilds the backbone from its plugin.
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        #: How images of other shapes become image_size squares (see metastudio.data.images.to_array).
        self.fit = fit
        #: Optional :class:`~metastudio.data.feature_cache.FeatureCache`: with a frozen backbone,
        #: features of images seen before are reused instead of recomputed.
        self.feature_cache = None
        self._backbone_fingerprint: str | None = None  # computed on first use (frozen weights never change)
        self._cache_source: tuple[torch.Tensor, torch.Tensor] | None = None  # see cached_as
        self.backbone_frozen = bool(freeze_backbone)
        #: What only training uses (the classifier over every training class of batch
        #: training, say): trained and kept in resume checkpoints, never in a model file. See
        #: :meth:`start_batch_training`.
        self.training_modules = nn.ModuleDict()
        self._with_training_modules = False
        if self.backbone_frozen and not self.supports_frozen_backbone:
            raise ValueError(f"{self.title or self.name} does not work on a frozen backbone (it declares "
                             "supports_frozen_backbone = False): train the backbone with it")
        if self.distorts_training_images and self.hparams.get("distort") and self.backbone_frozen:
            raise ValueError(
                f"distort=true distorts training images, but the backbone '{backbone_name}' is frozen and a head on "
                f"it trains on features computed once per image; use distort=false")
        if self.backbone_frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    # -- a frozen backbone stays out of training mode and out of the saved state ----------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        dropped = [prefix + "backbone."] if self.backbone_frozen else []
        if not self._with_training_modules:
            dropped.append(prefix + "training_modules.")
        for key in [k for k in state if k.startswith(tuple(dropped))] if dropped else []:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.backbone_frozen:
            state_dict = {**{f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}, **state_dict}
        if not self._with_training_modules:
            own = {f"training_modules.{k}": v for k, v in self.training_modules.state_dict().items()}
            state_dict = {**own, **state_dict}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @contextlib.contextmanager
    def with_training_modules(self):
        """Within it, :meth:`state_dict` and :meth:`load_state_dict` include
        :attr:`training_modules` (for resume checkpoints; a model file never holds them)."""
        before, self._with_training_modules = self._with_training_modules, True
        try:
            yield self
        finally:
            self._with_training_modules = before

    # -- hyperparameters -------------------------------------------------------------------
    @classmethod
    def resolve_hparams(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validated values for every declared hyperparameter (defaults filled in)."""
        declared = {h.name: h for h in cls.hyperparameters}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ValueError(
                f"{cls.name} has no hyperparameter {', '.join(unknown)}; it has: {', '.join(declared)}"
            )
        return {n: h.validate(given[n]) if n in given else h.default for n, h in declared.items()}

    @classmethod
    def ways_limit(cls, hparams: Mapping[str, Any]) -> int | None:
        """The most classes an episode may have for a model with these (resolved) hyperparameters,
        or None for no limit (the default). An algorithm whose output has a fixed number of label
        positions returns that number, so that a run with more ways is refused before any data
        loads, and the app can keep its episode settings within it."""
        return None

    @classmethod
    def adaptation_overrides(cls, trained: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The validated values of ``overrides`` that differ from a trained model's hyperparameters
        ``trained``, for using that model.

        Only ``adaptation`` hyperparameters may differ: an override of a ``training`` or
        ``architecture`` one to another value raises
        :class:`~metastudio.errors.FixedHyperParameterError` (a ``ValueError``) naming it
        (an override equal to the trained value changes nothing and is accepted). Unknown names
        and invalid values raise ValueError, as in :meth:`resolve_hparams`."""
        resolved = cls.resolve_hparams({**trained, **overrides})
        declared = {h.name: h for h in cls.hyperparameters}
        changed = {k: v for k, v in resolved.items() if k in overrides and trained.get(k, declared[k].default) != v}
        fixed = []
        for name, value in changed.items():
            h = declared[name]
            if h.role == "adaptation":
                continue
            why = "it is only used while meta-training" if h.role == "training" else "the trained weights depend on it"
            fixed.append(f"{name} is fixed by the trained model ({why}): it was trained with "
                         f"{name}={trained.get(name, h.default)!r} and cannot be used with {name}={value!r}")
        if fixed:
            raise FixedHyperParameterError(
                f"{'; '.join(fixed)}. Meta-train a new {cls.title or cls.name} model to change "
                f"{'it' if len(fixed) == 1 else 'them'}."
            )
        return changed

    # -- devices and precision ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def autocast(self):
        """Mixed precision (bfloat16) on CUDA, and on the CPU when ``amp_on_cpu`` is set; a no-op
        elsewhere."""
        dev = self.device
        if self.use_amp and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.use_amp and self.amp_on_cpu and dev.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] -> float [0, 1] on the algorithm's device."""
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        else:
            images = images.float()
        return images.contiguous(memory_format=self.memory_format) if images.dim() == 4 else images

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode for the duration of a ``with`` block (batch norm uses its running statistics
        and never updates them), then the previous mode again. Adaptation and prediction run in
        it so that adapting never changes the algorithm, whatever mode it was left in."""
        was_training = self.training
        self.train(False)
        try:
            yield self
        finally:
            self.train(was_training)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D] (float32) for uint8 images, or for float images already
        prepared (:meth:`prepare`; what a learner's ``forward`` passes), with no autograd graph
        through a frozen backbone; uint8 images are cached by content when a frozen backbone has
        a feature cache.

        With a frozen backbone, a floating-point [B, D] input is taken as its features already
        computed (:mod:`metastudio.engine.features`): meta-training a head then never runs the
        backbone."""
        if images.dim() == 2 and images.is_floating_point():
            if not self.backbone_frozen:
                raise ValueError("precomputed features can only stand in for a frozen backbone")
            return images.to(self.device, torch.float32)
        if self._cache_source is not None and images is self._cache_source[0]:
            images = self._cache_source[1]
        if self.backbone_frozen and self.feature_cache is not None and images.dtype == torch.uint8 and len(images):
            host = images.cpu()
            contents = [img.numpy().tobytes() for img in host]
            features = self.feature_cache.embed(self.feature_namespace(), contents, lambda idx: self._embed(host[idx]))
            return features.to(self.device)
        return self._embed(images)

    @contextlib.contextmanager
    def cached_as(self, prepared: torch.Tensor, images: torch.Tensor):
        """Within the block, :meth:`embed` of the tensor ``prepared`` (what :meth:`prepare` made of
        the uint8 ``images``) is that of ``images``, whose features a frozen backbone's feature
        cache holds by content: :meth:`Learner.predict_proba` runs the learner's ``forward`` so,
        and repeated predictions on the same images reuse their features. A no-op without a
        frozen backbone with a feature cache."""
        if not (self.backbone_frozen and self.feature_cache is not None and images.dtype == torch.uint8):
            yield
            return
        self._cache_source = (prepared, images)
        try:
            yield
        finally:
            self._cache_source = None

    #: Images embedded per forward pass by :meth:`embed_all` (bounds memory).
    embed_chunk: ClassVar[int] = 512

    @torch.inference_mode()
    def embed_all(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (:meth:`embed`) of any number of images, in chunks of ``embed_chunk``, in
        eval mode and without autograd (nothing is updated): what adapting and predicting use."""
        with self.evaluating():
            chunk = self.embed_chunk
            return torch.cat([self.embed(images[i : i + chunk]) for i in range(0, len(images), chunk)])

    def training_embed(self, images: torch.Tensor) -> torch.Tensor:
        """What meta-training embeds: :meth:`embed` of the images, randomly distorted first
        (:mod:`metastudio.algorithms.augment`) while training when the algorithm declares
        :attr:`distorts_training_images` and its ``distort`` hyperparameter is on. Adapting,
        predicting and validating use :meth:`embed` and never distort."""
        if not (self.distorts_training_images and self.training and self.hparams.get("distort")):
            return self.embed(images)
        from metastudio.algorithms.augment import random_affine  # augment declares its hyperparameters with this module

        return self.embed(random_affine(self.prepare(images), float(self.hparams["distort_prob"])))

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast(), torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            return self.backbone(self.prepare(images)).float()

    def feature_namespace(self) -> str:
        """What identifies this algorithm's frozen features besides the image: the backbone and
        a fingerprint of its weights, the input shape, and the numeric precision (bf16 features
        differ slightly from fp32 ones)."""
        if self._backbone_fingerprint is None:
            h = hashlib.blake2b(digest_size=8)
            for key, value in sorted(self.backbone.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._backbone_fingerprint = h.hexdigest()
        bf16 = self.use_amp and (self.device.type == "cuda" or (self.amp_on_cpu and self.device.type == "cpu"))
        precision = "bf16" if bf16 else "fp32"
        return f"{self.backbone_name}@{self._backbone_fingerprint}|{self.channels}x{self.image_size}|{precision}"

    # -- meta-training -------------------------------------------------------------------------
    def configure_training(self, total_steps: int) -> None:
        """Build the optimiser and learning-rate schedule for ``total_steps`` meta-training steps.

        The default is Adam over all parameters with the schedule from ``lr_schedule``.
        Called by the trainer before the first step (and before loading a resumed optimiser).
        """
        hp = self.hparams
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{self.name} has nothing to train: its backbone is frozen and it has no head")
        self.optimizer = self.make_optimizer(trainable)
        if hp["lr_schedule"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, total_steps))
        elif hp["lr_schedule"] == "linear":
            steps = max(1, total_steps)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: max(0.0, 1.0 - i / steps))
        elif hp["lr_schedule"] == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=hp["lr_step"], gamma=0.5)
        else:
            self.scheduler = None

    def make_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The meta-training optimiser over ``parameters`` (Adam with ``lr`` and ``weight_decay``)."""
        return torch.optim.Adam(parameters, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])

    def optimizer_step(self, loss: torch.Tensor, max_norm: float = 0.0) -> None:
        """Backward, step the optimiser and the schedule (helper for subclasses); ``max_norm`` > 0
        first scales the gradients down so that their total norm is at most ``max_norm``."""
        assert self.optimizer is not None, "configure_training() must be called before meta-training"
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], max_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def episodes_step(self, episodes: Sequence[Episode],
                      episode_loss: Callable[[Episode], tuple[torch.Tensor, int]]) -> dict[str, float]:
        """One optimiser step on the mean over ``episodes`` of ``episode_loss(episode)``, which
        gives an episode's loss and how many of its queries it classified right: what
        :meth:`meta_train_step` returns (``loss``, the mean, and ``accuracy`` over all queries)."""
        losses, correct, total = [], 0, 0
        for episode in episodes:
            loss, right = episode_loss(episode)
            losses.append(loss)
            correct += int(right)
            total += len(episode.query_labels)
        loss = torch.stack(losses).mean()
        self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "accuracy": correct / max(total, 1)}

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float(self.hparams.get("lr", 0.0))

    def meta_train_step(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """One optimisation step on a batch of episodes. Returns plain floats: at least
        ``loss`` (mean over episodes) and ``accuracy`` (fraction of queries right, 0..1).
        Every algorithm that trains on episodes (:attr:`trains_on`) implements it."""
        raise NotImplementedError(f"{self.name} does not train on episodes (trains_on={self.trains_on!r})")

    # -- training on labelled batches (trains_on "batches" or "batches+episodes") ---------------
    def start_batch_training(self, classes: int) -> None:
        """Get ready to train on labelled batches over ``classes`` training classes: called by
        the trainer once before the first step (also when a run resumes), before the optimiser
        is built. Put what only this training needs (a linear classifier over the ``classes``,
        say) into :attr:`training_modules`: it is trained and kept in resume checkpoints, and
        left out of the model file, which holds only what adapting and predicting use. The
        default adds nothing."""

    def batch_train_step(self, batch: LabelledBatch) -> dict[str, float]:
        """One optimisation step on a :class:`LabelledBatch` (labels index every training class,
        ``batch.classes`` of them). Returns plain floats: ``loss`` and ``accuracy`` (fraction of
        the batch classified right among all the classes; the training plot labels it so, apart
        from episode accuracy). Every algorithm that trains on batches implements it."""
        raise NotImplementedError(f"{self.name} does not train on labelled batches (trains_on={self.trains_on!r})")

    def prepare_batch_training(self, classes: int) -> None:
        """What the trainer calls: :meth:`start_batch_training`, then the new training modules
        join the algorithm's device."""
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise ValueError(f"batch training needs at least 2 classes, got {classes!r}")
        self.start_batch_training(classes)
        self.training_modules.to(self.device)

    # -- adaptation and prediction -------------------------------------------------------------
    @abstractmethod
    def adapt(self, support: SupportSet, progress: ProgressCallback | None = None) -> Learner:
        """A :class:`Learner` for the support set's classes. Must not change the algorithm."""

    def restore_learner(self, class_names: Sequence[str], state: Mapping[str, torch.Tensor]) -> Learner:
        """Rebuild a learner saved with :meth:`Learner.learner_state` (optional)."""
        raise NotImplementedError(f"{self.name} cannot restore a saved learner; adapt it to a support set instead")

    def evaluate_episode(self, episode: Episode) -> float:
        """Accuracy (0..1) on the episode's queries after adapting to its support set.

        The evaluator (:func:`metastudio.engine.evaluator.episode_accuracy`) takes these two steps
        itself when this method is not overridden, guarding each and checking the probabilities;
        an override (one forward pass over support and queries, say) is called as a whole, and
        what it returns must be a number from 0 to 1."""
        learner = self.adapt(episode.support)
        probs = learner.predict_proba(episode.query_images)
        return query_accuracy(probs, episode)

    # -- description ---------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name, "version": cls.version, "title": cls.title, "family": cls.family,
            "description": cls.description, "hyperparameters": [h.describe() for h in cls.hyperparameters],
            "trains_on": cls.trains_on,
            "capabilities": {name: bool(getattr(cls, name)) for name in CAPABILITIES},
        }

    def config(self) -> dict[str, Any]:
        """What, with the weights, rebuilds this algorithm (goes into the saved metadata)."""
        return {
            "algorithm": self.name, "algorithm_version": self.version, "backbone": self.backbone_name,
            "image_size": self.image_size, "channels": self.channels, "hyperparameters": dict(self.hparams),
            "backbone_frozen": self.backbone_frozen, "fit": self.fit,
        }
