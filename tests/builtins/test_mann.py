"""Memory-Augmented Neural Networks: memory reads and writes, label delay, learning, the two protocols, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metastudio_builtins.backbones.networks import Conv4
from metastudio.data.datasets import FewShotDataset
from metastudio.data.episodes import EpisodeSampler
from metastudio.plugins.testkit import check_algorithm, synthetic_dataset
from metastudio_builtins.algorithms.mann import MANN, STATE_FIELDS, MemoryState, least_used

from conftest import assert_round_trip
from helpers import assert_adapts_and_reads_each_query_alone, assert_standalone_reproduces

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace.*` is deprecated:FutureWarning"), pytest.mark.usefixtures("one_thread")]

SMALL = {"controller": 32, "slots": 16, "slot_size": 8, "reads": 2, "max_ways": 5}



def build(**hparams) -> MANN:
    torch.manual_seed(0)
    return MANN(Conv4(1, 28), backbone_name="conv4", image_size=28, channels=1, hparams={**SMALL, **hparams})


def test_least_used_gives_each_head_its_own_least_used_row():
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.0], [1.0, 2.0, 0.3, 0.4]])
    assert least_used(usage, 2).tolist() == [[[0, 0, 0, 1], [0, 1, 0, 0]], [[0, 0, 1, 0], [0, 0, 0, 1]]]


def test_a_written_key_is_read_back_and_lru_writes_go_to_unused_rows():
    algo = build()
    core = algo.core
    state = core.initial_state(1)
    # Make the controller emit a known key and a gate that writes to the least used rows (alpha -> 0).
    with torch.no_grad():
        core.keys.weight.zero_()
        key = torch.linspace(-1, 1, 2 * 8)
        core.keys.bias.copy_(torch.atanh(key * 0.9))
        core.gates.weight.zero_()
        core.gates.bias.fill_(-30.0)
    state.usage = torch.tensor([[0.3] * 4 + [0.0, 0.1] + [0.5] * 10])  # rows 4 and 5 are the least used
    with torch.no_grad():
        _, after = core.step(state, torch.zeros(1, 64))
    written = (after.memory - state.memory).abs().sum(2)[0]
    assert set(torch.nonzero(written > 1e-3).flatten().tolist()) == {4, 5}
    keys = (key * 0.9).reshape(2, 8)
    # each head's key was written into one of the two least used rows, and reading finds it
    for head in range(2):
        best = after.read_weights[0, head].argmax()
        assert int(best) in (4, 5)
        assert F.cosine_similarity(after.memory[0, best], keys[head], dim=0) > 0.99
        assert F.cosine_similarity(after.reads[0, head], keys[head], dim=0) > 0.5
    # usage grew where it was read and written, and decayed elsewhere
    assert after.usage[0, 0] == pytest.approx(0.95 * 0.3 + float(after.read_weights[0, :, 0].sum()), abs=1e-5)
    assert after.usage[0, 4] > 0.9


def test_labels_arrive_one_step_late():
    algo = build().eval()
    features = torch.randn(1, 3, 64)
    labels = torch.tensor([[2, 0, 4]])
    seen = []
    original = algo.core.step

    def spy(state, f):
        seen.append(state.label.argmax(1).item() if state.label.sum() > 0 else None)
        return original(state, f)

    algo.core.step = spy
    with torch.no_grad():
        _, final = algo.run_sequences(features, labels)
    assert seen == [None, 2, 0]  # step t sees y_{t-1}; nothing before the first
    assert final.label.argmax(1).item() == 4  # the state after the sequence holds the last label


def test_meta_training_lowers_the_loss():
    algo = build(lr=1e-2)
    ds = synthetic_dataset(classes=12, per_class=8)
    sampler = EpisodeSampler(ds, 3, 1, 3, seed=0)
    algo.configure_training(40)
    algo.train()
    losses = [algo.meta_train_step([sampler.episode(2 * i), sampler.episode(2 * i + 1)])["loss"] for i in range(40)]
    assert sum(losses[-8:]) < sum(losses[:8])


def test_sequence_protocol_counts_instances():
    algo = build().eval()
    ds = synthetic_dataset(classes=12, per_class=12)
    eps = [EpisodeSampler(ds, 5, 1, 9, seed=0).episode(i) for i in range(2)]
    correct, counted = algo.sequence_accuracy(eps, instances=10, generator=torch.Generator().manual_seed(0))
    assert counted.tolist() == [10.0] * 10  # 2 sequences x 5 classes, 10 instances each
    assert ((correct >= 0) & (correct <= counted)).all()


@pytest.mark.parametrize("variant", [{}, {"feature_keys": True}], ids=["paper", "feature-keys"])
def test_adapt_reads_queries_independently_round_trips_and_exports(host, tmp_path, variant):
    algo = build(**variant).eval()
    ep = EpisodeSampler(synthetic_dataset(classes=8, per_class=6), 3, 2, 3, seed=0).episode(0)
    assert MANN.interleave(ep.support_labels).tolist() == [0, 2, 4, 1, 3, 5]
    probs = assert_adapts_and_reads_each_query_alone(host, tmp_path, algo, ep, one=4)
    learner = algo.adapt(ep.support)
    assert set(learner.learner_state()) == set(STATE_FIELDS), "saved under the state's field names"
    assert torch.allclose(assert_standalone_reproduces(learner, algo, ep.query_images), probs, atol=1e-5)
    with pytest.raises(ValueError, match="at most 5 classes"):
        wide = EpisodeSampler(synthetic_dataset(classes=8, per_class=3), 6, 1, 1, seed=0).episode(0)
        algo.adapt(wide.support)
    with pytest.raises(ValueError, match="5 label positions; an episode has 6 classes"):
        algo.meta_train_step([wide])


def test_passes_the_algorithm_contract(host, tmp_path):
    check_algorithm(MANN, host=host, tmp_path=tmp_path, hparams={**SMALL, "lr": 1e-2})


def test_memory_state_expands_without_copying():
    algo = build()
    state = algo.core.initial_state(1)
    wide = state.expand(7)
    assert isinstance(wide, MemoryState) and wide.memory.shape[0] == 7
    assert wide.memory.data_ptr() == state.memory.data_ptr()


def test_on_the_frozen_conv4_omniglot_backbone_it_saves_without_the_backbone_and_round_trips(host, tmp_path):
    """The recipe of mann-omniglot: the memory network on conv4-omniglot's frozen features. The model
    file leaves the backbone out (it is rebuilt from the shipped weights) and predicts the same after loading."""
    torch.manual_seed(0)
    algo = MANN(host.backbone("conv4-omniglot").build(1, 28), backbone_name="conv4-omniglot", image_size=28, channels=1,
                hparams=SMALL, freeze_backbone=True).eval()
    assert not any(k.startswith("backbone.") for k in algo.state_dict())
    ep = EpisodeSampler(synthetic_dataset(classes=8, per_class=6), 3, 2, 3, seed=0).episode(0)
    assert_round_trip(host, tmp_path, algo, ep)


def test_grad_clip_bounds_the_step_and_zero_leaves_it_alone():
    def first_step(clip: float) -> torch.Tensor:
        algo = build(lr=1e-3, grad_clip=clip, lr_schedule="constant")
        algo.configure_training(1)
        algo.train()
        eps = [EpisodeSampler(synthetic_dataset(classes=12, per_class=8), 3, 1, 3, seed=0).episode(0)]
        torch.manual_seed(1)
        algo.meta_train_step(eps)
        grads = [p.grad for p in algo.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    unclipped = first_step(0.0)
    assert unclipped > 1e-3
    clipped = first_step(float(unclipped) / 10)
    assert torch.isclose(clipped, unclipped / 10, rtol=1e-3)


def test_key_strength_sharpens_reads_and_the_papers_reads_are_flat():
    """The read after writing a key: with a strength of about 11 the row holding the key takes most of
    the read; with the paper's plain cosine softmax (key_strength=false) it gets little more than the rest."""
    def read_weight_on_written_row(key_strength: bool) -> float:
        algo = build(key_strength=key_strength, slots=64)
        core = algo.core
        state = core.initial_state(1)
        with torch.no_grad():
            core.keys.weight.zero_()
            core.keys.bias.copy_(torch.atanh(torch.linspace(-0.9, 0.9, 2 * 8)))
            core.gates.weight.zero_()
            core.gates.bias.fill_(-30.0)  # write into the least used rows
            if key_strength:
                core.strengths.weight.zero_()
                core.strengths.bias.fill_(10.0)  # beta = 1 + softplus(10), about 11
            _, after = core.step(state, torch.zeros(1, 64))
        return float(after.read_weights[0, 0].max())

    assert read_weight_on_written_row(True) > 0.5
    assert read_weight_on_written_row(False) < 0.1
    assert "strengths.weight" not in build(key_strength=False).core.state_dict()


