"""Calls into plugin code that cannot take MetaStudio down with them.

A plugin's ``adapt`` or ``predict`` may raise anything, hang, or give back nonsense (NaN, the
wrong shape). :func:`call_guarded` runs such a call so that whatever it raises becomes a
:class:`~metastudio.errors.PluginError` naming the plugin, and, with a time limit or a cancel
event, stops waiting for it when the time is up or a person cancels (Python cannot stop a thread,
so the call is left to finish in a daemon thread, which never keeps the process alive).
:func:`check_probabilities` checks what a learner predicted before anyone shows or scores it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from metastudio.errors import (
    MetaStudioError, PluginCancelled, PluginError, PluginOrigin, PluginTimeout, message_of, one_line,
    plugin_in_traceback,
)

T = TypeVar("T")

#: How long the waiting thread sleeps between looks at the clock and the cancel event (seconds).
WAIT_SLICE = 0.05

_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()


def abandoned_calls() -> list[threading.Thread]:
    """The threads of plugin calls that were stopped waiting for (time limit, cancel, Ctrl-C) and
    are still running. A program about to exit with some should leave at once (``os._exit``):
    what such a call does while the interpreter shuts down is not defined."""
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        return list(_abandoned)


def _abandon(worker: threading.Thread) -> None:
    with _abandoned_lock:
        _abandoned.append(worker)


def _as_plugin_error(exc: BaseException, what: str, origin: PluginOrigin | None) -> PluginError:
    """What ``exc``, raised by the plugin call ``what``, is reported as."""
    if isinstance(exc, PluginError) and exc.origin is not None:
        return exc  # a guarded call inside a guarded call: it already names its plugin
    if origin is None:  # the caller does not know the plugin: the traceback may tell
        origin = plugin_in_traceback(exc)
    if isinstance(exc, MetaStudioError):  # raised on purpose: its message is written for a person
        error = PluginError(one_line(message_of(exc)), origin)
    else:
        error = PluginError(f"{what} failed: {type(exc).__name__}: {one_line(message_of(exc))}", origin)
    error.__cause__ = exc  # as "raise error from exc" would (this also hides the context)
    return error


class _Call:
    """One call run in a worker thread: its result or the exception it raised."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        # torch's autograd modes and the current CUDA device belong to a thread: the worker
        # runs with the caller's.
        self.grad = torch.is_grad_enabled()
        self.inference = torch.is_inference_mode_enabled()
        self.cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None

    def __call__(self) -> None:
        try:
            if self.cuda_device is not None:
                torch.cuda.set_device(self.cuda_device)
            with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad):
                self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc


def call_guarded(fn: Callable[..., T], *args: Any, what: str, origin: PluginOrigin | None,
                 time_limit: float | None = None, cancel: threading.Event | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, a call into plugin code described by ``what`` ("adapting to the
    examples"), with any exception it raises turned into a :class:`PluginError` naming ``origin``
    (raised from it; a :class:`MetaStudioError` the plugin raised on purpose keeps its message).
    Without an ``origin`` the plugin is looked for in the exception's traceback.

    With ``time_limit`` (seconds) or ``cancel`` the call runs in a daemon thread, with the caller's
    grad and inference mode, and the caller waits for it: past the time limit it raises
    :class:`PluginTimeout`, once ``cancel`` is set :class:`PluginCancelled`, leaving the call to
    finish unseen in its thread. A ``KeyboardInterrupt`` while waiting propagates."""
    if time_limit is not None and time_limit <= 0:
        raise ValueError(f"a time limit must be more than 0 seconds, got {time_limit}")
    if time_limit is None and cancel is None:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            raise _as_plugin_error(exc, what, origin)  # noqa: B904 - it is raised from exc
    call = _Call(fn, args, kwargs)
    worker = threading.Thread(target=call, name=f"plugin call: {what}", daemon=True)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    worker.start()
    try:
        while worker.is_alive():
            if cancel is not None and cancel.is_set():
                raise PluginCancelled(f"{what} was cancelled", origin)
            wait = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            if wait <= 0:
                raise PluginTimeout(f"{what} did not finish within {time_limit:g} s, so MetaStudio stopped waiting "
                                    "for it", origin)
            worker.join(wait)
    except BaseException:  # timeout, cancel or Ctrl-C: the call goes on unseen
        if worker.is_alive():
            _abandon(worker)
        raise
    if call.error is not None:
        if isinstance(call.error, KeyboardInterrupt):
            raise call.error
        raise _as_plugin_error(call.error, what, origin)
    return call.result


def _shape(tensor: Any) -> str:
    return "[" + ", ".join(str(n) for n in tensor.shape) + "]"


def algorithm_words(algorithm: Any) -> str:
    """How a message names ``algorithm`` (an Algorithm or its class): "the algorithm 'Title'"."""
    cls = algorithm if isinstance(algorithm, type) else type(algorithm)
    return f"the algorithm '{getattr(cls, 'title', '') or getattr(cls, 'name', '') or cls.__name__}'"


def check_probabilities(probs: Any, n_queries: int, n_classes: int, *, what: str,
                        origin: PluginOrigin | None) -> torch.Tensor:
    """``probs`` if it is a tensor [n_queries, n_classes] of finite probabilities in [0, 1] whose
    rows sum to 1 (within 1e-3); otherwise a :class:`PluginError` saying what ``what`` (see
    :func:`algorithm_words`) got wrong, e.g. "gave probabilities of shape [3, 7] for 5 images and 4 classes"."""
    images = f"{n_queries} image{'s' if n_queries != 1 else ''}"
    classes = f"{n_classes} class{'es' if n_classes != 1 else ''}"
    if not isinstance(probs, torch.Tensor):
        raise PluginError(f"{what} gave {type(probs).__name__} instead of a tensor of probabilities "
                          f"for {images} and {classes}", origin)
    if tuple(probs.shape) != (n_queries, n_classes):
        raise PluginError(f"{what} gave probabilities of shape {_shape(probs)} for {images} and {classes}", origin)
    if probs.numel() == 0:
        return probs
    if not probs.is_floating_point():
        raise PluginError(f"{what} gave probabilities of type {probs.dtype} instead of floating-point numbers", origin)
    values = probs.detach().float()
    if not bool(torch.isfinite(values).all()):
        raise PluginError(f"{what} gave NaN or infinite probabilities", origin)
    if bool((values < 0).any()) or bool((values > 1).any()):
        raise PluginError(f"{what} gave probabilities outside 0..1 (from {float(values.min()):.3g} "
                          f"to {float(values.max()):.3g})", origin)
    sums = values.sum(1)
    worst = int((sums - 1).abs().argmax())
    if abs(float(sums[worst]) - 1) > 1e-3:
        raise PluginError(f"{what} gave probabilities that do not sum to 1 (image {worst + 1} of {n_queries}: "
                          f"{float(sums[worst]):.4g})", origin)
    return probs


__all__ = ["WAIT_SLICE", "abandoned_calls", "algorithm_words", "call_guarded", "check_probabilities"]
