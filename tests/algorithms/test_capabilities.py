"""What an algorithm declares about itself (feature transforms, training distortions, the
adaptation-loss plot, frozen backbones) is checked when its class is defined, and the engine,
the test kit and the app act on the declaration, never on a hyperparameter's name."""

from __future__ import annotations

import warnings

import pytest
import torch

from metastudio.api import (
    DISTORT, DISTORT_PROB, FEATURE_TRANSFORM, TRAINING_HYPERPARAMETERS, Algorithm, FeatureTransformMixin,
    HyperParameter, check_algorithm,
)
from metastudio_builtins.backbones.networks import Conv4

from helpers import define_algorithm as define
from helpers import register_algorithm as _register


def test_a_feature_transform_hyperparameter_needs_the_mixin_and_in_front_of_algorithm():
    with pytest.raises(TypeError, match="algorithm 'no-mixin'.*does not inherit FeatureTransformMixin"):
        define("no-mixin", hyperparameters=TRAINING_HYPERPARAMETERS + (FEATURE_TRANSFORM,))
    with pytest.raises(TypeError, match="'mixin-behind'.*must come before Algorithm"):
        define("mixin-behind", Algorithm, FeatureTransformMixin,
               hyperparameters=TRAINING_HYPERPARAMETERS + (FEATURE_TRANSFORM,))
    with pytest.raises(TypeError, match="feature_mean_fitted must be one of 'before training', 'by the algorithm'"):
        define("odd-fit", FeatureTransformMixin, Algorithm, feature_mean_fitted="whenever",
               hyperparameters=TRAINING_HYPERPARAMETERS + (FEATURE_TRANSFORM,))
    cls = define("with-mixin", FeatureTransformMixin, Algorithm,
                 hyperparameters=TRAINING_HYPERPARAMETERS + (FEATURE_TRANSFORM,))
    algo = cls(Conv4(1), backbone_name="conv4", image_size=28, channels=1, hparams={"feature_transform": "cl2n"})
    assert hasattr(algo, "feature_mean")


def test_capabilities_must_be_booleans():
    with pytest.raises(TypeError, match="'not-bool'.*reports_adaptation_loss must be True or False, not 'yes'"):
        define("not-bool", reports_adaptation_loss="yes")


def _distorted(cls, hparams) -> bool:
    """Whether training_embed of ``cls`` in training mode differs from embed on the same images."""
    algo = cls(Conv4(1), backbone_name="conv4", image_size=28, channels=1, hparams=hparams)
    images = (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)
    algo.train()
    torch.manual_seed(0)
    with torch.no_grad():
        trained = algo.training_embed(images)
        plain = algo.embed(images)
    return not torch.allclose(trained, plain)


def test_training_distortions_follow_the_declaration_not_the_name():
    with pytest.raises(TypeError, match="distorts_training_images = True needs .*DISTORT and DISTORT_PROB.*distort_prob"):
        define("half-distort", distorts_training_images=True, hyperparameters=TRAINING_HYPERPARAMETERS + (DISTORT,))
    declared = define("distorting", distorts_training_images=True,
                      hyperparameters=TRAINING_HYPERPARAMETERS + (DISTORT, DISTORT_PROB))
    assert _distorted(declared, {"distort": True, "distort_prob": 1.0})
    assert not _distorted(declared, {"distort": False})
    # An algorithm's own hyperparameter that happens to be called distort means what it says.
    own = HyperParameter("distort", bool, False, "something of this algorithm's own", role="architecture")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mine = define("own-distort", distorts_training_images=False, hyperparameters=TRAINING_HYPERPARAMETERS + (own,))
    assert not _distorted(mine, {"distort": True})
    with pytest.raises(ValueError, match="frozen"):
        declared(Conv4(1), backbone_name="conv4", image_size=28, channels=1, hparams={"distort": True},
                 freeze_backbone=True)


def test_the_old_implicit_rules_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="'legacy-distort'.*declare distorts_training_images = True"):
        legacy = define("legacy-distort", hyperparameters=TRAINING_HYPERPARAMETERS + (DISTORT, DISTORT_PROB))
    assert legacy.distorts_training_images and _distorted(legacy, {"distort": True, "distort_prob": 1.0})
    with pytest.warns(DeprecationWarning, match="'legacy-steps'.*declare reports_adaptation_loss = True"):
        steps = define("legacy-steps", family="optimization", loss=True)
    assert steps.reports_adaptation_loss
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = define("declared-steps", family="optimization", reports_adaptation_loss=False)
    assert not quiet.reports_adaptation_loss


def test_an_algorithm_that_refuses_a_frozen_backbone_is_refused_before_loading_and_skipped_by_the_kit(tmp_path):
    cls = define("whole-network", supports_frozen_backbone=False)
    with pytest.raises(ValueError, match="Whole-Network does not work on a frozen backbone"):
        cls(Conv4(1), backbone_name="conv4", image_size=28, channels=1, freeze_backbone=True)
    report = check_algorithm(cls, tmp_path=tmp_path, steps=4, skip=("export", "onnx", "resume"))
    assert "declares supports_frozen_backbone = False" in report.skipped["frozen backbone"]


def test_the_kit_holds_an_algorithm_to_its_adaptation_loss_declaration(tmp_path):
    silent = define("silent-steps", family="optimization", reports_adaptation_loss=True)
    with pytest.raises(AssertionError, match="declares reports_adaptation_loss = True.*it reported none"):
        check_algorithm(silent, tmp_path=tmp_path, steps=4, skip=("export", "onnx", "resume", "frozen backbone"))
    talking = define("talking-steps", family="optimization", reports_adaptation_loss=True, loss=True)
    check_algorithm(talking, tmp_path=tmp_path, steps=4, skip=("export", "onnx", "resume", "frozen backbone"))


def test_a_frozen_backbone_run_of_an_algorithm_that_refuses_one_stops_before_any_data_loads(host, seeded_conv4,
                                                                                          tmp_path):
    from metastudio.app.runs import TrainingPlan, prepare_run

    _register(host, define("whole-net", supports_frozen_backbone=False))
    plan = TrainingPlan(algorithm="whole-net", backbone="seeded-conv4", dataset="folder", root=str(tmp_path / "none"),
                        freeze_backbone=True, out=str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="Whole-Net does not work on a frozen backbone.*--freeze-backbone"):
        prepare_run(plan, host)  # the folder does not exist: refused before it is looked at

