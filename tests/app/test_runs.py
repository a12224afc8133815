"""TrainingPlan (plain, JSON-able data) and prepare_run (a plan turned into a ready Trainer)."""

from __future__ import annotations

import json

import pytest
import torch

from metastudio.engine.checkpoint import load_model, read_metadata
from metastudio.engine.control import Control
from metastudio.errors import DatasetError, UnknownComponentError
from metastudio.app.runs import PreparedRun, RunCancelled, TrainingPlan, prepare_run
from metastudio.engine.trainer import StepEvent, Trainer

from conftest import make_class_tree

pytestmark = pytest.mark.usefixtures("one_thread")


def small_plan(root, out, **changes) -> TrainingPlan:
    values = dict(algorithm="protonet", backbone="conv4", dataset="folder", root=str(root) if root else None, ways=4, shots=1, queries=2,
                  episodes=6, val_every=3, val_episodes=3, val_ways=3, val_shots=1, val_queries=2, image_size=28,
                  device="cpu", hparams={"lr": 0.002}, out=str(out) if out else None, log_every=1)
    values.update(changes)
    return TrainingPlan(**values)


def test_plan_round_trips_through_json(tmp_path):
    plan = TrainingPlan(dataset="omniglot", root=tmp_path, options={"protocol": "lake"}, ways=60, queries=5,
                        episodes=8000, hparams={"lr": 0.001, "distance": "cosine"}, out=tmp_path / "m.safetensors",
                        val_split=None, seed=3)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["root"] == str(tmp_path) and data["out"] == str(tmp_path / "m.safetensors")
    again = TrainingPlan.from_dict(data)
    assert again == TrainingPlan.from_dict(plan.to_dict())
    assert again.options == {"protocol": "lake"} and again.val_split is None and again.ways == 60
    assert again.steps == 8000


def test_plan_from_dict_fills_defaults_ignores_unknown_and_checks_types():
    plan = TrainingPlan.from_dict({"algorithm": "protonet", "ways": 20, "from_a_newer_version": True})
    assert plan.ways == 20 and plan.shots == 1 and plan.val_split == "val"
    assert TrainingPlan.from_dict({"val_split": "none"}).val_split is None
    assert TrainingPlan.from_dict({"episodes": 10, "meta_batch": 4}).steps == 3
    with pytest.raises(ValueError, match="ways must be at least 2"):
        TrainingPlan.from_dict({"ways": 1})
    with pytest.raises(ValueError, match="episodes must be a whole number"):
        TrainingPlan.from_dict({"episodes": "many"})
    with pytest.raises(ValueError, match="precision"):
        TrainingPlan.from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="JSON object"):
        TrainingPlan.from_dict(["protonet"])


def test_prepare_run_builds_a_trainer_that_trains_and_saves(host, folder_data, tmp_path):
    stages = []
    events = []
    out = tmp_path / "models" / "m.safetensors"
    run = prepare_run(small_plan(folder_data, out), host, progress=lambda s, d, t: stages.append((s, d, t)),
                      listener=events.append)
    assert isinstance(run, PreparedRun) and isinstance(run, Trainer)
    assert run.warnings == [] and run.val_sampler is not None and run.device_description.startswith("CPU")
    assert run.train_dataset.num_classes == 8 and run.val_dataset.num_classes == 5
    assert run.config.steps == 6 and run.config.log_every == 1 and run.config.val_every == 3
    assert run.algorithm.hparams["lr"] == 0.002 and run.train_dataset.image_size == 28
    assert {"loading folder train", "loading folder val", "building the model"} <= {s for s, _, _ in stages}
    result = run.run()
    assert result.status == "completed" and out.exists()
    assert sum(isinstance(e, StepEvent) for e in events) == 6
    meta = read_metadata(out)
    assert meta["dataset"]["name"] == "folder" and meta["dataset"]["ways"] == 4
    loaded = load_model(out, host)
    assert loaded.algorithm.name == "protonet" and loaded.metadata["image_size"] == 28


