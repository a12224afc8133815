"""Hyperparameter roles: which settings only meta-training uses (``training``), which the trained
weights depend on (``architecture``) and which may change when a trained model is used
(``adaptation``); and that a trained model refuses other values of the first two."""

from __future__ import annotations

import pytest

from metastudio.algorithms.hyperparameters import (
    ROLES,
    TRAINING_HYPERPARAMETERS,
    HyperParameter,
    with_changes,
)
from metastudio.errors import FixedHyperParameterError, MetaStudioError

#: The role of every built-in algorithm's hyperparameters (the shared optimiser ones aside):
#: a new hyperparameter must be added here, with its role decided from the code.
EXPECTED = {
    "protonet": {"distance": "adaptation", "temperature": "adaptation", "feature_transform": "architecture"},
    "matchingnet": {"fce": "architecture", "fce_steps": "architecture", "temperature": "adaptation",
                    "projection": "architecture", "learn_temperature": "architecture",
                    "feature_transform": "architecture"},
    "siamese": {"projection": "architecture", "pairs": "training", "distort": "training", "distort_prob": "training",
                "feature_transform": "architecture"},
    "relationnet": {"class_embedding": "adaptation", "relation_channels": "architecture",
                    "relation_hidden": "architecture", "mlp_hidden": "architecture", "probabilities": "adaptation",
                    "temperature": "adaptation", "pair_input": "architecture", "feature_transform": "architecture",
                    "distort": "training", "distort_prob": "training"},
    "maml": {"inner_lr": "adaptation", "adapt_steps": "adaptation", "batch_norm": "adaptation",
             "task_batching": "training", "inner_steps": "training", "first_order": "training",
             "feature_transform": "architecture", "head_hidden": "architecture"},
    "reptile": {"inner_lr": "adaptation", "adapt_steps": "adaptation", "batch_norm": "adaptation",
                "task_batching": "training", "inner_steps": "training", "inner_batch": "training",
                "train_on": "training", "feature_transform": "architecture", "head_hidden": "architecture"},
    # The LSTM meta-learner learns its step sizes: inner_lr only starts its input gate.
    "metalstm": {"inner_lr": "training", "adapt_steps": "adaptation", "batch_norm": "adaptation",
                 "task_batching": "training", "inner_steps": "training", "hidden": "architecture",
                 "feature_transform": "architecture", "head_hidden": "architecture"},
    "mann": {"controller": "architecture", "slots": "architecture", "slot_size": "architecture",
             "reads": "architecture", "gamma": "adaptation", "max_ways": "architecture",
             "key_strength": "architecture", "write_keys": "architecture", "feature_keys": "architecture", "grad_clip": "training", "feature_transform": "architecture"},
    # Meta Networks always learn the attention temperature: the hyperparameter is its start.
    "metanet": {"hidden": "architecture", "key_dim": "architecture", "meta_hidden": "architecture",
                "max_ways": "architecture", "task_fast_weights": "adaptation", "margin": "adaptation",
                "temperature": "training", "feature_transform": "architecture"},
}
OPTIMISER = {"lr", "weight_decay", "lr_schedule", "lr_step"}


def test_role_defaults_to_adaptation_is_validated_and_described():
    h = HyperParameter("t", float, 1.0, "A temperature.", 0.1, 10.0)
    assert h.role == "adaptation" and h.describe()["role"] == "adaptation"
    assert HyperParameter("w", int, 8, "A width.", 1, 64, role="architecture").describe()["role"] == "architecture"
    with pytest.raises(ValueError, match="role must be one of training, architecture, adaptation, got 'shape'"):
        HyperParameter("w", int, 8, "A width.", role="shape")
    assert set(ROLES) == {"training", "architecture", "adaptation"}


