"""The metastudio command end to end, on images generated in the test."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metastudio.cli import main

from conftest import make_train_val_tree, class_pattern, make_class_tree


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A small ProtoNet meta-trained through the CLI on a generated folder dataset."""
    root = make_train_val_tree(tmp_path_factory.mktemp("data"), size=32)
    out = root / "model.safetensors"
    code = main(["train", "--algorithm", "protonet", "--backbone", "conv4", "--dataset", "folder", "--root", str(root),
                 "--ways", "4", "--shots", "1", "--queries", "2", "--episodes", "12", "--image-size", "32",
                 "--val-every", "6", "--val-episodes", "4", "--val-ways", "3", "--val-queries", "2", "--out", str(out), "--device", "cpu",
                 "--hp", "lr=0.002"])
    assert code == 0 and out.exists()
    return root, out


def test_train_writes_a_model_with_its_history(trained_model, capsys):
    root, out = trained_model
    assert main(["info", str(out), "--history"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["algorithm"] == "protonet" and meta["image_size"] == 32 and meta["channels"] == 3
    assert meta["hyperparameters"]["lr"] == 0.002
    assert [h["step"] for h in meta["history"]][0] == 6
    assert meta["dataset"]["name"] == "folder" and meta["dataset"]["ways"] == 4


def test_eval_prints_accuracy_and_json(trained_model, capsys):
    root, out = trained_model
    args = ["eval", "--model", str(out), "--dataset", "folder", "--root", str(root), "--split", "val",
            "--ways", "3", "--shots", "1", "--queries", "3", "--episodes", "10", "--device", "cpu"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("accuracy ") and "±" in line and line.endswith("% (10 episodes)")
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "ci95", "episodes", "ways", "shots"} <= set(result)
    assert result["episodes"] == 10 and result["ways"] == 3 and 0 <= result["accuracy"] <= 100
    assert f"{result['accuracy']:.2f}" in line  # the same fixed episodes both times


def test_eval_changes_adaptation_hyperparameters_and_refuses_the_others(trained_model, capsys):
    root, out = trained_model
    args = ["eval", "--model", str(out), "--dataset", "folder", "--root", str(root), "--split", "val",
            "--ways", "3", "--shots", "1", "--queries", "3", "--episodes", "10", "--device", "cpu", "--json"]
    assert main(args) == 0
    euclidean = json.loads(capsys.readouterr().out)
    assert main(args + ["--hp", "distance=cosine", "--hp", "temperature=0.01"]) == 0
    cosine = json.loads(capsys.readouterr().out)
    assert cosine["hyperparameters"] == {"distance": "cosine", "temperature": 0.01}  # the values in use
    assert euclidean["hyperparameters"] == {} and cosine["episodes"] == euclidean["episodes"]
    assert main(args + ["--hp", "lr=0.5"]) == 1
    err = capsys.readouterr().err
    assert "lr is fixed by the trained model" in err and "Meta-train a new" in err
    assert main(args + ["--hp", "distance=manhattan"]) == 2
    assert "distance" in capsys.readouterr().err


def test_load_model_applies_adaptation_overrides(trained_model):
    from metastudio.engine.checkpoint import load_model
    from metastudio.errors import FixedHyperParameterError
    from metastudio.plugins import get_host

    _, out = trained_model
    plain = load_model(out, get_host(), "cpu")
    cosine = load_model(out, get_host(), "cpu", {"distance": "cosine"})
    assert plain.algorithm.hparams["distance"] == "euclidean" and cosine.algorithm.hparams["distance"] == "cosine"
    assert cosine.metadata["hyperparameters"]["distance"] == "cosine"
    for name, p in plain.algorithm.state_dict().items():  # same weights, only the use differs
        assert (p == cosine.algorithm.state_dict()[name]).all()
    with pytest.raises(FixedHyperParameterError, match="lr is fixed"):
        load_model(out, get_host(), "cpu", {"lr": 0.5})


def test_classify_prints_predictions_and_writes_csv(trained_model, tmp_path, capsys):
    _, model = trained_model
    support = tmp_path / "support"
    names = ["apples", "bananas", "cherries"]
    rng = np.random.default_rng(5)
    query = tmp_path / "query"
    query.mkdir()
    truth = {}
    for c, name in enumerate(names):
        (support / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(class_pattern(40 + c, 48, rng)).save(support / name / f"{i}.jpg", quality=95)
        for i in range(4):
            f = query / f"{name}_{i}.png"
            Image.fromarray(class_pattern(40 + c, 48, rng)).save(f)
            truth[str(f)] = name
    (query / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out_csv = tmp_path / "predictions.csv"
    code = main(["classify", "--model", str(model), "--support", str(support), "--query", str(query),
                 "--csv", str(out_csv), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0
    assert "broken.png" in captured.err and "skipped" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 12 and all("%" in line for line in lines)
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["file", "predicted", *names, "unsure"]
    assert len(rows) == 12
    for row in rows:
        assert abs(sum(float(row[n]) for n in names) - 1) < 1e-4
        assert row["predicted"] == max(names, key=lambda n: float(row[n]))
    right = sum(row["predicted"] == truth[row["file"]] for row in rows)
    assert right >= 10, f"only {right}/12 right on clearly separable classes"


def test_classify_single_files_and_clear_errors(trained_model, tmp_path, capsys):
    _, model = trained_model
    support = make_class_tree(tmp_path / "s", classes=2, per_class=2)
    one = next((support / "class00").iterdir())
    assert main(["classify", "--model", str(model), "--support", str(support), "--query", str(one)]) == 0
    assert capsys.readouterr().out.count("\n") == 1

    assert main(["classify", "--model", "no-such-model", "--support", str(support), "--query", str(one)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model 'no-such-model' not found") and "\n" not in err

    lonely = make_class_tree(tmp_path / "lonely", classes=1, per_class=2)
    assert main(["classify", "--model", str(model), "--support", str(lonely), "--query", str(one)]) == 1
    assert "at least two classes" in capsys.readouterr().err

    assert main(["classify", "--model", str(model), "--support", str(support), "--query", str(tmp_path / "nope.png")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_classify_uses_the_classes_a_model_holds(trained_model, tmp_path, capsys):
    """A model saved with its adapted classes classifies without --support; one without says so."""
    from metastudio.app.session import ClassifierSession
    from metastudio.engine.checkpoint import save_model
    from metastudio.plugins import get_host

    _, model = trained_model
    support = make_class_tree(tmp_path / "s", classes=3, per_class=3, size=32, seed=4)
    session = ClassifierSession(get_host(), "cpu")
    session.load(model)
    spec = [(d.name, [(str(f), f) for f in sorted(d.iterdir())]) for d in sorted(support.iterdir())]
    queries = [(str(i), f) for i, f in enumerate(sorted(support.rglob("img002.png")))]
    expected = session.run(spec, queries)
    with_classes = save_model(session.algorithm, tmp_path / "classes.safetensors", learner=session.learner)

    assert main(["classify", "--model", str(with_classes), "--query", *(str(f) for _, f in queries),
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["class00", "class01", "class02"]
    for line, (image_id, _) in zip(lines, queries):
        assert f"({100 * max(expected.probabilities[image_id]):.1f}%)" in line
    assert main(["classify", "--model", str(model), "--query", str(queries[0][1])]) == 1
    assert "error: --support is needed: this model holds no adapted classes" in capsys.readouterr().err


def test_debug_adds_the_traceback_before_or_after_the_command(capsys):
    assert main(["classify", "--model", "no-such-model", "--query", "x.png"]) == 1
    plain = capsys.readouterr().err
    assert plain.startswith("error: model 'no-such-model' not found") and "Traceback" not in plain
    for argv in (["--debug", "info", "no-such-model"], ["info", "no-such-model", "--debug"],
                 ["classify", "--debug", "--model", "no-such-model", "--query", "x.png"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: model 'no-such-model' not found"), argv
        assert "Traceback (most recent call last)" in err and "in resolve_model" in err, argv


def test_an_unexpected_failure_is_one_line_naming_it(monkeypatch, capsys):
    import metastudio.cli as cli
    from metastudio.errors import EXIT_INTERNAL, INTERNAL_FAULT_NOTE

    def broken(name):
        raise RuntimeError("the catalogue broke")

    monkeypatch.setattr(cli, "resolve_model", broken)
    assert main(["info", "anything"]) == EXIT_INTERNAL == 4
    assert capsys.readouterr().err == f"error: RuntimeError: the catalogue broke. {INTERNAL_FAULT_NOTE}\n"
    assert "fault in MetaStudio itself" in INTERNAL_FAULT_NOTE and "--debug" in INTERNAL_FAULT_NOTE
    assert main(["info", "anything", "--debug"]) == EXIT_INTERNAL
    assert "in broken" in capsys.readouterr().err


def test_a_failure_in_plugin_code_names_the_plugin_and_exits_3(monkeypatch, capsys):
    """An exception raised through a loaded plugin's module, outside the guarded calls, is the
    plugin's fault: one line naming it with its package, exit status 3."""
    import types

    import metastudio.cli as cli
    from metastudio.errors import EXIT_PLUGIN, PluginOrigin, register_plugin_module

    plugin = types.ModuleType("mstest_cli_plugin")
    exec(compile("def lookup(name):\n    raise LookupError(f'no entry {name!r}')\n", "mstest_cli_plugin.py", "exec"),
         plugin.__dict__)
    register_plugin_module("mstest_cli_plugin", PluginOrigin("cli-plugin", "metastudio-cli-plugin", "0.3"))
    monkeypatch.setattr(cli, "resolve_model", plugin.lookup)
    assert main(["info", "m"]) == EXIT_PLUGIN == 3
    assert capsys.readouterr().err == ("error: LookupError: no entry 'm', in plugin cli-plugin "
                                       "(package metastudio-cli-plugin 0.3)\n")


def test_timeout_is_offered_by_classify_and_eval(capsys):
    for command in ("classify", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--timeout SECONDS" in text and "exit status 124" in text and "default: no limit" in text
    with pytest.raises(SystemExit) as caught:
        main(["classify", "--model", "m", "--query", "q", "--timeout", "soon"])
    assert caught.value.code == 2 and "expected a number of seconds, got 'soon'" in capsys.readouterr().err


def test_a_plugin_call_past_timeout_exits_124_at_once(tmp_path):
    """The installed command, with a plugin whose adapt hangs: --timeout stops it with status
    124 and the plugin named, although the abandoned call still runs (the process leaves)."""
    import faulty_plugins as fp

    site = tmp_path / "site"
    fp.install(site, kinds=["hanging_adapt"])
    model = fp.make_model(site, "hanging_adapt", tmp_path / "hang.safetensors", tmp_path)
    run = subprocess.run([sys.executable, "-m", "metastudio", "classify", "--model", str(model), "--support",
                          str(tmp_path / "support"), "--query", str(tmp_path / "query"), "--device", "cpu",
                          "--timeout", "1"], capture_output=True, text=True, env=fp.env(site), timeout=120)
    assert run.returncode == 124, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "error: adapting to the examples did not finish within 1 s, so MetaStudio stopped waiting for it, in "
        f"{fp.origin_words('hanging_adapt')}")


def test_bad_hyperparameter_and_unknown_algorithm(tmp_path, capsys):
    root = make_class_tree(tmp_path / "d", classes=3, per_class=3)
    base = ["train", "--dataset", "folder", "--root", str(root), "--episodes", "1", "--out", str(tmp_path / "m.safetensors"),
            "--val-split", "none", "--ways", "2", "--queries", "1"]
    assert main(base + ["--algorithm", "protonet", "--hp", "lr=-1"]) == 2
    assert "lr must be at least" in capsys.readouterr().err
    assert main(base + ["--algorithm", "protonet", "--hp", "colour=blue"]) == 2
    assert "no hyperparameter colour" in capsys.readouterr().err
    assert main(base + ["--algorithm", "nope"]) == 1
    assert "no algorithm named 'nope'" in capsys.readouterr().err
    omniglot = ["train", "--algorithm", "protonet", "--dataset", "omniglot", "--root", str(tmp_path), "--episodes", "1",
                "--out", str(tmp_path / "m.safetensors"), "--per-class", "3"]
    assert main(omniglot) == 2
    assert "--per-class is not an option of the omniglot dataset" in capsys.readouterr().err


def train_on_a_folder(tmp_path, capsys, *flags: str, per_class: int = 4) -> tuple[int, str]:
    """Meta-train ProtoNet through the CLI (2-way, on 4 generated 16-pixel classes of ``per_class``
    images, no val/ folder); its exit status and what it wrote on stderr."""
    root = make_class_tree(tmp_path / "d", classes=4, per_class=per_class, size=16)
    code = main(["train", "--algorithm", "protonet", "--dataset", "folder", "--root", str(root), "--ways", "2",
                 "--queries", "1", "--image-size", "16", "--out", str(tmp_path / "m.safetensors"), "--device", "cpu",
                 *flags])
    return code, capsys.readouterr().err


def test_per_class_limits_the_training_images(tmp_path, capsys):
    code, err = train_on_a_folder(tmp_path, capsys, "--episodes", "1", "--shots", "1", "--val-split", "none",
                                  "--per-class", "3", per_class=6)
    assert code == 0 and "4 classes, 12 images" in err


def test_training_without_a_validation_split_warns(tmp_path, capsys):
    code, err = train_on_a_folder(tmp_path, capsys, "--episodes", "2", "--val-ways", "2", "--val-queries", "1",
                                  "--val-episodes", "2")
    assert code == 0 and "validation measures memorisation" in err


def test_without_a_command_the_app_starts(tmp_path, monkeypatch):
    """``metastudio`` opens the window; ``--timing`` closes it as soon as it is on screen, so
    this runs the real start-up path end to end (in a subprocess: it owns a QApplication)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "METASTUDIO_RECOVERY_DIR": str(tmp_path / "rec"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    run = subprocess.run([sys.executable, "-m", "metastudio", "--timing"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert "window shown at" in run.stderr


def test_a_project_file_argument_and_bad_app_options(tmp_path, capsys):
    assert main(["--support", str(tmp_path / "absent"), "--screenshot", str(tmp_path / "x.png")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_console_script_runs_as_a_program():
    run = subprocess.run([sys.executable, "-m", "metastudio", "plugins", "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    names = {row["name"] for row in json.loads(run.stdout)}
    assert {"protonet", "conv4", "resnet12", "omniglot", "folder"} <= names


def test_shipped_model_is_found_by_name(tmp_path, monkeypatch, trained_model, capsys):
    _, model = trained_model
    shelf = tmp_path / "models"
    shelf.mkdir()
    (shelf / "demo.safetensors").write_bytes(Path(model).read_bytes())
    monkeypatch.setenv("METASTUDIO_MODELS_DIR", str(shelf))
    assert main(["info", "demo"]) == 0
    assert json.loads(capsys.readouterr().out)["algorithm"] == "protonet"


def test_eval_refuses_per_class_on_a_dataset_without_it(tmp_path, trained_model, capsys):
    _, model = trained_model
    assert main(["eval", "--model", str(model), "--dataset", "omniglot", "--root", str(tmp_path), "--per-class", "3",
                 "--episodes", "1"]) == 2
    assert "--per-class is not an option of the omniglot dataset" in capsys.readouterr().err


def test_train_with_val_holdout_validates_on_held_out_training_classes(tmp_path, capsys):
    root = make_class_tree(tmp_path / "d", classes=6, per_class=4, size=16)  # no val/ folder
    out = tmp_path / "m.safetensors"
    base = ["train", "--algorithm", "protonet", "--dataset", "folder", "--root", str(root), "--episodes", "2",
            "--ways", "2", "--queries", "1", "--val-ways", "2", "--val-queries", "1", "--val-episodes", "2",
            "--val-every", "2", "--image-size", "16", "--out", str(out), "--device", "cpu"]
    assert main(base + ["--val-holdout", "2"]) == 0
    err = capsys.readouterr().err
    assert "held-out classes: 2 classes" in err and "memorisation" not in err and "does not validate" not in err
    assert "step 0: validation accuracy" in err
    assert main(["info", str(out), "--history"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["dataset"]["val_holdout"] == 2 and [h["step"] for h in meta["history"]][:1] == [0]
    # an explicit validation split as well: it is not used, and the command says so
    assert main(base + ["--val-holdout", "2", "--val-split", "val"]) == 0
    assert "--val-split val is ignored" in capsys.readouterr().err
    assert main(base + ["--val-holdout", "-1"]) != 0
    assert "--val-holdout must be 0 or more" in capsys.readouterr().err


def test_the_val_holdout_flag_is_documented(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--val-holdout N" in capsys.readouterr().out


def test_sigterm_stops_training_with_the_model_and_resume_checkpoint_saved(tmp_path):
    """A scheduler, `timeout` or torchrun stops a run with SIGTERM: the run ends after its step like
    Ctrl-C, saves what it has, says how to resume, and `--resume` continues it."""
    import signal
    import time

    root = make_class_tree(tmp_path / "d", classes=4, per_class=4, size=16)
    out = tmp_path / "m.safetensors"
    cmd = [sys.executable, "-m", "metastudio", "train", "--algorithm", "protonet", "--dataset", "folder", "--root",
           str(root), "--episodes", "1000000", "--ways", "2", "--shots", "1", "--queries", "1", "--val-split", "none",
           "--val-every", "1000000", "--image-size", "16", "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        resume = out.with_name("m.resume.safetensors")
        # Wait until it trains (the first progress line), then stop it.
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if line.startswith("step ") or not line:
                break
        assert any(l.startswith("step ") for l in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "a stopped run is not a completed one"
    assert "cancelled" in stdout and out.exists() and resume.exists()
    assert "--resume" in stderr
    done = int(stdout.split("cancelled: ")[1].split(" of ")[0])
    assert 0 < done < 1_000_000
    # The same command with --resume and fewer episodes finishes from there.
    cmd[cmd.index("1000000")] = str(done + 5)
    finished = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120, env=env)
    assert finished.returncode == 0, finished.stderr
    assert f"completed: {done + 5} of {done + 5} steps" in finished.stdout
