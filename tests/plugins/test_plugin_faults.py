"""Plugin faults at run time are contained and named (issue 22).

The six faults of tests/faulty_plugins.py (an import error, a raising hook, a raising ``adapt``,
NaN probabilities, probabilities of the wrong shape, an ``adapt`` that hangs) are installed as
third-party packages; the installed command reports each with the plugin's name and package on
one line, with its own exit status, and keeps working with the other algorithms. Below the
command: :func:`metastudio.engine.guard.call_guarded`, ``check_probabilities``,
:func:`metastudio.errors.for_person` naming a plugin from a traceback, the classifier session
and the evaluator.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import threading
import types

import pytest
import torch

import faulty_plugins as fp
from conftest import METASTUDIO_COMMAND
from metastudio.errors import (
    EXIT_ERROR, EXIT_INTERNAL, EXIT_PLUGIN, EXIT_TIMEOUT, MetaStudioError, PluginCancelled, PluginError, PluginOrigin,
    PluginTimeout, for_person, plugin_of, register_plugin_module,
)
from metastudio.engine.guard import abandoned_calls, call_guarded, check_probabilities
from metastudio.plugins import get_host, reset_host

ORIGIN = PluginOrigin("my-plugin", "my-package", "2.1")


@pytest.fixture(autouse=True)
def clean_state():
    """A fresh plugin host, one torch thread, and no fault module left behind (a hanging one released)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reset_host()
    yield
    fp.release()
    reset_host()
    torch.set_num_threads(threads)
    for name in [m for m in sys.modules if m.startswith("mstest_fault_")]:
        del sys.modules[name]