def test_write_keys_store_a_second_key_apart_from_the_one_read_with():
    """With write_keys each head writes its write key (into the least used row) and reads with its
    read key; the paper's heads (write_keys=false) write the key they read with."""
    def one_step(write_keys: bool):
        algo = build(write_keys=write_keys)
        core = algo.core
        state = core.initial_state(1)
        read_key = torch.linspace(-0.9, 0.9, 2 * 8)
        write_key = torch.linspace(0.9, -0.9, 2 * 8).roll(3)
        with torch.no_grad():
            core.keys.weight.zero_()
            core.keys.bias.copy_(torch.atanh(read_key))
            core.gates.weight.zero_()
            core.gates.bias.fill_(-30.0)  # write into the least used rows
            if write_keys:
                core.write_keys.weight.zero_()
                core.write_keys.bias.copy_(torch.atanh(write_key))
            _, after = core.step(state, torch.zeros(1, 64))
        rows = (after.memory - state.memory)[0]
        written = rows[rows.abs().sum(1) > 1e-3]
        return written, read_key.reshape(2, 8), write_key.reshape(2, 8)

    written, read_key, write_key = one_step(True)
    assert len(written) == 2
    for head in range(2):  # each head's write key is in a row of its own; no row holds a read key
        assert max(F.cosine_similarity(row, write_key[head], dim=0) for row in written) > 0.999
        assert max(F.cosine_similarity(row, read_key[head], dim=0) for row in written) < 0.99
    written, read_key, _ = one_step(False)
    for head in range(2):
        assert max(F.cosine_similarity(row, read_key[head], dim=0) for row in written) > 0.999
    assert "write_keys.weight" in build(write_keys=True).core.state_dict()
    assert "write_keys.weight" not in build().core.state_dict()


