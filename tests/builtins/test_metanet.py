"""Meta Networks: layer augmentation, per-example fast weights from gradients, learning, adaptation, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metastudio_builtins.backbones.networks import Conv4
from metastudio.data.episodes import EpisodeSampler
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.metanet import MetaNetworks, augmented_linear, preprocess

from helpers import assert_adapts_and_reads_each_query_alone, assert_standalone_reproduces, meta_train_on_tiny_episodes

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]

SMALL = {"hidden": 16, "key_dim": 16, "max_ways": 5}



def build(**hparams) -> MetaNetworks:
    torch.manual_seed(0)
    return MetaNetworks(Conv4(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams={**SMALL, **hparams})


def episode(index=0, ways=3, shots=2, queries=3):
    ds = synthetic_dataset(classes=10, per_class=shots + queries + 1)
    return EpisodeSampler(ds, ways, shots, queries, seed=0).episode(index)


def test_layer_augmentation_adds_the_slow_and_fast_branches():
    x = torch.randn(4, 3)
    slow = {"l.weight": torch.randn(2, 3), "l.bias": torch.randn(2)}
    fast = {"l.weight": torch.randn(2, 3), "l.bias": torch.randn(2)}
    expected = F.relu(x @ slow["l.weight"].t() + slow["l.bias"]) + F.relu(x @ fast["l.weight"].t() + fast["l.bias"])
    assert torch.allclose(augmented_linear(x, slow, fast, "l.", F.relu), expected, atol=1e-6)
    per_row = {k: v.unsqueeze(0).expand(4, *v.shape) for k, v in fast.items()}
    assert torch.allclose(augmented_linear(x, slow, per_row, "l.", F.relu), expected, atol=1e-6)
    assert torch.allclose(augmented_linear(x, slow, None, "l.", F.relu), F.relu(x @ slow["l.weight"].t() + slow["l.bias"]))


def test_example_fast_weights_come_from_each_example_s_own_gradient():
    algo = build()
    features, labels = torch.randn(4, 64), torch.tensor([0, 1, 2, 1])
    fast = algo.example_fast_weights(features, labels, 3)
    for i in range(4):
        algo.base.zero_grad()
        loss = F.cross_entropy(algo.base_logits(features[i : i + 1], None, 3), labels[i : i + 1])
        loss.backward()
        for name, param in algo.base.named_parameters():
            expected = algo.meta_base.net(preprocess(param.grad)).squeeze(-1) + algo.meta_base.scale * param.grad
            # atol: below e^-10 the preprocessing multiplies a gradient by e^10 (22026), and its rounding too
            assert torch.allclose(fast[name][i], expected, atol=1e-4), name


def test_meta_training_lowers_the_loss_and_learns():
    algo = build(lr=3e-3)
    # 30 test episodes (270 queries): 10 were too few to judge (0.49 on one machine, 0.65 over 30)
    losses, before, accuracy = meta_train_on_tiny_episodes(algo, 80, test_episodes=30)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert accuracy > 0.55 and accuracy > before + 0.15  # chance is 1/3
    # every part learned: both meta learners and the attention scale received gradients
    assert algo.meta_base.net[0].weight.grad is not None and algo.meta_rep.net[0].weight.grad is not None
    assert algo.log_temperature.grad is not None


@pytest.mark.parametrize("task_fast_weights", [True, False])
def test_adapt_predicts_each_query_alone_round_trips_and_exports(host, tmp_path, task_fast_weights):
    algo = build(task_fast_weights=task_fast_weights).eval()
    ep = episode()
    probs = assert_adapts_and_reads_each_query_alone(host, tmp_path, algo, ep, one=2)
    learner = algo.adapt(ep.support)
    names = set(learner.learner_state())
    assert {"keys", "example.fc.weight", "example.out.bias"} <= names
    assert ("task.fc.weight" in names) == task_fast_weights
    assert torch.allclose(assert_standalone_reproduces(learner, algo, ep.query_images), probs, atol=1e-5)
    wide = EpisodeSampler(synthetic_dataset(classes=8, per_class=3), 6, 1, 1, seed=0).episode(0)
    with pytest.raises(ValueError, match="at most 5 classes"):
        algo.adapt(wide.support)
    with pytest.raises(ValueError, match="5 label positions; an episode has 6 classes"):
        algo.meta_train_step([wide])


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(MetaNetworks, host=host, tmp_path=tmp_path, hparams={**SMALL, "lr": 3e-3})
    check_algorithm(MetaNetworks, host=host, tmp_path=tmp_path, hparams={**SMALL, "task_fast_weights": False})