def test_missing_validation_split_means_no_validation_with_a_warning(host, tmp_path):
    root = make_class_tree(tmp_path / "flat", classes=5, per_class=4, size=16)  # no train/ or val/ inside
    run = prepare_run(small_plan(root, tmp_path / "m.safetensors", image_size=16, ways=3), host)
    assert run.val_sampler is None and run.val_dataset is None
    assert len(run.warnings) == 1 and "does not validate" in run.warnings[0]
    kept = prepare_run(small_plan(root, tmp_path / "m.safetensors", image_size=16, ways=3), host,
                       validate_on_training_classes=True)
    assert kept.val_sampler is not None and "memorisation" in kept.warnings[0]
    # A split the dataset does not declare, and no validation asked for.
    run = prepare_run(small_plan(root, tmp_path / "m.safetensors", image_size=16, ways=3, val_split="holdout"), host)
    assert run.val_sampler is None and "no 'holdout' split" in run.warnings[0]
    run = prepare_run(small_plan(root, tmp_path / "m.safetensors", image_size=16, ways=3, val_split=None), host)
    assert run.val_sampler is None and run.warnings == []


def test_dataset_errors_are_clear(host, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_run(small_plan(tmp_path / "nowhere", tmp_path / "m.safetensors"), host)
    with pytest.raises(DatasetError, match="needs --root"):
        prepare_run(small_plan(None, tmp_path / "m.safetensors"), host)
    root = make_class_tree(tmp_path / "small", classes=3, per_class=2, size=16)
    with pytest.raises(DatasetError, match="need 5 classes"):
        prepare_run(small_plan(root, tmp_path / "m.safetensors", image_size=16, ways=5, val_split=None), host)
    (tmp_path / "broken.zip").write_text("not a zip")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        prepare_run(small_plan(tmp_path / "broken.zip", tmp_path / "m.safetensors"), host)


def test_bad_components_hyperparameters_and_options(host, folder_data, tmp_path):
    out = tmp_path / "m.safetensors"
    with pytest.raises(UnknownComponentError, match="no algorithm named 'nope'"):
        prepare_run(small_plan(folder_data, out, algorithm="nope"), host)
    with pytest.raises(UnknownComponentError, match="no backbone named"):
        prepare_run(small_plan(folder_data, out, backbone="nope"), host)
    with pytest.raises(ValueError, match="lr must be at least"):
        prepare_run(small_plan(folder_data, out, hparams={"lr": -1}), host)
    with pytest.raises(ValueError, match="no hyperparameter colour"):
        prepare_run(small_plan(folder_data, out, hparams={"colour": "blue"}), host)
    with pytest.raises(ValueError, match="channels must be one of"):
        prepare_run(small_plan(folder_data, out, options={"channels": 2}), host)
    with pytest.raises(ValueError, match="pretrained backbone"):
        prepare_run(small_plan(folder_data, out, freeze_backbone=True), host)
    with pytest.raises(ValueError, match="no output file"):
        prepare_run(small_plan(folder_data, None), host)
    run = prepare_run(small_plan(folder_data, out, options={"protocol": "lake", "channels": 1}), host)
    assert run.train_dataset.channels == 1
    assert any("option 'protocol' is not used" in w for w in run.warnings)


def test_cancelling_while_preparing_raises_run_cancelled(host, folder_data, tmp_path):
    control = Control()

    def progress(stage, done, total):
        if stage.startswith("loading"):
            control.cancel()

    with pytest.raises(RunCancelled):
        prepare_run(small_plan(folder_data, tmp_path / "m.safetensors"), host, progress=progress, control=control)
    assert not (tmp_path / "m.safetensors").exists()


def test_the_plan_is_copied_not_shared(host, folder_data, tmp_path):
    plan = small_plan(folder_data, tmp_path / "m.safetensors")
    run = prepare_run(plan, host)
    plan.hparams["lr"] = 0.5
    assert run.plan.hparams["lr"] == 0.002 and run.plan is not plan


def test_a_frozen_backbone_run_trains_on_precomputed_features(host, seeded_conv4, tmp_path):
    from conftest import make_class_tree
    from metastudio.app.runs import TrainingPlan, prepare_run

    root = make_class_tree(tmp_path / "d", classes=6, per_class=5, size=20)
    stages = []
    plan = TrainingPlan(algorithm="protonet", backbone="seeded-conv4", dataset="folder", root=str(root),
                        val_split=None, ways=3, shots=1, queries=2, episodes=4, freeze_backbone=True, device="cpu",
                        out=str(tmp_path / "m.safetensors"))
    run = prepare_run(plan, host, progress=lambda stage, done, total: stages.append(stage))
    assert run.train_dataset.is_features and run.train_dataset.images.shape[1] == 64
    assert run.algorithm.image_size == 28
    assert any("seeded-conv4 features (train)" in s for s in stages)


# -- feature transforms: the mean is fitted before training on a frozen backbone ---------------------

def test_prepare_run_fits_the_feature_mean_on_the_frozen_training_features(host, seeded_conv4, tmp_path):
    import torch.nn.functional as F

    root = make_class_tree(tmp_path / "d", classes=6, per_class=5, size=20)
    stages = []
    plan = TrainingPlan(algorithm="matchingnet", backbone="seeded-conv4", dataset="folder", root=str(root),
                        val_split=None, ways=3, shots=1, queries=2, episodes=2, freeze_backbone=True, device="cpu",
                        hparams={"feature_transform": "power-cl2n"}, out=str(tmp_path / "m.safetensors"))
    run = prepare_run(plan, host, progress=lambda stage, done, total: stages.append((stage, done, total)))
    rows = run.train_dataset.images.float()  # the precomputed backbone features of the training split
    assert run.train_dataset.is_features and rows.shape == (30, 64)
    before = F.normalize(rows.sign() * rows.abs().sqrt(), dim=1)  # power step, before centring
    assert torch.allclose(run.algorithm.feature_mean, before.mean(0), atol=1e-6)
    fit = [s for s in stages if s[0].startswith("feature mean (power-cl2n)")]
    assert fit and fit[-1][1:] == (30, 30), stages
    names = [s[0] for s in stages]
    assert names.index(fit[0][0]) > max(i for i, n in enumerate(names) if "features (train)" in n)
    assert run.run().status == "completed"
    loaded = load_model(tmp_path / "m.safetensors", host).algorithm
    assert torch.equal(loaded.feature_mean, run.algorithm.feature_mean)
    # No transform: no mean, no stage.
    stages.clear()
    plain = prepare_run(TrainingPlan.from_dict({**plan.to_dict(), "hparams": {}}), host,
                        progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert not hasattr(plain.algorithm, "feature_mean") and not any("feature mean" in s[0] for s in stages)


def test_a_transform_with_a_trainable_backbone_is_refused_before_loading(host, tmp_path):
    plan = small_plan(tmp_path / "nowhere", tmp_path / "m.safetensors", algorithm="siamese",
                      hparams={"feature_transform": "cl2n"})
    # The data does not exist: the transform is refused first, before anything is loaded.
    with pytest.raises(ValueError, match="feature_transform=cl2n needs a frozen pretrained backbone"):
        prepare_run(plan, host)
    with pytest.raises(DatasetError):
        prepare_run(small_plan(tmp_path / "nowhere", tmp_path / "m.safetensors", algorithm="siamese"), host)


# -- validation on held-out training classes ------------------------------------------------------

def test_holdout_classes_are_seeded_disjoint_and_keep_rotations_together():
    from metastudio.app.runs import holdout_classes

    names = [f"c{i:02d}" for i in range(20)]
    train, held = holdout_classes(names, 5, seed=3)
    assert len(held) == 5 and len(train) == 15 and sorted(train + held) == list(range(20))
    assert train == sorted(train) and held == sorted(held)
    assert holdout_classes(names, 5, seed=3) == (train, held)
    assert any(holdout_classes(names, 5, seed=s)[1] != held for s in range(4, 8)), "the seed chooses"
    rotated = [f"a/{c}/rot{r:03d}" for r in (0, 90, 180, 270) for c in ("x", "y", "z", "w")]
    train, held = holdout_classes(rotated, 1, seed=0)
    assert len(held) == 4 and len({rotated[i].rsplit("/", 1)[0] for i in held}) == 1
    assert not {rotated[i].rsplit("/", 1)[0] for i in held} & {rotated[i].rsplit("/", 1)[0] for i in train}
    for bad in (0, 4):
        with pytest.raises(ValueError, match="val_holdout must be between 1 and 3"):
            holdout_classes(rotated, bad, seed=0)


def test_val_holdout_round_trips_and_is_validated():
    plan = TrainingPlan(val_holdout=16, val_split=None)
    again = TrainingPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.val_holdout == 16 and again == plan
    assert TrainingPlan.from_dict({}).val_holdout == 0
    assert TrainingPlan.from_dict({"val_holdout": 4.0}).val_holdout == 4
    for bad, message in ((-1, "val_holdout must be at least 0"), ("some", "val_holdout must be a whole number"),
                         (True, "val_holdout must be a whole number")):
        with pytest.raises(ValueError, match=message):
            TrainingPlan.from_dict({"val_holdout": bad})


def test_a_run_validates_on_held_out_training_classes_from_step_0(host, folder_data, tmp_path):
    out = tmp_path / "m.safetensors"
    events = []
    run = prepare_run(small_plan(folder_data, out, val_holdout=3, ways=3, seed=5), host, listener=events.append)
    train, val = run.train_dataset, run.val_dataset
    assert train.num_classes == 5 and val.num_classes == 3
    assert not set(train.class_names) & set(val.class_names)
    assert sorted(train.class_names + val.class_names) == [f"class{c:02d}" for c in range(8)]
    assert val.name == f"{train.name} held-out classes" and len(val) == 3 * 6
    assert run.warnings == [] and run.val_sampler is not None and run.config.validate_before_training
    again = prepare_run(small_plan(folder_data, out, val_holdout=3, ways=3, seed=5), host)
    assert again.val_dataset.class_names == val.class_names, "the plan's seed chooses the classes"
    # Another val_split than the default, set as well: it is not used, and the run says so.
    warned = prepare_run(small_plan(folder_data, out, val_holdout=3, ways=3, val_split="test"), host)
    assert any("'test' split is not used" in w and "val_holdout" in w for w in warned.warnings)
    result = run.run()
    assert result.status == "completed"
    vals = [e for e in events if type(e).__name__ == "ValidationEvent"]
    assert [e.step for e in vals] == [0, 3, 6]
    assert result.history[0]["step"] == 0 and result.history[0]["loss"] is None
    assert result.history[0]["val_accuracy"] is not None
    meta = read_metadata(out)
    assert meta["dataset"]["val_holdout"] == 3
    with pytest.raises(ValueError, match="fewer than the 3 ways of a validation episode"):
        prepare_run(small_plan(folder_data, out, val_holdout=2, ways=3), host)
    with pytest.raises(ValueError, match="leaves 2 training classes, fewer than the 3 ways"):
        prepare_run(small_plan(folder_data, out, val_holdout=6, ways=3), host)


def test_the_untrained_model_stays_the_best_when_training_only_makes_it_worse(host, tmp_path, monkeypatch):
    """Validation before the first step: if no later validation beats it, the model file holds
    the untrained weights (step 0)."""
    from metastudio.engine import trainer as trainer_module
    from metastudio.engine.checkpoint import read_metadata as meta_of
    from metastudio.data.episodes import EpisodeSampler
    from metastudio.engine.evaluator import EvalResult
    from metastudio.engine.trainer import TrainConfig
    from metastudio.plugins.testkit import synthetic_dataset

    falling = iter([80.0, 70.0, 60.0])
    monkeypatch.setattr(trainer_module, "evaluate",
                        lambda *a, **k: EvalResult(next(falling), 1.0, 2, 3, 1, 1, [0.5, 0.5]))
    torch.manual_seed(0)
    cls, spec = host.algorithm("protonet"), host.backbone("conv4")
    algo = cls(spec.build(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams={"lr": 0.01})
    untrained = {k: v.clone() for k, v in algo.state_dict().items()}
    ds = synthetic_dataset(classes=8, per_class=6)
    out = tmp_path / "m.safetensors"
    config = TrainConfig(steps=4, val_every=2, val_episodes=2, log_every=1, validate_before_training=True)
    result = Trainer(algo, EpisodeSampler(ds, 3, 1, 2), config, out, val_sampler=EpisodeSampler(ds, 3, 1, 1)).run()
    assert result.best_accuracy == 80.0 and [h["step"] for h in result.history] == [0, 2, 4]
    assert meta_of(out)["trained_steps"] == 0
    saved = load_model(out, host).algorithm.state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in algo.state_dict().items()), "training changed it"
    for k, v in saved.items():
        assert torch.equal(v, untrained[k]), k


@pytest.mark.parametrize("precision, cpu_bf16", [("bf16", True), ("auto", False), ("fp32", False)])
def test_bf16_precision_runs_the_network_in_bfloat16_on_the_cpu_only_when_asked(host, folder_data, tmp_path,
                                                                                   precision, cpu_bf16):
    run = prepare_run(small_plan(folder_data, tmp_path / "m.safetensors", precision=precision), host)
    seen = []
    conv = next(m for m in run.algorithm.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    result = run.run()
    assert result.status == "completed"
    assert seen and set(seen) == {torch.bfloat16 if cpu_bf16 else torch.float32}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history if h.get("loss") is not None)
    loaded = load_model(tmp_path / "m.safetensors", host).algorithm
    assert all(p.dtype == torch.float32 for p in loaded.parameters()), "weights stay float32"


def test_a_run_can_start_from_a_saved_models_weights(host, folder_data, tmp_path):
    first = tmp_path / "first.safetensors"
    assert prepare_run(small_plan(folder_data, first, episodes=3, val_every=3), host).run().status == "completed"
    saved = load_model(first, host).algorithm.state_dict()
    fresh = prepare_run(small_plan(folder_data, tmp_path / "fresh.safetensors", seed=5), host).algorithm.state_dict()
    run = prepare_run(small_plan(folder_data, tmp_path / "second.safetensors", seed=5, ways=3, init=str(first)), host)
    started = run.algorithm.state_dict()
    assert started.keys() == saved.keys()
    assert all(torch.equal(started[k], saved[k]) for k in saved)
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)  # a different seed would start elsewhere
    assert run.plan.init == str(first) and TrainingPlan.from_dict(run.plan.to_dict()).init == str(first)
    assert run.run().status == "completed"

    with pytest.raises(ValueError, match="it is a protonet model on conv4, and this run trains matchingnet"):
        prepare_run(small_plan(folder_data, tmp_path / "m.safetensors", algorithm="matchingnet", init=str(first)), host)
    with pytest.raises(ValueError, match="cannot start from"):
        prepare_run(small_plan(folder_data, tmp_path / "m.safetensors", init=str(tmp_path / "missing.safetensors")), host)
    with pytest.raises(ValueError, match="do not fit this run's model"):
        prepare_run(small_plan(folder_data, tmp_path / "m.safetensors", options={"channels": 1}, init=str(first)), host)


def test_a_model_started_from_another_says_so_and_keeps_saying_so_after_resume(host, folder_data, tmp_path):
    import hashlib

    first = tmp_path / "first.safetensors"
    assert prepare_run(small_plan(folder_data, first, episodes=3, val_every=3), host).run().status == "completed"
    first_meta = read_metadata(first)

    control = Control()

    def stop_after_two(event):
        if isinstance(event, StepEvent) and event.step == 2:
            control.cancel()

    out = tmp_path / "second.safetensors"
    run = prepare_run(small_plan(folder_data, out, seed=5, episodes=6, val_every=100, init=str(first)), host,
                      control=control, listener=stop_after_two)
    assert run.run().status == "cancelled"
    expected = {"file": "first.safetensors", "sha256": hashlib.sha256(first.read_bytes()).hexdigest(),
                "trained_steps": first_meta["trained_steps"], "dataset": first_meta["dataset"]}
    assert read_metadata(out)["dataset"]["init"] == expected

    # Resumed without --init (the weights come from the resume checkpoint): the record stays.
    resumed = prepare_run(small_plan(folder_data, out, seed=5, episodes=6, val_every=100), host)
    assert "init" not in resumed.dataset_info
    assert resumed.run(resume=True).status == "completed"
    assert read_metadata(out)["dataset"]["init"] == expected
    assert read_metadata(out)["trained_steps"] == 6
    # A model trained from scratch has no such record.
    assert "init" not in first_meta["dataset"]


@pytest.mark.parametrize("algorithm", ["mann", "metanet"])
def test_more_ways_than_the_label_positions_are_refused_before_any_data_loads(host, tmp_path, algorithm):
    missing = tmp_path / "no-such-folder"  # never read: the plan is refused first
    for changes, what in ((dict(ways=6), "ways is 6"), (dict(ways=3, val_ways=8), "validation ways is 8")):
        plan = small_plan(missing, tmp_path / "m.safetensors", algorithm=algorithm, hparams={"max_ways": 5}, **changes)
        with pytest.raises(ValueError, match=f"at most 5 classes apart .*{what}.*raise max_ways"):
            prepare_run(plan, host)
    # validation ways do not count where nothing is validated; within the limit the data is read
    plan = small_plan(missing, tmp_path / "m.safetensors", algorithm=algorithm, hparams={"max_ways": 5}, ways=5,
                      val_ways=8, val_split=None)
    with pytest.raises(DatasetError):
        prepare_run(plan, host)
    assert host.algorithm("protonet").ways_limit({}) is None