def test_feature_keys_write_the_previous_image_and_read_with_this_one():
    """With feature_keys the keys' feature part is one projection of the image features: a head
    writes under the previous image's features (its label has just arrived) and reads with this
    image's, so showing an image again finds the row written when its label came."""
    algo = build(feature_keys=True, key_strength=False)
    core = algo.core
    assert core.write_keys is not None and "feature_keys.weight" in core.state_dict()
    torch.manual_seed(1)
    a, b = torch.randn(1, 64), torch.randn(1, 64)
    with torch.no_grad():
        for layer in (core.keys, core.write_keys):  # keys from the features alone
            layer.weight.zero_()
            layer.bias.zero_()
        core.gates.weight.zero_()
        core.gates.bias.fill_(-30.0)  # write into the least used rows
        state = core.initial_state(1)
        _, s1 = core.step(state, a)  # sees a; writes under the (zero) previous features
        assert torch.equal(s1.previous, a)
        _, s2 = core.step(s1, b)  # sees b; writes under a's features
        written = (s2.memory - s1.memory)[0]
        rows = written.abs().sum(1) > 1e-3
        a_key = torch.tanh(core.feature_keys(a)).reshape(2, 8)
        b_key = torch.tanh(core.feature_keys(b)).reshape(2, 8)
        for head in range(2):
            assert max(F.cosine_similarity(r, a_key[head], dim=0) for r in written[rows]) > 0.999
        # reading with a's features again: each head's best row is one written under a
        _, s3 = core.step(s2, a)
        for head in range(2):
            best = s3.memory[0, s3.read_weights[0, head].argmax()]
            assert F.cosine_similarity(best, a_key[head], dim=0) > F.cosine_similarity(best, b_key[head], dim=0)


def feature_rows(classes: int, per_class: int, seed: int, dim: int = 64, noise: float = 0.5) -> FewShotDataset:
    """A dataset of feature rows (as a frozen backbone's are stored): a random prototype per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(classes, dim, generator=g).repeat_interleave(per_class, 0)
    rows = rows + noise * torch.randn(classes * per_class, dim, generator=g)
    return FewShotDataset(images=rows, class_names=[f"c{i}" for i in range(classes)], class_sizes=[per_class] * classes)


def test_with_feature_keys_it_learns_to_recall_labels_within_a_few_hundred_steps(host):
    """On features that tell the classes apart the feature-keys variant learns the binding: the 2nd
    instance of a class (new classes: the test rows' own prototypes), at chance before training, is
    labelled right about half the time after 200 steps of 3-way sequences (10 s on one thread)."""
    torch.manual_seed(0)
    algo = MANN(host.backbone("conv4-omniglot").build(1, 28), backbone_name="conv4-omniglot", image_size=28, channels=1,
                hparams={"controller": 32, "slots": 32, "slot_size": 16, "reads": 2, "max_ways": 5,
                         "feature_keys": True, "lr": 1e-2}, freeze_backbone=True)
    sampler = EpisodeSampler(feature_rows(40, 10, seed=0), 3, 1, 5, seed=0)
    held = [EpisodeSampler(feature_rows(40, 10, seed=1), 3, 1, 3, seed=1).episode(i) for i in range(40)]

    def second_instance() -> float:
        correct, counted = algo.sequence_accuracy(held, instances=2, generator=torch.Generator().manual_seed(0))
        return float(correct[1] / counted[1])

    before = second_instance()
    algo.configure_training(200)
    algo.train()
    for i in range(200):
        algo.meta_train_step([sampler.episode(16 * i + j) for j in range(16)])
    after = second_instance()
    assert before < 0.3 and after > 0.45, (before, after)
