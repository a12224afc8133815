"""Tests of the plugin system: discovery through entry points, isolation of broken plugins,
the ``metastudio plugins`` command, the hook documentation and the plugin test kit.

Third-party plugins are installed the way pip would leave them: a module plus a
``<name>-<version>.dist-info`` folder (METADATA, entry_points.txt) in a folder put on
``sys.path``, so ``importlib.metadata`` finds them through the real ``metastudio`` group.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUILTIN_ALGORITHMS
from helpers import TINY, TinyNet, proto_with_learner
from plugin_packages import install
from PIL import Image
from torch import nn

from metastudio import cli
from metastudio.algorithms.base import Learner
from metastudio.algorithms.hyperparameters import with_changes
from metastudio_builtins.backbones import BUILTIN_BACKBONES
from metastudio.algorithms.backbone import BackboneSpec
from metastudio.data.datasets import DatasetSpec, FewShotDataset
from metastudio.data.episodes import EpisodeSampler
from metastudio.errors import MetaStudioError, UnknownComponentError
from metastudio.plugins import HOOK_API_VERSION, PluginHost, get_host, hookspecs, manager, reset_host
from metastudio.plugins.testkit import check_algorithm, check_backbone, check_dataset, synthetic_dataset
from metastudio_builtins.algorithms.protonet import PrototypicalNetworks, ProtoLearner

BUILTIN_PLUGINS = {"builtin-backbones", "builtin-datasets", *BUILTIN_ALGORITHMS}
MODULE_PREFIX = "mstest_"


# ----------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(autouse=True)
def clean_plugin_state(monkeypatch):
    """No plugin settings from the environment, a fresh host, one torch thread (tiny tensors on
    a busy machine), and no test plugin module left behind."""
    monkeypatch.delenv("METASTUDIO_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("METASTUDIO_SAFE_MODE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reset_host()
    yield
    reset_host()
    torch.set_num_threads(threads)
    for name in [m for m in sys.modules if m.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


#: A third-party plugin offering TinyNet as "tinynet" (its source, as a file of its own).
GOOD_SOURCE = '''
"""A third-party plugin offering one small backbone."""
from torch import nn

from metastudio.api import BackboneSpec
from metastudio.plugins import hookimpl


''' + inspect.getsource(TinyNet) + '''

@hookimpl
def metastudio_backbones():
    return [BackboneSpec("tinynet", lambda c, s: TinyNet(c), "A one-layer CNN for tests.")]
'''

#: entry-point name -> (distribution, module, source, expected words of the error)
BROKEN = {
    "import-error": ("metastudio-import-error", "mstest_import_error", '''
        raise RuntimeError("the licence server cannot be reached")
    ''', "could not be imported: RuntimeError: the licence server cannot be reached"),
    "syntax-error": ("metastudio-syntax-error", "mstest_syntax_error", '''
        def metastudio_backbones(:
            return []
    ''', "could not be imported: SyntaxError"),
    "exits": ("metastudio-exits", "mstest_exits", '''
        import sys
        sys.exit("no GPU, giving up")
    ''', "could not be imported: SystemExit: no GPU, giving up"),
    "hook-raises": ("metastudio-hook-raises", "mstest_hook_raises", '''
        from metastudio.plugins import hookimpl
        from metastudio_builtins.algorithms.protonet import PrototypicalNetworks


        class HalfProto(PrototypicalNetworks):
            name = "halfproto"


        @hookimpl
        def metastudio_algorithms():
            return [HalfProto]          # fine on its own, but the plugin fails as a whole


        @hookimpl
        def metastudio_backbones():
            raise ValueError("weights file 'big.pt' is missing")
    ''', "hook metastudio_backbones raised ValueError: weights file 'big.pt' is missing"),
    "wrong-type": ("metastudio-wrong-type", "mstest_wrong_type", '''
        from torch import nn

        from metastudio.api import BackboneSpec
        from metastudio.plugins import hookimpl


        @hookimpl
        def metastudio_backbones():
            return [BackboneSpec("okbone", lambda c, s: nn.Flatten(), "would be fine")]


        @hookimpl
        def metastudio_datasets():
            return ["my-dataset"]       # a name, not a DatasetSpec
    ''', "hook metastudio_datasets returned 'my-dataset', which is not a DatasetSpec"),
    "wrong-algorithm": ("metastudio-wrong-algorithm", "mstest_wrong_algorithm", '''
        from metastudio.plugins import hookimpl


        class NotAnAlgorithm:
            name = "fake"


        @hookimpl
        def metastudio_algorithms():
            return [NotAnAlgorithm]
    ''', "which is not a subclass of metastudio.algorithms.base.Algorithm"),
    "misspelled": ("metastudio-misspelled", "mstest_misspelled", '''
        from torch import nn

        from metastudio.api import BackboneSpec
        from metastudio.plugins import hookimpl


        @hookimpl
        def metastudio_backbone():      # the hook is metastudio_backbones
            return [BackboneSpec("typobone", lambda c, s: nn.Flatten())]
    ''', "implements unknown hook(s) metastudio_backbone; known hooks are metastudio_algorithms"),
    "from-the-future": ("metastudio-from-the-future", "mstest_future", '''
        from torch import nn

        from metastudio.api import BackboneSpec
        from metastudio.plugins import hookimpl

        METASTUDIO_API_VERSION = 99


        @hookimpl
        def metastudio_backbones():
            return [BackboneSpec("futurebone", lambda c, s: nn.Flatten())]
    ''', f"needs plugin API version 99, but this MetaStudio offers version {HOOK_API_VERSION}"),
}

DUPLICATE_SOURCE = '''
    from torch import nn

    from metastudio.api import BackboneSpec
    from metastudio.plugins import hookimpl


    @hookimpl
    def metastudio_backbones():
        return [BackboneSpec("conv4", lambda c, s: nn.Flatten(), "an impostor"),
                BackboneSpec("flatbone", lambda c, s: nn.Flatten(), "just flattens")]
'''

#: What the broken plugins would have registered had they loaded.
BROKEN_COMPONENTS = {"halfproto", "okbone", "fake", "typobone", "futurebone"}


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """The good, the broken and the duplicate third-party plugins, installed."""
    plugins = {"good-backbone": ("metastudio-tiny-backbone", "mstest_good", GOOD_SOURCE),
               "duplicate": ("metastudio-duplicate", "mstest_duplicate", DUPLICATE_SOURCE)}
    plugins.update({name: (dist, module, source) for name, (dist, module, source, _) in BROKEN.items()})
    install(tmp_path / "site", monkeypatch, plugins, version="1.0")
    return plugins


# ----------------------------------------------------------------------------------------------
# built-ins


def test_builtins_load_through_the_real_entry_points():
    host = PluginHost().load_entry_points()
    assert BUILTIN_PLUGINS <= set(host.records)
    for name in BUILTIN_PLUGINS:
        rec = host.records[name]
        assert rec.status == "ok", (name, rec.error, rec.traceback)
        assert rec.builtin and rec.package == "metastudio" and rec.version not in ("", "unknown")
    assert host.algorithm("protonet") is PrototypicalNetworks
    assert {"conv4", "resnet12"} <= set(host.backbones) and {"omniglot", "folder"} <= set(host.datasets)
    assert host.backbone("conv4") is BUILTIN_BACKBONES[0]
    kinds = {(kind, name) for rec in host.records.values() for kind, name in rec.components}
    assert {("algorithm", "protonet"), ("backbone", "conv4"), ("backbone", "resnet12"),
            ("dataset", "omniglot"), ("dataset", "folder")} <= kinds
    # The same distribution really declares them as entry points (not a registration shortcut).
    eps = {ep.name: ep for ep in metadata.entry_points(group="metastudio")}
    assert eps["protonet"].value == "metastudio_builtins.algorithms.protonet" and eps["protonet"].dist.name == "metastudio"


def test_unknown_component_lists_what_is_available():
    host = PluginHost().load_entry_points()
    with pytest.raises(UnknownComponentError) as info:
        host.algorithm("nope")
    message = str(info.value)
    assert "no algorithm named 'nope'" in message and "protonet" in message
    assert isinstance(info.value, MetaStudioError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownComponentError, match=r"available: conv4, conv4-maps, conv4-omniglot, dino-vit-small, efficientnet-lite0, resnet12, resnet18-imagenet, resnet50-imagenet"):
        host.backbone("vgg")
    with pytest.raises(UnknownComponentError, match=r"folder, mini-imagenet, omniglot"):
        host.dataset("imagenet")


# ----------------------------------------------------------------------------------------------
# third-party plugins, good and broken


def test_third_party_plugins_are_discovered_through_entry_points(third_party):
    found = {ep.name: ep for ep in metadata.entry_points(group="metastudio")}
    assert set(third_party) | BUILTIN_PLUGINS <= set(found)
    assert found["good-backbone"].dist.name == "metastudio-tiny-backbone"
    assert found["good-backbone"].dist.version == "1.0"


def test_broken_plugins_are_isolated_and_reported(third_party):
    host = PluginHost().load_entry_points()

    # Every built-in and the good plugin still load ...
    for name in BUILTIN_PLUGINS | {"good-backbone"}:
        assert host.records[name].status == "ok", (name, host.records[name].error)
    good = host.records["good-backbone"]
    assert (good.package, good.version, good.builtin, good.components) == (
        "metastudio-tiny-backbone", "1.0", False, [("backbone", "tinynet")])
    net = host.backbone("tinynet").build(1, 28)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 32)

    # ... and every broken one is recorded, with its package and a message that says why.
    for name, (dist, module, _source, expected) in BROKEN.items():
        rec = host.records[name]
        assert rec.status == "failed", (name, rec)
        assert (rec.name, rec.package, rec.version, rec.module, rec.builtin) == (name, dist, "1.0", module, False)
        assert expected in rec.error, (name, rec.error)
        assert rec.components == []
    for name in ("import-error", "syntax-error", "exits", "hook-raises"):
        tb = host.records[name].traceback
        assert tb.startswith("Traceback") and BROKEN[name][1] in tb, (name, tb)
    assert "the licence server cannot be reached" in host.records["import-error"].traceback
    assert "weights file 'big.pt' is missing" in host.records["hook-raises"].traceback

    # Nothing of a failed plugin is registered, not even what its other hooks returned.
    registered = set(host.algorithms) | set(host.backbones) | set(host.datasets)
    assert not registered & BROKEN_COMPONENTS
    assert "halfproto" not in host.algorithms and "okbone" not in host.backbones
    failed_names = [n for n, _ in host.pm.list_name_plugin()]
    assert not set(BROKEN) & set(failed_names), "a failed plugin stays registered with pluggy"

    # A built-in name claimed again is a warning; the built-in keeps it, the rest is used.
    dup = host.records["duplicate"]
    assert dup.status == "ok" and dup.components == [("backbone", "flatbone")]
    assert dup.warnings == ["backbone 'conv4' is already provided by plugin 'builtin-backbones'; this one is ignored"]
    assert host.backbone("conv4") is BUILTIN_BACKBONES[0]

    # The lookup error hints at the plugins that did not load, with their packages and why.
    with pytest.raises(UnknownComponentError, match=r"plugins that failed to load: .*plugin hook-raises \(package "
                       r"metastudio-hook-raises 1\.0\): hook metastudio_backbones raised ValueError"):
        host.algorithm("halfproto")


def test_protonet_runs_through_a_third_party_backbone(third_party, tmp_path):
    host = PluginHost().load_entry_points()
    assert host.records["good-backbone"].status == "ok"
    check_algorithm(PrototypicalNetworks, backbone="tinynet", host=host, steps=4, tmp_path=tmp_path)


def test_plugin_with_a_bad_hook_signature_fails_cleanly(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, {"needs-args": ("metastudio-needs-args", "mstest_needs_args", '''
        from metastudio.plugins import hookimpl

        @hookimpl
        def metastudio_backbones(host):
            return []
    ''')})
    host = PluginHost().load_entry_points()
    rec = host.records["needs-args"]
    assert rec.status == "failed" and "could not be registered" in rec.error and "host" in rec.error
    assert rec.traceback
    assert all(host.records[n].status == "ok" for n in BUILTIN_PLUGINS)


def test_duplicate_plugin_name_is_reported(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, {"protonet": ("metastudio-other-protonet", "mstest_other_protonet", '''
        from metastudio.plugins import hookimpl

        @hookimpl
        def metastudio_algorithms():
            return []
    ''')})
    host = PluginHost().load_entry_points()
    assert host.records["protonet"].builtin and host.records["protonet"].status == "ok"
    other = host.records["protonet (metastudio-other-protonet)"]
    assert other.status == "failed" and "already named 'protonet'" in other.error
    assert host.algorithm("protonet") is PrototypicalNetworks


def test_disabling_a_plugin_by_name(third_party, monkeypatch):
    monkeypatch.setenv("METASTUDIO_DISABLE_PLUGINS", "good-backbone, protonet")
    host = PluginHost().load_entry_points()
    for name in ("good-backbone", "protonet"):
        assert host.records[name].status == "disabled"
        assert "METASTUDIO_DISABLE_PLUGINS" in host.records[name].error
    assert "tinynet" not in host.backbones and "protonet" not in host.algorithms
    assert host.records["builtin-backbones"].status == "ok"
    assert host.records["import-error"].status == "failed"
    with pytest.raises(UnknownComponentError, match="protonet"):
        host.algorithm("protonet")


def test_safe_mode_loads_only_builtins(third_party, monkeypatch):
    monkeypatch.setenv("METASTUDIO_SAFE_MODE", "1")
    host = PluginHost().load_entry_points()
    assert host.safe_mode
    for name, rec in host.records.items():
        if name in BUILTIN_PLUGINS:
            assert rec.status == "ok"
        else:
            assert rec.status == "disabled" and "safe mode" in rec.error, (name, rec)
    assert set(host.backbones) == {"conv4", "conv4-maps", "conv4-omniglot", "efficientnet-lite0", "resnet12", "resnet18-imagenet",
                                   "resnet50-imagenet", "dino-vit-small"}
    assert set(host.algorithms) == set(BUILTIN_ALGORITHMS)
    monkeypatch.delenv("METASTUDIO_SAFE_MODE")
    assert not PluginHost().safe_mode and PluginHost(safe_mode=True).safe_mode


def test_the_host_names_the_plugin_of_each_component_and_of_its_code(third_party):
    """``origin_of`` names the plugin that provides a component; the code of every loaded plugin
    is registered so that a traceback through it names the plugin (metastudio.errors.plugin_of)."""
    from metastudio import __version__
    from metastudio.errors import PluginOrigin, plugin_of

    host = PluginHost().load_entry_points()
    assert host.origin_of("algorithm", "protonet") == PluginOrigin("protonet", "metastudio", __version__)
    assert host.origin_of("backbone", "tinynet") == PluginOrigin("good-backbone", "metastudio-tiny-backbone", "1.0")
    assert host.origin_of("algorithm", "no-such") is None and host.origin_of("backbone", "protonet") is None
    # each built-in entry point is its own plugin, though they share one package
    assert plugin_of("metastudio_builtins.algorithms.protonet").name == "protonet"
    assert plugin_of("metastudio_builtins.algorithms.maml").name == "maml"
    assert plugin_of("metastudio_builtins.backbones.networks").name == "builtin-backbones"  # under its entry point
    assert plugin_of("mstest_good").name == "good-backbone"
    assert plugin_of("metastudio.algorithms.base") is None  # MetaStudio's own code is no plugin's


def test_a_component_defined_in_another_module_registers_that_module(tmp_path, monkeypatch):
    """A plugin whose entry point re-exports an algorithm from a module of its own package: that
    module is the plugin's code too; MetaStudio's modules and a built-in's never become another's."""
    from metastudio.errors import plugin_of

    (tmp_path / "site" / "mstest_pkg").mkdir(parents=True)
    (tmp_path / "site" / "mstest_pkg" / "impl.py").write_text(textwrap.dedent('''
        from metastudio_builtins.algorithms.protonet import PrototypicalNetworks


        class Renamed(PrototypicalNetworks):
            name = "renamed-proto"
    '''))
    (tmp_path / "site" / "mstest_pkg" / "__init__.py").write_text("")
    install(tmp_path / "site", monkeypatch, {"reexports": ("metastudio-reexports", "mstest_reexports", '''
        from metastudio.plugins import hookimpl
        from metastudio_builtins.algorithms.protonet import PrototypicalNetworks
        from mstest_pkg.impl import Renamed


        @hookimpl
        def metastudio_algorithms():
            return [Renamed, PrototypicalNetworks]  # the second is a built-in's: ignored, with a warning
    ''')})
    host = PluginHost().load_entry_points()
    assert host.records["reexports"].status == "ok"
    assert plugin_of("mstest_pkg.impl").name == "reexports" and plugin_of("mstest_reexports").name == "reexports"
    assert plugin_of("metastudio_builtins.algorithms.protonet").name == "protonet"
    assert host.origin_of("algorithm", "protonet").name == "protonet"


# ----------------------------------------------------------------------------------------------
# the `metastudio plugins` command


def test_cli_plugins_json_lists_broken_plugins(third_party, capsys):
    assert cli.main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all({"name", "kind", "version", "package", "status", "error"} <= set(r) for r in rows)
    by_name = {(r["name"], r["kind"]): r for r in rows}
    assert by_name[("protonet", "algorithm")]["status"] == "ok"
    assert by_name[("protonet", "algorithm")]["package"] == "metastudio"
    assert by_name[("tinynet", "backbone")]["package"] == "metastudio-tiny-backbone"
    for name, (dist, _module, _source, expected) in BROKEN.items():
        row = by_name[(name, "plugin")]
        assert (row["status"], row["package"], row["version"]) == ("failed", dist, "1.0")
        assert expected in row["error"]
    warnings = [r for r in rows if r["status"] == "warning"]
    assert [r["name"] for r in warnings] == ["duplicate"] and "conv4" in warnings[0]["error"]


def test_cli_plugins_table_and_safe_mode(third_party, capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:6] == ["NAME", "KIND", "VERSION", "PACKAGE", "STATUS", "ERROR"]
    assert "failed" in out and "the licence server cannot be reached" in out
    reset_host()
    assert cli.main(["plugins", "--safe-mode", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    statuses = {r["name"]: r["status"] for r in rows if r["kind"] == "plugin"}
    assert statuses["import-error"] == "disabled" and statuses["good-backbone"] == "disabled"
    assert get_host().safe_mode


# ----------------------------------------------------------------------------------------------
# the hook documentation


def _hookspecs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {n: f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, marker)}


def test_every_hook_is_documented_with_an_example():
    specs = _hookspecs()
    assert specs, "no hookspecs found"
    for name, func in specs.items():
        doc = inspect.getdoc(func) or ""
        assert len(doc) > 200, f"hookspec {name} needs a real docstring"
        assert "Example::" in doc and "@hookimpl" in doc and f"def {name}():" in doc, f"hookspec {name} needs an example"
    assert "Example" in (hookspecs.__doc__ or "") or "@hookimpl" in (hookspecs.__doc__ or "")


def test_every_hook_the_host_calls_has_a_hookspec_and_vice_versa():
    assert set(manager.HOOKS) == set(_hookspecs())
    for name in manager.HOOKS:
        assert len(inspect.signature(getattr(hookspecs, name)).parameters) == 0, f"{name} must take no arguments"


# ----------------------------------------------------------------------------------------------
# the test kit


def test_synthetic_dataset_is_deterministic_and_well_formed():
    a, b = synthetic_dataset(), synthetic_dataset()
    assert isinstance(a, FewShotDataset) and a.images.dtype == torch.uint8
    assert tuple(a.images.shape) == (96, 1, 28, 28) and a.class_sizes == [8] * 12
    assert torch.equal(a.images, b.images) and a.class_names == b.class_names
    assert len(set(a.class_names)) == 12
    assert not torch.equal(a.images, synthetic_dataset(seed=1).images)
    c = synthetic_dataset(classes=5, per_class=3, channels=3, image_size=20, seed=4)
    assert tuple(c.images.shape) == (15, 3, 20, 20)
    # Each class is its own pattern: images are nearer their class mean than other classes' means.
    x = a.images.float().reshape(12, 8, -1)
    means = x.mean(1)
    nearest = torch.cdist(x.reshape(96, -1), means).argmin(1)
    assert (nearest == torch.arange(12).repeat_interleave(8)).float().mean() > 0.9
    EpisodeSampler(a, 5, 1, 2).episode(0)


def test_protonet_passes_the_algorithm_contract(tmp_path):
    check_algorithm(PrototypicalNetworks, tmp_path=tmp_path)


def test_protonet_with_cosine_distance_passes_the_contract(tiny_host, tmp_path):
    check_algorithm(PrototypicalNetworks, backbone="tiny", host=tiny_host, steps=4, tmp_path=tmp_path,
                    hparams={"distance": "cosine", "lr": 0.01})


class SigmoidLearner(ProtoLearner):
    """Scores in [0, 1] that are not a distribution over the classes."""

    @torch.inference_mode()
    def predict_proba(self, images):
        return self.algorithm.logits(self.algorithm.embed_all(images), self.prototypes).sigmoid().float().cpu()


class OldStyleLearner(Learner):
    """A learner of the older contract: its own predict_proba, no forward."""

    def __init__(self, algorithm, prototypes, class_names):
        super().__init__(class_names)
        self.inner = ProtoLearner(algorithm, prototypes, class_names)

    def predict_proba(self, images):
        return self.inner.predict_proba(images)


class SharpenedLearner(ProtoLearner):
    """Probabilities that sum to 1 but are not the softmax of its forward."""

    def predict_proba(self, images):
        squared = super().predict_proba(images).pow(2)
        return squared / squared.sum(1, keepdim=True)


class InfiniteLearner(ProtoLearner):
    def forward(self, images):
        logits = super().forward(images)
        return torch.cat([logits[:, :1] - float("inf"), logits[:, 1:]], 1)


class BatchBakingLearner(ProtoLearner):
    """A forward whose batch size becomes a constant when traced."""

    def forward(self, images):
        return super().forward(images)[: int(images.shape[0])].reshape(int(images.shape[0]), -1)


class TensorMetricsProto(PrototypicalNetworks):
    def meta_train_step(self, episodes):
        metrics = super().meta_train_step(episodes)
        return {"loss": torch.tensor(metrics["loss"]), "accuracy": metrics["accuracy"]}


class MutatingProto(PrototypicalNetworks):
    def adapt(self, support, progress=None):
        with torch.no_grad():  # "fine-tunes" the shared weights in place: every adaptation drifts the model
            next(self.parameters()).mul_(1.01)
        return super().adapt(support, progress)


class ForgetfulProto(PrototypicalNetworks):
    """Learns a scale that is not in its state_dict, so a reloaded model predicts differently."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = torch.rand(()).item() + 0.5

    def logits(self, queries, prototypes):
        return super().logits(queries, prototypes) * self.scale


