"""The Model box with a third-party plugin installed: the model the plugin ships is listed beside
the shipped ones and adapts when a person picks it; the plugin's algorithm, which has no trained
model, is described as itself with a "Meta-train a model…" button that opens the Meta-train tab
with it chosen, and nothing is adapted with another algorithm's model meanwhile."""

from __future__ import annotations

import pytest

import faulty_plugins
from gui_helpers import WAIT_MS, drop_files, populate, wait_predictions
from plugin_packages import install

SOURCE = '''
from pathlib import Path

from metastudio.api import ModelSpec, hookimpl
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks

HERE = Path(__file__).resolve().parent / "mstest_gui_shop_models"


class Untrained(PrototypicalNetworks):
    name = "mstest_untrained"
    title = "Untrained Test Networks"
    description = "A test algorithm that nobody has meta-trained yet."


@hookimpl
def metastudio_algorithms():
    return [Untrained]


@hookimpl
def metastudio_models():
    return [ModelSpec("shop-letters", HERE / "letters.safetensors", "Shop letters")]
'''


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """The plugin ``gui-shop`` installed (its model file beside it), the host reset around the test."""
    from metastudio.plugins import reset_host

    site = tmp_path / "site"
    (site / "mstest_gui_shop_models").mkdir(parents=True)
    model = faulty_plugins.make_protonet_model(site / "mstest_gui_shop_models" / "letters.safetensors")
    install(site, monkeypatch, {"gui-shop": ("metastudio-gui-shop", "mstest_gui_shop", SOURCE)})
    reset_host()
    yield model
    reset_host()


def test_a_plugin_model_is_listed_and_adapts_when_picked(shop, make_window, qtbot, images):
    from PySide6.QtCore import Qt

    w = make_window()
    box = w.model_box
    qtbot.waitUntil(lambda: w.catalog is not None and box.purpose_combo.count() > 0, timeout=WAIT_MS)
    entry = next(m for m in w.catalog["models"] if m["name"] == "shop-letters")
    assert entry["origin"] == "plugin" and entry["plugin"] == "gui-shop" and entry["path"] == str(shop)
    populate(qtbot, w, images)
    assert wait_predictions(qtbot, w)["status"] == "ok"
    assert w.model_info["path"] != str(shop)

    # Under Advanced it is among the models of its algorithm, named with its plugin...
    box.set_advanced_open(True)
    labels = [box.model_combo.itemText(i) for i in range(box.model_combo.count())]
    assert "shop-letters (plugin gui-shop)" in labels and "protonet-omniglot" in labels
    # ...and in the plain choice by its title; a person picks it there.
    index = box.purpose_combo.findText("Shop letters")
    assert index >= 0
    assert "plugin gui-shop" in box.purpose_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    with qtbot.waitSignal(box.choice_changed, timeout=WAIT_MS):
        box.purpose_combo.setCurrentIndex(index)
    assert w.controller.project.model == {"kind": "shipped", "name": "shop-letters"}
    qtbot.waitUntil(lambda: (w.model_info or {}).get("path") == str(shop), timeout=WAIT_MS)
    result = wait_predictions(qtbot, w)
    assert result["status"] == "ok" and len(result["probabilities"]) == 6
    assert box.model_combo.currentText() == "shop-letters (plugin gui-shop)"
    assert "from the plugin gui-shop" in box.purpose_note.text()


def test_an_algorithm_without_a_model_says_so_and_offers_to_meta_train_it(shop, make_window, qtbot, images):
    from PySide6.QtCore import Qt

    from metastudio.gui.mainwindow import CLASSIFY_TAB, TRAINING_TAB

    w = make_window()
    box = w.model_box
    populate(qtbot, w, images)
    assert wait_predictions(qtbot, w)["status"] == "ok"
    model, protonet_about = dict(w.controller.project.model), box.about.text()
    qtbot.mouseClick(box.advanced_toggle, Qt.MouseButton.LeftButton)
    assert not box.no_model.isVisibleTo(w) and not box.train_button.isVisibleTo(w)

    asked = []
    w.engine.busy_changed.connect(lambda busy: busy and asked.append(busy))
    with qtbot.waitSignal(box.untrained_changed, timeout=WAIT_MS) as blocker:
        box.algorithm_combo.setCurrentIndex(box.algorithm_combo.findData("mstest_untrained"))
    assert blocker.args == ["mstest_untrained"]
    # Its own description, not the previous algorithm's, and what to do in plain words.
    assert "nobody has meta-trained yet" in box.about.text() and box.about.text() != protonet_about
    assert box.no_model.isVisibleTo(w)
    assert box.no_model.text().startswith("There is no trained model of Untrained Test Networks yet")
    assert box.train_button.isVisibleTo(w) and box.train_button.text() == "Meta-train a model…"
    assert box.hp_form is None  # no model: no settings to adapt with
    # The project keeps its model, and nothing is adapted with it while this shows.
    assert w.controller.project.model == model
    assert w.last_result is None and "There is no trained model" in w.queries.status.text()
    drop_files(qtbot, w.queries, [sorted((images / "query").glob("*.png"))[0]])
    qtbot.wait(3 * 120 + 200)  # past the adaptation's debounce
    assert asked == [] and w.last_result is None

    qtbot.mouseClick(box.train_button, Qt.MouseButton.LeftButton)
    assert w.tabs.currentIndex() == TRAINING_TAB
    assert w.training.panel.form.algorithm_combo.currentData() == "mstest_untrained"

    # Back on the Classify page, picking an algorithm with models adapts again.
    w.tabs.setCurrentIndex(CLASSIFY_TAB)
    with qtbot.waitSignal(box.untrained_changed, timeout=WAIT_MS) as blocker:
        box.algorithm_combo.setCurrentIndex(box.algorithm_combo.findData("protonet"))
    assert blocker.args == [""] and not box.no_model.isVisibleTo(w)
    assert wait_predictions(qtbot, w)["status"] == "ok"
    assert asked
