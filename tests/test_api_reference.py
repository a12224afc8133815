"""The API reference (``make docs``, docs/api_reference.py) and the stability promise of
metastudio.api: every name in ``__all__`` and every hook is documented (a hook says what it
returns), ``__all__`` is exactly what the module offers, and a deprecated name keeps working
with a DeprecationWarning."""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from pathlib import Path

import pytest

import metastudio.api as api
from metastudio.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _reference_tool():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "docs" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _reference_tool()


def own_doc(obj) -> str:
    """The docstring a class or function has itself: not one inherited from a base class, nor
    the signature a dataclass writes when it has none."""
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    if not doc or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):
        return ""
    return inspect.cleandoc(doc)


def documentation(name: str) -> str:
    obj = getattr(api, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return own_doc(obj)
    return reference.variable_doc("metastudio.api", name)  # a constant: its comment or string where defined


def test_every_name_in_metastudio_api_is_documented():
    missing = [f"{name} (from {reference.imported_from('metastudio.api').get(name, 'metastudio.api')})"
               for name in api.__all__ if len(documentation(name).split()) < 3]
    assert not missing, "undocumented names of metastudio.api: " + ", ".join(missing)


def test_every_hook_is_documented_with_what_it_returns():
    specs = {n: f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "metastudio_spec")}
    assert {"metastudio_algorithms", "metastudio_backbones", "metastudio_datasets"} <= set(specs)
    for name, func in specs.items():
        doc = inspect.getdoc(func) or ""
        returns = doc.split(":return:", 1)[1] if ":return:" in doc else ""
        assert len(returns.split()) >= 5, f"hookspec {name} must say what it returns (a ':return:' field)"


def test_all_is_exactly_what_metastudio_api_offers():
    assert len(set(api.__all__)) == len(api.__all__), "a name is listed twice in __all__"
    assert [n for n in api.__all__ if not hasattr(api, n)] == []
    public = {n for n, v in vars(api).items()
              if not n.startswith("_") and not inspect.ismodule(v) and n != "annotations"}
    assert public - set(api.__all__) == set(), "public names of metastudio.api missing from __all__"
    namespace: dict = {}
    exec("from metastudio.api import *", namespace)  # noqa: S102 - what a star import gives
    assert set(namespace) - {"__builtins__"} == set(api.__all__)


def test_the_constants_documentation_is_found_where_they_are_defined():
    assert reference.constant_doc("metastudio.api", "HOOK_API_VERSION") == "Version of the hook API described in this module."
    assert reference.imported_from("metastudio.api")["HOOK_API_VERSION"] == "metastudio.plugins.hookspecs"
    assert reference.constant_doc("metastudio.api", "no_such_name") == ""


def test_a_deprecated_name_still_works_with_a_warning(monkeypatch):
    monkeypatch.setattr(api, "_DEPRECATED", {})
    api._deprecate("OldEpisode", "Episode")
    with pytest.warns(DeprecationWarning, match=r"metastudio.api.OldEpisode is deprecated: use metastudio.api.Episode "
                                                rf"instead \(the old name goes away with hook API version "
                                                rf"{api.HOOK_API_VERSION + 1}\)") as caught:
        from metastudio.api import OldEpisode
    assert OldEpisode is api.Episode
    assert caught[0].filename == __file__  # the warning points at the code that used the old name
    assert "OldEpisode" not in api.__all__
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        api.NoSuchName  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.Episode is not None  # current names never warn


def test_deprecating_a_name_checks_both_names(monkeypatch):
    monkeypatch.setattr(api, "_DEPRECATED", {})
    api._deprecate("OldSupport", "SupportSet", "MetaStudio 0.3")
    assert api._DEPRECATED == {"OldSupport": ("SupportSet", "MetaStudio 0.3")}
    with pytest.raises(ValueError, match="not in metastudio.api.__all__"):
        api._deprecate("Old", "NotAName", "0.3")
    with pytest.raises(ValueError, match="still a name of metastudio.api"):
        api._deprecate("Episode", "SupportSet", "0.3")


@pytest.mark.skipif(importlib.util.find_spec("pdoc") is None, reason="pdoc is not installed (pip install -e '.[docs]')")
def test_make_docs_renders_every_name_with_its_documentation(tmp_path):
    pages = reference.render(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in pages} == {
        "metastudio/api.html", "metastudio/plugins/hookspecs.html", "metastudio/testing.html"}
    html = (tmp_path / "metastudio" / "api.html").read_text(encoding="utf-8")
    for name in api.__all__:
        assert f'id="{name}"' in html, name
    assert "Version of the hook API described in this module." in html  # a constant's comment, carried over
    assert "metastudio_host" in (tmp_path / "metastudio" / "testing.html").read_text(encoding="utf-8")
    assert (tmp_path / "index.html").is_file()