class NoProgressProto(PrototypicalNetworks):
    def adapt(self, support, progress=None):
        return super().adapt(support, None)


class NotLearningProto(PrototypicalNetworks):
    def optimizer_step(self, loss):
        pass


class MisdeclaredProto(PrototypicalNetworks):
    """Says a trained model may change feature_transform, which adds a stored mean to its weights."""

    hyperparameters = with_changes(PrototypicalNetworks.hyperparameters, feature_transform={"role": "adaptation"})


@pytest.mark.parametrize(("cls", "message"), [
    (proto_with_learner(SigmoidLearner), "must sum to 1"),
    (TensorMetricsProto, "plain Python floats"),
    (MutatingProto, "adapt must not change the algorithm"),
    (ForgetfulProto, "predicts differently"),
    (NoProgressProto, "progress callback"),
    (NotLearningProto, "loss did not go down"),
    (proto_with_learner(OldStyleLearner), r"\[forward\] OldStyleLearner must implement forward"),
    (proto_with_learner(SharpenedLearner), r"\[forward\] predict_proba must be the softmax of forward"),
    (proto_with_learner(InfiniteLearner), r"\[forward\] forward returned NaN or infinite logits"),
    (proto_with_learner(BatchBakingLearner), r"\[export\] export_learner\(\.\.\., 'torchscript'\) failed"),
    (MisdeclaredProto, r"\[roles\] hyperparameter feature_transform is declared role='adaptation'.*feature_mean.*"
                       "declare it role='architecture'"),
])
def test_the_testkit_catches_broken_algorithms(cls, message, tiny_host, tmp_path):
    with pytest.raises(AssertionError, match=message):
        check_algorithm(cls, backbone="tiny", host=tiny_host, steps=4, tmp_path=tmp_path)