# ----------------------------------------------------------------------------------------------
# the installed command


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Every fault installed into ``site``, a model file of each, a built-in ProtoNet model, support
    and query folders and a small dataset for ``eval`` (28 px greyscale)."""
    work = tmp_path_factory.mktemp("faults")
    site = work / "site"
    fp.install(site)
    models = {kind: fp.make_model(site, kind, work / f"{kind}.safetensors", work) for kind in fp.FAULTS}
    models["protonet"] = fp.make_protonet_model(work / "protonet.safetensors")
    fp.write_images(work / "evaldata" / "test", classes=3, per_class=4)
    return types.SimpleNamespace(site=site, work=work, models=models)


def metastudio(installed, *args: str) -> subprocess.CompletedProcess:
    """The installed command, with the faulty plugins on PYTHONPATH."""
    return subprocess.run([METASTUDIO_COMMAND, *args], capture_output=True, text=True,
                          env=fp.env(installed.site), cwd=installed.work, timeout=120)


def classify(installed, model: str, *extra: str) -> subprocess.CompletedProcess:
    return metastudio(installed, "classify", "--model", str(installed.models[model]), "--support", "support",
                      "--query", "query", "--device", "cpu", *extra)


def error_line(run: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line on stderr; nothing on stderr looks like a traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    return lines[0]


#: fault -> (its exit status, what its error line says besides the plugin and package)
RUN_TIME = {
    "raising_adapt": (EXIT_PLUGIN, f"adapting to the examples failed: RuntimeError: {fp.RAISED['raising_adapt']}"),
    "nan_output": (EXIT_PLUGIN, "gave NaN or infinite probabilities"),
    "wrong_shape": (EXIT_PLUGIN, "gave probabilities of shape [8, 2] for 4 images and 2 classes"),
    "hanging_adapt": (EXIT_TIMEOUT, "adapting to the examples did not finish within 2 s"),
}


@pytest.mark.parametrize("kind", fp.RUN_FAULTS)
def test_classify_names_the_plugin_that_fails_at_run_time(installed, kind):
    # --timeout bounds the hanging adapt (the subprocess limit of 120 s, far below the 600 s it
    # would hang, catches a command that does not stop waiting); the others finish before it.
    run = classify(installed, kind, "--timeout", "2")
    code, words = RUN_TIME[kind]
    assert run.returncode == code, run.stderr
    line = error_line(run)
    assert words in line and line.endswith(f", in {fp.origin_words(kind)}"), line
    assert run.stdout == ""  # no made-up predictions


@pytest.mark.parametrize("kind", fp.LOAD_FAULTS)
def test_classify_with_a_plugin_that_failed_to_load_names_it_and_why(installed, kind):
    run = classify(installed, kind)
    assert run.returncode == EXIT_ERROR
    line = error_line(run)
    assert f"no algorithm named '{fp.algorithm_name(kind)}'" in line
    assert f"{fp.origin_words(kind)}: " in line
    expected = {"import_error": "could not be imported: ModuleNotFoundError: ",
                "raising_hook": "hook metastudio_algorithms raised RuntimeError: "}[kind] + fp.RAISED[kind]
    assert expected in line


def test_plugins_lists_the_load_faults_and_the_rest_works(installed):
    run = metastudio(installed, "plugins", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["plugin"]: row for row in json.loads(run.stdout)}
    for kind in fp.LOAD_FAULTS:
        row = rows[fp.entry_point(kind)]
        assert row["status"] == "failed" and row["package"] == fp.distribution(kind) and row["version"] == fp.VERSION
        assert fp.RAISED[kind] in row["error"]
    for kind in fp.RUN_FAULTS:  # they load: their faults show only when used
        assert rows[fp.entry_point(kind)]["status"] == "ok"
    # The same installation classifies with a built-in algorithm.
    ok = classify(installed, "protonet")
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 4 and all("%" in line for line in ok.stdout.splitlines())


@pytest.mark.parametrize("kind", ["raising_adapt", "nan_output", "wrong_shape"])
def test_eval_of_a_faulty_algorithm_names_it_instead_of_an_accuracy(installed, kind):
    run = metastudio(installed, "eval", "--model", str(installed.models[kind]), "--dataset", "folder", "--root",
                     "evaldata", "--ways", "2", "--shots", "1", "--queries", "2", "--episodes", "2", "--device", "cpu")
    assert run.returncode == EXIT_PLUGIN, run.stderr
    line = error_line(run)
    assert line.endswith(f", in {fp.origin_words(kind)}") and "accuracy" not in run.stdout


def test_eval_of_a_hanging_adapt_stops_at_the_timeout_and_debug_shows_the_traceback(installed):
    run = metastudio(installed, "eval", "--model", str(installed.models["hanging_adapt"]), "--dataset", "folder",
                     "--root", "evaldata", "--ways", "2", "--shots", "1", "--queries", "2", "--episodes", "2",
                     "--device", "cpu", "--timeout", "1.5", "--debug")
    assert run.returncode == EXIT_TIMEOUT, run.stderr
    assert ("error: adapting to an episode's support set did not finish within 1.5 s, so MetaStudio stopped waiting "
            f"for it, in {fp.origin_words('hanging_adapt')}") in run.stderr
    assert "Traceback (most recent call last)" in run.stderr and "PluginTimeout" in run.stderr


def test_debug_shows_where_the_plugin_raised(installed):
    run = classify(installed, "raising_adapt", "--debug")
    assert run.returncode == EXIT_PLUGIN
    assert run.stderr.count("error: ") == 1 and "Traceback (most recent call last)" in run.stderr
    assert f"{fp.module_name('raising_adapt')}.py" in run.stderr and "in adapt" in run.stderr


def test_timeout_must_be_a_positive_number(installed):
    run = classify(installed, "protonet", "--timeout", "0")
    assert run.returncode == 2 and "--timeout: expected a number of seconds above 0, got '0'" in run.stderr


# ----------------------------------------------------------------------------------------------
# call_guarded and check_probabilities


def test_call_guarded_names_the_plugin_of_what_it_raises():
    assert call_guarded(divmod, 7, 2, what="dividing", origin=ORIGIN) == (3, 1)

    def broken():
        raise KeyError("prototypes")

    with pytest.raises(PluginError) as caught:
        call_guarded(broken, what="adapting", origin=ORIGIN)
    assert str(caught.value) == "adapting failed: KeyError: 'prototypes', in plugin my-plugin (package my-package 2.1)"
    assert caught.value.origin == ORIGIN and isinstance(caught.value.__cause__, KeyError)
    said = for_person(caught.value)
    assert said.exit_code == EXIT_PLUGIN and "in broken" in said.details

    def on_purpose():
        raise MetaStudioError("the support set needs colour images")

    with pytest.raises(PluginError, match=r"^the support set needs colour images, in plugin my-plugin"):
        call_guarded(on_purpose, what="adapting", origin=ORIGIN, time_limit=30)  # the same in a worker thread

    def gives_up():
        sys.exit("no GPU")

    with pytest.raises(PluginError, match="adapting failed: SystemExit: no GPU"):
        call_guarded(gives_up, what="adapting", origin=None)


def test_call_guarded_runs_the_worker_with_the_callers_grad_mode():
    with torch.no_grad():
        assert call_guarded(torch.is_grad_enabled, what="x", origin=None, time_limit=30) is False
    assert call_guarded(torch.is_grad_enabled, what="x", origin=None, time_limit=30) is True
    with torch.inference_mode():
        assert call_guarded(torch.is_inference_mode_enabled, what="x", origin=None, cancel=threading.Event()) is True
    thread = call_guarded(threading.current_thread, what="x", origin=None, time_limit=30)
    assert thread is not threading.current_thread() and thread.daemon


def test_call_guarded_stops_waiting_at_the_time_limit_and_on_cancel():
    release = threading.Event()
    with pytest.raises(PluginTimeout, match=r"^adapting did not finish within 0.2 s, so MetaStudio stopped waiting for "
                                            r"it, in plugin my-plugin"):
        call_guarded(release.wait, 60, what="adapting", origin=ORIGIN, time_limit=0.2)
    assert for_person(PluginTimeout("x", ORIGIN)).exit_code == EXIT_TIMEOUT
    assert any(t.is_alive() for t in abandoned_calls())

    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(PluginCancelled, match="^predicting was cancelled, in plugin my-plugin"):
        call_guarded(release.wait, 60, what="predicting", origin=ORIGIN, cancel=cancel)
    release.set()
    for thread in abandoned_calls():
        thread.join(10)
    assert not abandoned_calls()
    with pytest.raises(ValueError, match="more than 0 seconds"):
        call_guarded(print, what="x", origin=None, time_limit=0)


def test_call_guarded_lets_keyboard_interrupt_through():
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_guarded(interrupted, what="x", origin=ORIGIN)


@pytest.mark.parametrize("probs, message", [
    (torch.full((3, 7), 1 / 7), "gave probabilities of shape [3, 7] for 5 images and 4 classes"),
    (torch.full((5, 4), float("nan")), "gave NaN or infinite probabilities"),
    (torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 4 + [[float("inf"), 0, 0, 0]]), "gave NaN or infinite probabilities"),
    (torch.tensor([[1.5, -0.5, 0.0, 0.0]] * 5), "gave probabilities outside 0..1 (from -0.5 to 1.5)"),
    (torch.full((5, 4), 0.3), "gave probabilities that do not sum to 1 (image 1 of 5: 1.2)"),
    (torch.zeros(5, 4, dtype=torch.long), "of type torch.int64 instead of floating-point numbers"),
    ([[0.25] * 4] * 5, "the learner gave list instead of a tensor of probabilities for 5 images and 4 classes"),
])
def test_check_probabilities_says_what_is_wrong(probs, message):
    with pytest.raises(PluginError) as caught:
        check_probabilities(probs, 5, 4, what="the learner", origin=ORIGIN)
    assert message in str(caught.value) and str(caught.value).endswith(", in plugin my-plugin (package my-package 2.1)")


def test_check_probabilities_accepts_probabilities():
    probs = torch.tensor([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5 + 5e-4]])
    assert check_probabilities(probs, 3, 2, what="x", origin=None) is probs
    assert check_probabilities(torch.zeros(0, 2), 0, 2, what="x", origin=None).shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# errors: naming a plugin from a traceback


def plugin_module(name: str, origin: PluginOrigin | None, code: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, f"{name}.py", "exec"), module.__dict__)
    if origin is not None:
        register_plugin_module(name, origin)
    return module


def test_for_person_names_the_plugin_an_exception_came_through():
    module = plugin_module("mstest_traceback_plugin", ORIGIN, "def run(f):\n    return f()\n")

    def fails():
        raise TypeError("expected a tensor")

    with pytest.raises(TypeError) as caught:
        module.run(fails)  # raised here, passing through the plugin's frame
    said = for_person(caught.value)
    assert said.message == "TypeError: expected a tensor, in plugin my-plugin (package my-package 2.1)"
    assert said.exit_code == EXIT_PLUGIN and "mstest_traceback_plugin.py" in said.details

    try:  # raised from it: the cause's traceback names the plugin
        try:
            module.run(fails)
        except TypeError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as e:
        assert for_person(e).message.endswith(", in plugin my-plugin (package my-package 2.1)")


def test_for_person_calls_anything_else_a_fault_of_metastudio():
    with pytest.raises(RuntimeError) as caught:
        raise RuntimeError("the catalogue broke.\nsecond line")
    said = for_person(caught.value)
    assert said.exit_code == EXIT_INTERNAL
    assert said.message.startswith("RuntimeError: the catalogue broke.; second line. This is a fault in MetaStudio itself")
    assert "--debug" in said.message and "\n" not in said.message
    assert for_person(ValueError("lr must be positive")).exit_code == 2  # a bad value stays a usage error


def test_plugin_of_takes_the_longest_registered_prefix():
    outer, inner = PluginOrigin("outer", "pkg", "1"), PluginOrigin("inner", "pkg", "1")
    register_plugin_module("mstest_prefix", outer)
    register_plugin_module("mstest_prefix.algorithms.inner", inner)
    assert plugin_of("mstest_prefix.algorithms.inner.sub") == inner
    assert plugin_of("mstest_prefix.algorithms.other") == outer
    assert plugin_of("mstest_prefix") == outer
    assert plugin_of("mstest_prefixed") is None and plugin_of("") is None


def test_plugin_errors_pickle_and_read_without_an_origin():
    error = pickle.loads(pickle.dumps(PluginTimeout("adapting did not finish", ORIGIN)))
    assert isinstance(error, PluginTimeout) and error.origin == ORIGIN and str(error).endswith("(package my-package 2.1)")
    assert str(PluginError("adapting failed", None)) == "adapting failed"
    assert str(ORIGIN) == "plugin my-plugin (package my-package 2.1)"


# ----------------------------------------------------------------------------------------------
# the classifier session and the evaluator


@pytest.fixture
def faults_host(tmp_path, monkeypatch):
    """The faults installed on sys.path for this process, and a freshly loaded host."""
    fp.install(tmp_path / "site", monkeypatch)
    reset_host()
    return get_host()


def _support(session):
    from metastudio.data.datasets import load_class_folders

    algorithm = session.algorithm
    folder = load_class_folders(session.work / "support", image_size=algorithm.image_size,
                                channels=algorithm.channels, use_cache=False)
    return [folder.class_images(c) for c in range(folder.num_classes)], folder.class_names


def _session(host, tmp_path, kind, **kwargs):
    from metastudio.app.session import ClassifierSession

    model = fp.make_model(tmp_path / "site", kind, tmp_path / f"{kind}.safetensors", tmp_path)
    session = ClassifierSession(host, "cpu", **kwargs)
    session.load(model)
    session.work = tmp_path
    return session, model


def test_the_session_checks_what_the_learner_predicts(faults_host, tmp_path):
    session, _ = _session(faults_host, tmp_path, "wrong_shape")
    assert session.origin == PluginOrigin("fault-wrong_shape", "metastudio-fault-wrong_shape", "1.0")
    session.adapt_to(*_support(session))
    queries = [(str(i), f) for i, f in enumerate(sorted((tmp_path / "query").iterdir()))]
    with pytest.raises(PluginError, match=r"probabilities of shape \[8, 2\] for 4 images and 2 classes, in plugin "
                                          r"fault-wrong_shape \(package metastudio-fault-wrong_shape 1.0\)"):
        session.classify(queries)


def test_a_cancelled_session_forgets_the_model_and_loads_it_afresh(faults_host, tmp_path):
    session, model = _session(faults_host, tmp_path, "hanging_adapt")
    support, names = _support(session)
    outcome: dict = {}

    def adapt() -> None:
        try:
            session.adapt_to(support, names)
        except BaseException as e:  # noqa: BLE001 - looked at below
            outcome["error"] = e

    runner = threading.Thread(target=adapt)
    runner.start()
    module = sys.modules[fp.module_name("hanging_adapt")]
    while runner.is_alive() and not any(t.name.startswith("plugin call") for t in threading.enumerate()):
        runner.join(0.01)
    session.cancel()
    runner.join(30)
    assert isinstance(outcome.get("error"), PluginCancelled), outcome
    assert outcome["error"].origin.name == "fault-hanging_adapt"
    assert session.algorithm is None and session.learner is None
    module.RELEASE.set()  # the abandoned call ends; the model loads afresh
    info = session.load(model)
    assert info.algorithm == "fault_hanging_adapt" and session.algorithm is not None
    session.adapt_to(support, names)  # the cancel was cleared; RELEASE lets adapt through now
    assert session.learner is not None


def test_a_session_time_limit_stops_a_hanging_adapt(faults_host, tmp_path):
    session, _ = _session(faults_host, tmp_path, "hanging_adapt", time_limit=0.3)
    with pytest.raises(PluginTimeout, match="^adapting to the examples did not finish within 0.3 s"):
        session.adapt_to(*_support(session))
    assert session.algorithm is None


def test_evaluate_names_the_plugin_instead_of_giving_an_accuracy(faults_host, tmp_path):
    from metastudio.data.datasets import load_class_folders
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.engine.checkpoint import load_model
    from metastudio.engine.evaluator import evaluate

    data = load_class_folders(fp.write_images(tmp_path / "data", classes=3, per_class=3), image_size=28, channels=1,
                              use_cache=False)
    sampler = EpisodeSampler(data, 2, 1, 1, seed=0)
    for kind, words in [("raising_adapt", "adapting to an episode's support set failed: RuntimeError"),
                        ("nan_output", "gave NaN or infinite probabilities")]:
        algorithm = load_model(fp.make_model(tmp_path / "site", kind, tmp_path / f"{kind}.safetensors", tmp_path),
                               faults_host).algorithm
        origin = faults_host.origin_of("algorithm", algorithm.name)
        with pytest.raises(PluginError, match=words) as caught:
            evaluate(algorithm, sampler, 2, origin=origin)
        assert caught.value.origin == origin == PluginOrigin(fp.entry_point(kind), fp.distribution(kind), "1.0")
        with pytest.raises(PluginError, match=words) as caught:  # without one: the plugin of the class's module
            evaluate(algorithm, sampler, 2)
        assert caught.value.origin == origin
    protonet = load_model(fp.make_protonet_model(tmp_path / "p.safetensors"), faults_host).algorithm
    assert 0 <= evaluate(protonet, sampler, 2, time_limit=60).accuracy <= 100


def test_the_session_checks_the_unsure_scores(host, tmp_path):
    from metastudio.algorithms.openset import OpenSetPrediction
    from metastudio.app.session import ClassifierSession

    session = ClassifierSession(host, "cpu")
    session.load(fp.make_protonet_model(tmp_path / "p.safetensors"))
    session.work = fp.write_images(tmp_path / "support", classes=2).parent
    session.adapt_to(*_support(session))
    queries = [(str(i), f) for i, f in enumerate(sorted((tmp_path / "support").rglob("*.png")))]
    assert session.classify(queries).status == "ok"
    probs = torch.full((len(queries), 2), 0.5)
    for scores, words in [(torch.full((len(queries),), float("nan")), "gave NaN unsure scores"),
                          (torch.zeros(1), "gave unsure scores of shape [1] for 4 images")]:
        session.learner.predict_open_set = lambda images, s=scores: OpenSetPrediction(probs, s, "distance")
        with pytest.raises(PluginError, match=rf"the algorithm 'Prototypical Networks' {re.escape(words)}, in plugin protonet "
                                              r"\(package metastudio "):
            session.classify(queries)