def test_the_shared_optimiser_settings_are_training_and_with_changes_keeps_and_checks_roles():
    assert {h.name: h.role for h in TRAINING_HYPERPARAMETERS} == dict.fromkeys(OPTIMISER, "training")
    changed = with_changes(TRAINING_HYPERPARAMETERS, lr={"default": 1.0})
    assert [h.role for h in changed] == ["training"] * 4 and changed[0].default == 1.0
    assert with_changes(TRAINING_HYPERPARAMETERS, lr_step={"role": "adaptation"})[3].role == "adaptation"
    with pytest.raises(ValueError, match="role must be one of"):
        with_changes(TRAINING_HYPERPARAMETERS, lr={"role": "nope"})


def test_every_builtin_hyperparameter_has_the_role_its_code_gives_it(host):
    assert set(host.algorithms) >= set(EXPECTED)
    for name, expected in EXPECTED.items():
        cls = host.algorithm(name)
        roles = {h.name: h.role for h in cls.hyperparameters}
        assert all(role in ROLES for role in roles.values())
        assert {k: roles[k] for k in OPTIMISER} == dict.fromkeys(OPTIMISER, "training"), name
        assert {k: v for k, v in roles.items() if k not in OPTIMISER} == expected, name
        assert all(h["role"] == roles[h["name"]] for h in cls.describe()["hyperparameters"])


def test_adaptation_overrides_refuse_what_the_trained_model_fixed(host):
    siamese = host.algorithm("siamese")
    trained = siamese.resolve_hparams({"projection": 0})
    with pytest.raises(FixedHyperParameterError, match=r"projection is fixed by the trained model \(the trained "
                       r"weights depend on it\): it was trained with projection=0 and cannot be used with "
                       r"projection=64") as info:
        siamese.adaptation_overrides(trained, {"projection": 64})
    assert isinstance(info.value, ValueError) and isinstance(info.value, MetaStudioError)
    with pytest.raises(ValueError, match="pairs is fixed by the trained model .it is only used while meta-training"):
        siamese.adaptation_overrides(trained, {"pairs": "query-support"})
    with pytest.raises(ValueError, match="lr is fixed .* distort is fixed .*change them"):
        siamese.adaptation_overrides(trained, {"lr": 0.5, "distort": True})
    # the trained value itself changes nothing and is accepted (a project written by an older version)
    assert siamese.adaptation_overrides(trained, {"projection": 0, "pairs": "all"}) == {}
    # adaptation ones are validated and returned when they differ
    proto = host.algorithm("protonet")
    trained = proto.resolve_hparams({})
    assert proto.adaptation_overrides(trained, {"distance": "cosine", "temperature": 10.0}) == {"distance": "cosine"}
    with pytest.raises(ValueError, match="distance must be one of"):
        proto.adaptation_overrides(trained, {"distance": "manhattan"})
    with pytest.raises(ValueError, match="has no hyperparameter nope"):
        proto.adaptation_overrides(trained, {"nope": 1})
    with pytest.raises(FixedHyperParameterError, match="feature_transform is fixed"):
        proto.adaptation_overrides(trained, {"feature_transform": "cl2n"})


def test_a_session_refuses_an_architecture_override_of_a_shipped_model(host):
    from metastudio.app.catalogue import resolve_model
    from metastudio.app.session import ClassifierSession

    session = ClassifierSession(host, "cpu")
    path = resolve_model("siamese-omniglot")
    with pytest.raises(FixedHyperParameterError, match="projection is fixed by the trained model"):
        session.load(path, {"projection": 512})
    with pytest.raises(FixedHyperParameterError, match="distort is fixed by the trained model"):
        session.load(path, {"distort": True})
    info = session.load(path, {"projection": 0})  # its own value: fine
    assert info.hyperparameters["projection"] == 0
    assert {h["name"]: h["role"] for h in info.hyperparameter_specs}["pairs"] == "training"
    matching = session.load(resolve_model("matchingnet-omniglot"), {"temperature": 5.0})
    assert matching.hyperparameters["temperature"] == 5.0