def test_the_testkit_checks_the_class_declaration(tiny_host):
    class Nameless(PrototypicalNetworks):
        name = ""

    class Shouting(PrototypicalNetworks):
        name = "Proto Net"

    class NoFamily(PrototypicalNetworks):
        name = "nofamily"
        family = "magic"

    for cls, message in ((Nameless, "non-empty string"), (Shouting, "lower case"), (NoFamily, "family must be one of")):
        with pytest.raises(AssertionError, match=message):
            check_algorithm(cls, backbone="tiny", host=tiny_host)
    with pytest.raises(AssertionError, match="not a subclass"):
        check_algorithm(dict, host=tiny_host)


def test_check_algorithm_leaves_the_global_random_state_alone(tiny_host, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    torch.set_num_threads(2)
    check_algorithm(PrototypicalNetworks, backbone="tiny", host=tiny_host, steps=4, tmp_path=tmp_path)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == 2


def test_check_backbone(third_party):
    host = PluginHost().load_entry_points()
    for spec, channels, size in ((host.backbone("conv4"), 1, 28), (host.backbone("tinynet"), 3, 32), (TINY, 1, 28)):
        net = check_backbone(spec, in_channels=channels, image_size=size)
        assert net.out_features > 0

    class Liar(nn.Module):
        out_features = 10

        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(AssertionError, match=r"expected \[3, 10\]"):
        check_backbone(BackboneSpec("liar", lambda c, s: Liar()))
    with pytest.raises(AssertionError, match="BackboneSpec"):
        check_backbone("conv4")


def _class_folders(root: Path, classes: int = 3, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_check_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("METASTUDIO_CACHE_DIR", str(tmp_path / "cache"))
    root = _class_folders(tmp_path / "data")
    host = PluginHost().load_entry_points()
    ds = check_dataset(host.dataset("folder"), root, "train")
    assert ds.num_classes == 3 and ds.image_size == 84 and ds.channels == 3
    grey = check_dataset(host.dataset("folder"), root, "test", channels=1)
    assert grey.channels == 1

    def wrong_size(root, split, *, image_size=None, progress=None, **_):
        return synthetic_dataset(image_size=20)

    with pytest.raises(AssertionError, match="declares image size 28"):
        check_dataset(DatasetSpec("wrong", wrong_size, image_size=28, channels=1), root, "train")
    with pytest.raises(AssertionError, match="FewShotDataset"):
        check_dataset(DatasetSpec("nothing", lambda *a, **k: None), root, "train")
    with pytest.raises(AssertionError, match="does not declare the split"):
        check_dataset(host.dataset("folder"), root, "holdout")
