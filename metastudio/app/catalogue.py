"""Where models are found by name: the shipped ones (``resources/models``), any folder named
by ``$METASTUDIO_MODELS_DIR``, and the models plugins ship (their ``metastudio_models`` hook).
The command line and the app both look models up here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metastudio.errors import CheckpointError


def models_dirs() -> list[Path]:
    """Where named models are looked up: ``$METASTUDIO_MODELS_DIR``, then ``resources/models``."""
    dirs = []
    if os.environ.get("METASTUDIO_MODELS_DIR"):
        dirs.append(Path(os.environ["METASTUDIO_MODELS_DIR"]))
    dirs.append(Path(__file__).resolve().parents[2] / "resources" / "models")
    return dirs


def shipped_models() -> list[str]:
    """The names of the models in :func:`models_dirs`, sorted."""
    return sorted({p.name[: -len(".safetensors")] for d in models_dirs() if d.is_dir() for p in d.glob("*.safetensors")})


def plugin_models(host=None) -> dict:
    """The models the loaded plugins ship, by name (each a
    :class:`~metastudio.plugins.hookspecs.ModelSpec`; ``host.origin_of("model", name)`` names its
    plugin). ``host`` is the plugin host (default: the process's). A plugin model named like a
    shipped one is left out, and reported as a warning of its plugin (``metastudio plugins``)."""
    from metastudio.plugins import get_host

    host = host if host is not None else get_host()
    host.withhold_models(shipped_models(), " or ".join(str(d) for d in models_dirs()))
    return dict(host.models)


def resolve_model(name: str, host=None) -> Path:
    """A model file path, or the name of a shipped model (``protonet-omniglot``) or of a model
    a plugin ships (the plugins are loaded only when no file or shipped model has that name)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for d in models_dirs():
        for candidate in (d / name, d / f"{name}.safetensors"):
            if candidate.is_file():
                return candidate
    from_plugins = plugin_models(host)
    if name in from_plugins:
        return from_plugins[name].path
    available = ", ".join(shipped_models()) or "none"
    if from_plugins:
        available += "; from plugins: " + ", ".join(sorted(from_plugins))
    raise CheckpointError(f"model '{name}' not found: it is neither a file nor a model shipped with MetaStudio or "
                          f"a plugin (shipped: {available})")


def check_model_file(path: str | os.PathLike[str], registry=None) -> dict[str, Any]:
    """Check the model file at ``path`` as classifying with it would, before it is used: its
    metadata against the schema, its tensors (finite, matching the class names), the algorithm
    and backbone it needs (through ``registry``, default the plugin host) and its weights
    against them. Returns the metadata; raises :class:`CheckpointError` naming the file (or,
    where plugin code raised, that exception, which :func:`~metastudio.errors.for_person`
    names the plugin of). Nothing is kept: the model is built on the CPU and dropped."""
    from metastudio.engine.checkpoint import load_model
    from metastudio.plugins import get_host

    return load_model(path, registry if registry is not None else get_host(), "cpu").metadata
