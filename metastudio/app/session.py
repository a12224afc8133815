"""A person's classifier: adapt a model to their labelled images and classify the rest.

:class:`ClassifierSession` is what the desktop app and the ``metastudio classify`` command
(anything that works with files rather than datasets) drive. It keeps the loaded model, decoded
images and cached features between calls, so that after one more image is dropped into a class
only that image is decoded and embedded again. Everything it returns is plain Python (names,
floats, strings), ready to be sent across threads; :func:`write_predictions` saves it as CSV.

The model's code is a plugin's: adapting and predicting go through
:func:`~metastudio.engine.guard.call_guarded` (a failure is a
:class:`~metastudio.errors.PluginError` naming the plugin, with an optional time limit) and what
a learner predicts is checked (:func:`~metastudio.engine.guard.check_probabilities`) before it
is returned.

One session is used by one thread at a time; only :meth:`ClassifierSession.cancel` may be called
from another.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metastudio.algorithms.base import AdaptProgress, Algorithm, Learner
from metastudio.algorithms.openset import unsure_reasons
from metastudio.data.episodes import stack_support
from metastudio.data.feature_cache import use_feature_cache
from metastudio.data.imagestore import ImageStore
from metastudio.engine.checkpoint import load_model
from metastudio.engine.devices import configure_for_speed, describe_device, resolve_device
from metastudio.engine.guard import algorithm_words, call_guarded, check_probabilities
from metastudio.errors import (
    ImageLoadError, MetaStudioError, PluginCancelled, PluginError, PluginOrigin, PluginTimeout, plugin_of,
)

#: A support set as the app describes it: (class name, [(image id, file path), ...]) per class.
SupportSpec = Sequence[tuple[str, Sequence[tuple[str, str | os.PathLike]]]]
#: Query images: [(image id, file path), ...].
QuerySpec = Sequence[tuple[str, str | os.PathLike]]


@dataclass
class ModelInfo:
    """What the app shows about the loaded model (plain values)."""

    path: str
    title: str
    algorithm: str
    algorithm_title: str
    family: str
    backbone: str
    image_size: int
    channels: int
    device: str
    hyperparameters: dict[str, Any]
    hyperparameter_specs: list[dict[str, Any]]
    description: str = ""
    iterative: bool = False  # adapt reports a loss per step (reports_adaptation_loss): plotted

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SessionResult:
    """Predictions for the query images (plain values).

    ``status`` is ``"ok"`` when there are predictions, else ``"hint"`` with ``hint`` saying what
    the person should do (add a class, add images...). ``probabilities`` maps a query image id to
    one probability per entry of ``class_names`` (the classes that have images, in order).
    ``problems`` maps an image id to why its file could not be used; such images take no part.

    ``unsure`` maps the id of a query image that gets no confident prediction to why, in plain
    words: ``"not like any of your classes"`` (:data:`~metastudio.algorithms.openset.REASON_UNLIKE`)
    or ``"too small to recognise (1×1 pixels)"``. Such an image still has its
    ``probabilities`` (the closest classes), but its best class is not an answer: show it as
    unsure, with the reason. Ids not in ``unsure`` are confident predictions. See
    :meth:`~metastudio.algorithms.base.Learner.predict_open_set` for the rule.
    """

    status: str
    class_names: list[str] = field(default_factory=list)
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    hint: str = ""
    notes: list[str] = field(default_factory=list)
    adapt_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    unsure: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Every field (``unsure`` included) as plain Python values, to send across threads."""
        return dict(self.__dict__)


def _title_from_metadata(path: Path, meta: Mapping[str, Any]) -> str:
    return str(meta.get("title") or path.stem)


