"""Plugins ship trained models (the ``metastudio_models`` hook), installed as a third party's
package would be: the installed ``metastudio`` command classifies with one by its name, ``info``
and ``eval`` find it, and ``metastudio plugins`` lists it. A raising hook, a missing model file
and a name already taken are each reported naming the plugin, while everything else works."""

from __future__ import annotations

import json
import subprocess

import pytest

import faulty_plugins
from conftest import METASTUDIO_COMMAND, make_class_tree
from plugin_packages import install

#: The plugins of the tests: entry point -> (distribution, module, source). They load in the
#: order of their entry-point names: ``letters-shop`` before ``other-shop``.
SHOP = '''
from pathlib import Path

from metastudio.api import ModelSpec, hookimpl

HERE = Path(__file__).resolve().parent / "mstest_shop_models"


@hookimpl
def metastudio_models():
    return [ModelSpec("shop-letters", HERE / "letters.safetensors", "Shop letters"), HERE / "spare.safetensors"]
'''
OTHER = '''
from pathlib import Path

from metastudio.api import ModelSpec, hookimpl

HERE = Path(__file__).resolve().parent / "mstest_shop_models"


@hookimpl
def metastudio_models():
    return [ModelSpec("shop-letters", HERE / "other.safetensors"),  # taken by letters-shop
            ModelSpec("protonet-omniglot", HERE / "other.safetensors"),  # shipped with MetaStudio
            ModelSpec("gone", HERE / "no-such-file.safetensors"),
            ModelSpec("other-letters", HERE / "other.safetensors")]
'''
BROKEN = '''
from metastudio.api import hookimpl


@hookimpl
def metastudio_models():
    raise RuntimeError("the model server of broken-shop is down")
'''
PLUGINS = {
    "letters-shop": ("metastudio-letters-shop", "mstest_letters_shop", SHOP),
    "other-shop": ("metastudio-other-shop", "mstest_other_shop", OTHER),
    "broken-shop": ("metastudio-broken-shop", "mstest_broken_shop", BROKEN),
}


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """The three plugins installed in ``tmp_path/site`` (on sys.path, the host reset around the
    test), their model files, and ``support``/``query`` images in ``tmp_path``. Returns the site."""
    from metastudio.plugins import reset_host

    site = tmp_path / "site"
    models = site / "mstest_shop_models"
    models.mkdir(parents=True)
    for name in ("letters", "spare", "other"):
        faulty_plugins.make_protonet_model(models / f"{name}.safetensors")
    faulty_plugins.write_images(tmp_path / "support")
    faulty_plugins.write_images(tmp_path / "query", seed=1)
    install(site, monkeypatch, PLUGINS)
    reset_host()
    yield site
    reset_host()


def _run(site, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([METASTUDIO_COMMAND, *argv], env=faulty_plugins.env(site), capture_output=True, text=True,
                          timeout=180)


def test_classify_finds_a_plugin_model_by_its_name(shop, tmp_path):
    done = _run(shop, "classify", "--model", "shop-letters", "--support", str(tmp_path / "support"),
                "--query", str(tmp_path / "query"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4  # two classes of two query pictures
    assert {line.split()[1] for line in lines} <= {"class00", "class01"}
    # The same predictions as with the file named by its path.
    by_path = _run(shop, "classify", "--model", str(shop / "mstest_shop_models" / "letters.safetensors"),
                   "--support", str(tmp_path / "support"), "--query", str(tmp_path / "query"), "--device", "cpu")
    assert by_path.returncode == 0, by_path.stderr
    assert by_path.stdout == done.stdout


def test_plugins_lists_the_models_and_names_each_plugin_whose_models_failed(shop):
    done = _run(shop, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    models = {(r["name"], r["plugin"]) for r in rows if r["kind"] == "model" and r["status"] == "ok"}
    assert {("shop-letters", "letters-shop"), ("spare", "letters-shop"), ("other-letters", "other-shop")} <= models
    broken = [r for r in rows if r["plugin"] == "broken-shop"]
    assert [r["status"] for r in broken] == ["failed"]
    assert broken[0]["error"] == "hook metastudio_models raised RuntimeError: the model server of broken-shop is down"
    warnings = {r["error"] for r in rows if r["plugin"] == "other-shop" and r["status"] == "warning"}
    assert "model 'shop-letters' is already provided by plugin 'letters-shop'; this one is ignored" in warnings
    missing = shop / "mstest_shop_models" / "no-such-file.safetensors"
    assert f"model 'gone' is left out: its file {missing} does not exist" in warnings


def test_info_and_eval_find_a_plugin_model_and_the_shipped_name_wins(shop, tmp_path, capsys):
    from metastudio import cli
    from metastudio.app.catalogue import plugin_models, resolve_model
    from metastudio.engine.checkpoint import read_metadata
    from metastudio.errors import CheckpointError
    from metastudio.plugins import get_host

    letters = shop / "mstest_shop_models" / "letters.safetensors"
    assert resolve_model("shop-letters") == letters
    assert cli.main(["info", "shop-letters"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["algorithm"] == read_metadata(letters)["algorithm"] == "protonet"

    tree = make_class_tree(tmp_path / "tree", classes=3, per_class=3, size=28)
    assert cli.main(["eval", "--model", "shop-letters", "--dataset", "folder", "--root", str(tree), "--ways", "2",
                     "--shots", "1", "--queries", "1", "--episodes", "2", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["model"] == "shop-letters"

    # A plugin model named like a shipped one is left out, reported on its plugin; the shipped one is used.
    host = get_host()
    assert "protonet-omniglot" not in plugin_models(host) and "other-letters" in plugin_models(host)
    assert resolve_model("protonet-omniglot").parent.name == "models"
    assert resolve_model("protonet-omniglot") != shop / "mstest_shop_models" / "other.safetensors"
    warnings = [r["error"] for r in host.rows() if r["plugin"] == "other-shop" and r["status"] == "warning"]
    assert any(w.startswith("model 'protonet-omniglot' is already a model shipped with MetaStudio") for w in warnings)
    plugin_models(host)  # asking again reports it once
    assert sum("'protonet-omniglot'" in r["error"] for r in host.rows()) == 1

    with pytest.raises(CheckpointError, match=r"model 'no-such' not found: .*from plugins: other-letters, shop-letters, spare"):
        resolve_model("no-such")


def test_a_hook_returning_what_is_not_a_model_disables_its_plugin(tmp_path, monkeypatch):
    from metastudio.plugins import PluginHost

    source = '''
from metastudio.api import hookimpl


@hookimpl
def metastudio_models():
    return [42]
'''
    install(tmp_path / "site", monkeypatch, {"number-shop": ("metastudio-number-shop", "mstest_number_shop", source)})
    host = PluginHost().load_entry_points()
    record = host.records["number-shop"]
    assert record.status == "failed"
    assert record.error == ("hook metastudio_models returned 42, which is neither a ModelSpec nor the path of a "
                            ".safetensors file on disk")
    assert "protonet" in host.algorithms  # the others work