class ClassifierSession:
    """Adapt-and-predict on files, with the loaded model and decoded images kept between calls.

    ``time_limit`` (seconds, None for none) bounds each call into the model's plugin (one
    adaptation, one prediction): past it the call raises
    :class:`~metastudio.errors.PluginTimeout`. After a timeout or :meth:`cancel` the session
    forgets the model (the abandoned call may still be running with it): load it again."""

    def __init__(self, registry, device: str | torch.device = "auto", time_limit: float | None = None):
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"the time limit must be more than 0 seconds, got {time_limit}")
        self.registry = registry
        self.device = resolve_device(device)
        configure_for_speed(self.device)
        self.time_limit = time_limit
        self._cancel = threading.Event()
        self.algorithm: Algorithm | None = None
        self.info: ModelInfo | None = None
        self._key: tuple | None = None
        self._store: ImageStore | None = None
        self.learner: Learner | None = None
        self._saved_learner: Learner | None = None

    # -- the model ---------------------------------------------------------------------------
    def load(self, path: str | os.PathLike, hyperparameters: Mapping[str, Any] | None = None) -> ModelInfo:
        """Load the model file (again only if the file or the hyperparameters changed).

        ``hyperparameters`` override the saved ones (e.g. a different distance); values are
        validated. Only ``adaptation`` hyperparameters may differ from the trained values: a
        different value of a ``training`` or ``architecture`` one raises
        :class:`~metastudio.errors.FixedHyperParameterError` (a ValueError naming it), and a
        change the saved weights do not fit raises :class:`CheckpointError`.
        """
        path = Path(path)
        try:
            st = path.stat()
        except OSError as e:
            raise MetaStudioError(f"model file '{path}' cannot be read: {e.strerror or e}") from None
        overrides = dict(hyperparameters or {})
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key == self._key and self.info is not None:
            return self.info
        loaded = load_model(path, self.registry, self.device, overrides)
        algorithm, meta = loaded.algorithm, loaded.metadata
        use_feature_cache(algorithm)
        self.algorithm = algorithm
        self.learner = None
        self._saved_learner = loaded.learner
        if self._store is None or (self._store.size, self._store.channels, self._store.fit) != (
            algorithm.image_size, algorithm.channels, algorithm.fit
        ):
            self._store = ImageStore(algorithm.image_size, algorithm.channels, algorithm.fit)
        cls = type(algorithm)
        self.info = ModelInfo(
            path=str(path), title=_title_from_metadata(path, meta), algorithm=cls.name,
            algorithm_title=cls.title or cls.name, family=cls.family, backbone=algorithm.backbone_name,
            image_size=algorithm.image_size, channels=algorithm.channels, device=describe_device(self.device),
            hyperparameters=dict(algorithm.hparams), hyperparameter_specs=[h.describe() for h in cls.hyperparameters],
            description=cls.description, iterative=bool(cls.reports_adaptation_loss),
        )
        self._key = key
        return self.info

    # -- calls into the model's plugin ------------------------------------------------------------
    def cancel(self) -> None:
        """Stop waiting for the plugin call running now (from any thread): it raises
        :class:`~metastudio.errors.PluginCancelled` and the session forgets the model. The next
        :meth:`run`, :meth:`adapt_to`, :meth:`classify` or :meth:`classify_picture` clears it."""
        self._cancel.set()

    @property
    def origin(self) -> PluginOrigin | None:
        """The plugin that provides the loaded model's algorithm: the one the registry says, else
        the one whose module defines its class (None when not known)."""
        if self.algorithm is None:
            return None
        cls = type(self.algorithm)
        origin = self.registry.origin_of("algorithm", cls.name) if hasattr(self.registry, "origin_of") else None
        return origin if origin is not None else plugin_of(cls.__module__)

    def _forget_model(self) -> None:
        self.algorithm = self.learner = self._saved_learner = None
        self.info = self._key = None

    def _guarded(self, fn, *args, what: str):
        """``fn(*args)`` through :func:`call_guarded` with the algorithm's plugin, the time limit
        and the cancel event; a call abandoned (timeout, cancel) makes the session forget the model."""
        origin = self.origin
        try:
            return call_guarded(fn, *args, what=what, origin=origin, time_limit=self.time_limit, cancel=self._cancel)
        except (PluginTimeout, PluginCancelled):
            self._forget_model()
            raise

    def _open_set(self, images: torch.Tensor):
        """The learner's open-set prediction of uint8 ``images``, guarded and checked."""
        learner = self.learner
        prediction = self._guarded(learner.predict_open_set, images, what="predicting the classes of the images")
        what = algorithm_words(self.algorithm)
        probabilities = getattr(prediction, "probabilities", None)
        check_probabilities(probabilities, len(images), len(learner.class_names), what=what, origin=self.origin)
        scores = getattr(prediction, "scores", None)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(images),):
            shape = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise PluginError(f"{what} gave unsure scores of shape {shape} for {len(images)} images", self.origin)
        if bool(scores.isnan().any()):
            raise PluginError(f"{what} gave NaN unsure scores", self.origin)
        return prediction

    # -- images ---------------------------------------------------------------------------------
    def _arrays(self, items: Sequence[tuple[str, str | os.PathLike]], problems: dict[str, str],
                sizes: dict[str, tuple[int, int]] | None = None):
        arrays, ids = [], []
        for image_id, path in items:
            try:
                array, size = self._store.get_sized(path)
                arrays.append(array)
                ids.append(image_id)
                if sizes is not None:
                    sizes[image_id] = size
            except ImageLoadError as e:
                problems[image_id] = e.reason if hasattr(e, "reason") else str(e)
            except OSError as e:  # vanished file, permissions...
                problems[image_id] = e.strerror or str(e)
        return arrays, ids

    # -- adapt and predict ------------------------------------------------------------------------
    def run(
        self,
        support: SupportSpec,
        queries: QuerySpec,
        progress: Callable[[AdaptProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SessionResult:
        """Adapt to ``support`` and classify ``queries``. Needs :meth:`load` first.

        ``should_stop`` is asked once the images are read, before adapting; :meth:`cancel` also
        stops a plugin call that is running (:class:`~metastudio.errors.PluginCancelled`)."""
        self._cancel.clear()
        if self.algorithm is None:
            raise MetaStudioError("no model is loaded")
        start = time.perf_counter()
        problems: dict[str, str] = {}
        per_class, names, empty = [], [], []
        for name, items in support:
            arrays, _ = self._arrays(items, problems)
            if arrays:
                per_class.append(torch.from_numpy(np.stack(arrays)))
                names.append(name)
            else:
                empty.append(name)
        notes = []
        if empty and len(names) >= 2:
            notes.append(
                f"{_quote_list(empty)} {'has' if len(empty) == 1 else 'have'} no usable images yet, "
                "so predictions are only among the other classes."
            )
        if len(names) < 2:
            self.learner = None
            return SessionResult("hint", problems=problems, hint=_hint(len(support), names, empty),
                                 seconds=time.perf_counter() - start)
        if should_stop and should_stop():
            return SessionResult("cancelled", problems=problems, seconds=time.perf_counter() - start)
        losses = self._adapt(per_class, names, progress)
        probabilities, unsure = self._predict(queries, problems)
        return SessionResult("ok", class_names=names, probabilities=probabilities, problems=problems, unsure=unsure,
                             notes=notes, adapt_losses=losses, seconds=time.perf_counter() - start)

    def adapt_to(self, per_class: Sequence[torch.Tensor], names: Sequence[str],
                 progress: Callable[[AdaptProgress], None] | None = None) -> list[float]:
        """Adapt to decoded support images (uint8 [n, C, H, W] per class, named by ``names``);
        returns the adaptation's losses (none for a model that adapts in one pass). Needs
        :meth:`load` first. :meth:`classify` then uses this classifier."""
        self._cancel.clear()
        return self._adapt(per_class, names, progress)

    def _adapt(self, per_class: Sequence[torch.Tensor], names: Sequence[str],
               progress: Callable[[AdaptProgress], None] | None = None) -> list[float]:
        if self.algorithm is None:
            raise MetaStudioError("no model is loaded")
        losses: list[float] = []

        def on_progress(p: AdaptProgress) -> None:
            if p.loss is not None:
                losses.append(float(p.loss))
            if progress:
                progress(p)

        self.learner = None
        support = stack_support(list(per_class), list(names))
        learner = self._guarded(self.algorithm.adapt, support, on_progress, what="adapting to the examples")
        if not isinstance(learner, Learner):
            raise PluginError(f"adapting to the examples gave {type(learner).__name__}, not a Learner", self.origin)
        if tuple(learner.class_names) != tuple(names):
            raise PluginError(f"adapting to the examples gave a learner for the classes {list(learner.class_names)} "
                              f"instead of {list(names)}", self.origin)
        self.learner = learner
        return losses

    def use_saved_classes(self) -> bool:
        """Classify with the classes the loaded model file holds (adapted before it was saved),
        as :meth:`adapt_to` would; ``False`` when it holds none."""
        self.learner = self._saved_learner
        return self.learner is not None

    def classify(self, queries: QuerySpec) -> SessionResult:
        """Classify ``queries`` with the classifier of the last :meth:`run`, :meth:`adapt_to` or
        :meth:`use_saved_classes`, like :meth:`run` does; ``"hint"`` while nothing is adapted."""
        self._cancel.clear()
        start = time.perf_counter()
        if self.learner is None:
            return SessionResult("hint", hint="Give at least two classes a few examples first.")
        problems: dict[str, str] = {}
        probabilities, unsure = self._predict(queries, problems)
        return SessionResult("ok", class_names=list(self.learner.class_names), probabilities=probabilities,
                             problems=problems, unsure=unsure, seconds=time.perf_counter() - start)

    def _predict(self, queries: QuerySpec, problems: dict[str, str]) -> tuple[dict[str, list[float]], dict[str, str]]:
        """``(probabilities, unsure)`` of the query images by their ids (see :class:`SessionResult`);
        files that cannot be used go to ``problems``."""
        sizes: dict[str, tuple[int, int]] = {}
        arrays, ids = self._arrays(queries, problems, sizes)
        if not arrays:
            return {}, {}
        prediction = self._open_set(torch.from_numpy(np.stack(arrays)))
        probabilities = {i: [float(p) for p in row] for i, row in zip(ids, prediction.probabilities.tolist())}
        unsure = unsure_reasons(ids, prediction.unsure.tolist(), [sizes[i] for i in ids], self.algorithm.image_size)
        return probabilities, unsure

    def classify_picture(self, data: bytes) -> dict[str, Any]:
        """Classify one encoded picture (PNG, JPEG... held in memory, e.g. a camera's) with the
        classifier of the last :meth:`run`: ``{"status": "ok", "class_names", "probabilities",
        "unsure"}`` (``unsure`` is "" or why it gets no confident prediction), or
        ``{"status": "hint", "hint"}`` while nothing is adapted. Raises ImageLoadError for bytes
        that are not a picture."""
        import io

        from metastudio.data.images import load_sized_array

        self._cancel.clear()
        if self.learner is None or self.algorithm is None:
            return {"status": "hint", "hint": "Give at least two classes a few examples first; then the camera "
                                              "picture is classified here."}
        algorithm = self.algorithm
        array, size = load_sized_array(io.BytesIO(data), algorithm.image_size, channels=algorithm.channels,
                                       fit=algorithm.fit, name="camera picture")
        prediction = self._open_set(torch.from_numpy(array[None]))
        unsure = unsure_reasons(["picture"], prediction.unsure.tolist(), [size], algorithm.image_size)
        return {"status": "ok", "class_names": list(self.learner.class_names),
                "probabilities": [float(p) for p in prediction.probabilities[0].tolist()],
                "unsure": unsure.get("picture", "")}


def write_predictions(path: str | os.PathLike, result: SessionResult | Mapping[str, Any],
                      queries: Iterable[tuple[str, str]]) -> Path:
    """Write the predictions of ``result`` (a :class:`SessionResult` or its :meth:`~SessionResult.as_dict`)
    as a CSV file (:func:`~metastudio.engine.export.write_predictions_csv`, same columns
    everywhere): one row for each of ``queries`` ((image id, what the file column says)) that
    has a prediction, in that order, with its unsure reason. Returns the path."""
    from metastudio.engine.export import write_predictions_csv

    data = result.as_dict() if isinstance(result, SessionResult) else result
    probabilities, unsure = data.get("probabilities") or {}, data.get("unsure") or {}
    rows, reasons = [], {}
    for image_id, label in queries:
        if image_id in probabilities:
            rows.append((label, probabilities[image_id]))
            if image_id in unsure:
                reasons[label] = unsure[image_id]
    return write_predictions_csv(path, rows, data["class_names"], unsure=reasons)


def _quote_list(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _hint(total_classes: int, usable: Sequence[str], empty: Sequence[str]) -> str:
    if total_classes == 0:
        return "Add at least two classes (Add class), then drop a few example images into each."
    if total_classes == 1:
        return "Add a second class: MetaStudio tells classes apart, so it needs at least two."
    if not usable:
        return "Drop a few example images into each class (one is enough to start)."
    return f"Drop example images into {_quote_list(empty)} too: every prediction needs at least two classes with images."


def thumbnail_rgb(path: str | os.PathLike, size: int = 128) -> tuple[bytes, int, int]:
    """A thumbnail of an image file that fits in ``size`` x ``size``, as raw RGB bytes with its
    width and height (plain values a GUI turns into a picture). Raises ImageLoadError."""
    from PIL import Image

    from metastudio.data.images import load_image

    image = load_image(path, mode="RGB", draft_size=size)
    image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image.tobytes(), image.width, image.height
