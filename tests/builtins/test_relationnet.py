"""Relation Networks: the conv4-maps backbone, the relation modules, probabilities, learning,
saving, export, and the frozen-backbone (vector) variant, on tiny synthetic episodes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metastudio_builtins.algorithms.relationnet as rn
from metastudio.engine.checkpoint import load_model, save_model
from metastudio.data.episodes import EpisodeSampler, SupportSet
from metastudio.plugins.testkit import check_algorithm, check_backbone, synthetic_dataset
from metastudio_builtins.algorithms.relationnet import (
    ConvRelation,
    MLPRelation,
    RelationNetworks,
    class_embeddings,
    relation_class_logits,
)

from helpers import adapt_and_predict, assert_standalone_reproduces


# Tiny tensors: one thread is faster than two that wait for each other on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def build(host, backbone: str = "conv4-maps", freeze: bool = False, **hparams) -> RelationNetworks:
    torch.manual_seed(0)
    return RelationNetworks(host.backbone(backbone).build(1, 28), backbone_name=backbone, image_size=28, channels=1,
                            hparams=hparams, freeze_backbone=freeze)


def episode(ways=3, shots=2, queries=3, seed=0, classes=8):
    return EpisodeSampler(synthetic_dataset(classes=classes, per_class=6), ways, shots, queries, seed=seed).episode(0)


# ------------------------------------------------------------------------------------------------
# the backbone


def test_conv4_maps_gives_feature_maps(host):
    spec = host.backbone("conv4-maps")
    net = check_backbone(spec, in_channels=1, image_size=28)
    assert net.feature_shape == (64, 7, 7) and net.out_features == 64 * 7 * 7
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 2
    assert [m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [(3, 3)] * 4
    net.eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        flat = net(x)
        maps = net.encoder(x)
    assert maps.shape == (2, 64, 7, 7) and torch.equal(flat.view(2, 64, 7, 7), maps)
    big = spec.build(3, 84)
    assert big.feature_shape == (64, 21, 21) and big.out_features == 64 * 21 * 21


# ------------------------------------------------------------------------------------------------
# the pieces


def test_class_embeddings_sum_and_mean_with_unequal_shots():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [9.0, 9.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2, 1])
    assert torch.equal(class_embeddings(feats, labels, 3, "sum"), torch.tensor([[4.0, 0.0], [0.0, 6.0], [9.0, 9.0]]))
    assert torch.equal(class_embeddings(feats, labels, 3, "mean"), torch.tensor([[2.0, 0.0], [0.0, 3.0], [9.0, 9.0]]))


def paper_conv_relation(rel: ConvRelation, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The relation module as the paper writes it, on explicitly concatenated (class, query) maps."""
    c, h, w = rel.feature_shape
    nq, ns = len(q), len(s)
    pairs = torch.cat([s.view(1, ns, c, h, w).expand(nq, -1, -1, -1, -1),
                       q.view(nq, 1, c, h, w).expand(-1, ns, -1, -1, -1)], dim=2).flatten(0, 1)  # [Q*N, 2C, H, W]
    x = rel.pool1(F.relu(rel.bn1(rel.conv1(pairs))))
    x = rel.block2(x)
    return rel.fc2(F.relu(rel.fc1(x.flatten(1)))).view(nq, ns)


@pytest.mark.parametrize("shape", [(4, 7, 7), (3, 5, 5), (2, 1, 1)])
def test_the_conv_relation_module_is_the_papers_on_concatenated_pairs(shape):
    """Splitting conv1, folding bn1's statistics into each side and pooling before the ReLU
    give the paper's module on the concatenated pairs: the same outputs, gradients and batch-norm
    running statistics, in training and in eval mode."""
    import copy

    torch.manual_seed(0)
    c, h, w = shape
    rel = ConvRelation(shape, channels=6, hidden=5)
    with torch.no_grad():
        rel.bn1.weight.uniform_(0.5, 1.5)
        rel.bn1.bias.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(rel)
    q, s = torch.rand(3, c * h * w) + 2.0, torch.rand(2, c * h * w)  # offset means: stats must be centred right
    if h == 7:
        assert copy.deepcopy(ref.block2).eval()(torch.zeros(1, 6, 3, 3)).shape[2:] == (1, 1), "7x7 maps end 1x1, as in the paper"
    for training in (True, False, True):
        rel.train(training)
        ref.train(training)
        got, expected = rel(q, s), paper_conv_relation(ref, q, s)
        assert got.shape == (3, 2) and torch.allclose(got, expected, atol=1e-5)
        got.square().sum().backward()
        expected.square().sum().backward()
        for (name, a), b in zip(rel.named_parameters(), ref.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-3), name
        for (name, a), b in zip(rel.named_buffers(), ref.buffers()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("pair_input", ["concat", "concat-product"])
def test_the_mlp_relation_module_scores_the_concatenated_pair(pair_input):
    """Applying fc1 to each side (and to the product) and adding gives the module run on the
    explicitly built pairs [class, query] (or [class, query, class * query]): outputs and gradients."""
    import copy

    torch.manual_seed(0)
    rel = MLPRelation(5, hidden=7, pair_input=pair_input)
    ref = copy.deepcopy(rel)
    assert rel.fc1.in_features == (10 if pair_input == "concat" else 15)
    q, s = torch.rand(4, 5) - 0.3, torch.rand(3, 5) - 0.3
    got = rel(q, s)
    cs, qs = s.expand(4, -1, -1), q[:, None].expand(-1, 3, -1)  # [4, 3, 5]: class j and query i of pair (i, j)
    parts = [cs, qs] + ([cs * qs] if pair_input == "concat-product" else [])
    pairs = torch.cat(parts, dim=2)  # [4, 3, 10 or 15]
    expected = ref.fc3(F.relu(ref.fc2(F.relu(ref.fc1(pairs))))).squeeze(-1)
    assert got.shape == (4, 3) and torch.allclose(got, expected, atol=1e-5)
    got.square().sum().backward()
    expected.square().sum().backward()
    for (name, a), b in zip(rel.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    with pytest.raises(ValueError, match="pair_input must be one of concat, concat-product"):
        MLPRelation(5, pair_input="product")


def test_the_product_input_lets_an_untrained_relation_module_start_from_a_similarity():
    """With fc1's product weights set to one and the rest zero (and identity-like later layers),
    the module's logit is the dot product of query and class: something the concat input
    cannot express in its first layer."""
    rel = MLPRelation(4, hidden=1, pair_input="concat-product")
    with torch.no_grad():
        for layer in (rel.fc1, rel.fc2, rel.fc3):
            layer.weight.zero_()
            layer.bias.zero_()
        rel.fc1.weight[0, 8:] = 1.0
        rel.fc1.bias.fill_(10.0)  # keeps the ReLUs in their linear part
        rel.fc2.weight.fill_(1.0)
        rel.fc3.weight.fill_(1.0)
        q, c = torch.randn(5, 4), torch.randn(3, 4)
        assert torch.allclose(rel(q, c), q @ c.t() + 10.0, atol=1e-5)


def test_concat_product_chunked_prediction_and_export(host, seeded_conv4, monkeypatch):
    algo = build(host, seeded_conv4.name, freeze=True, pair_input="concat-product", mlp_hidden=16).eval()
    assert algo.relation.pair_input == "concat-product" and algo.relation.fc1.in_features == 3 * 64
    ep = episode()
    learner = algo.adapt(ep.support)
    whole = learner.predict_proba(ep.query_images)
    with torch.no_grad():
        assert torch.allclose(learner.standalone()(ep.query_images.float() / 255).softmax(1), whole, atol=1e-5)
    monkeypatch.setattr(rn, "PAIR_CHUNK", 4)  # one query (3 pairs) per pass
    assert torch.allclose(learner.predict_proba(ep.query_images), whole, atol=1e-6)


def test_probabilities_are_normalised_relation_scores():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-300.0, -200.0, -250.0]])
    ratio = relation_class_logits(logits, "ratio", 10.0).softmax(1)
    scores = torch.sigmoid(logits[:1])
    assert torch.allclose(ratio[:1], scores / scores.sum(1, keepdim=True))
    assert torch.isfinite(ratio).all(), "scores that underflow to 0 still give probabilities"
    soft = relation_class_logits(logits, "softmax", 3.0).softmax(1)
    assert torch.allclose(soft, (3.0 * torch.sigmoid(logits)).softmax(1))
    for probs in (ratio, soft):
        assert torch.allclose(probs.sum(1), torch.ones(2))
    assert ratio.argmax(1).tolist() == logits.argmax(1).tolist()


# ------------------------------------------------------------------------------------------------
# the algorithm


def test_the_backbone_chooses_the_relation_module(host):
    assert isinstance(build(host).relation, ConvRelation)
    assert isinstance(build(host, "conv4").relation, MLPRelation)
    assert build(host, "conv4", mlp_hidden=32).relation.fc1.out_features == 32
    conv = build(host, relation_channels=16, relation_hidden=4).relation
    assert conv.conv1.weight.shape == (16, 128, 3, 3) and conv.fc1.out_features == 4


def test_adapt_predicts_probabilities_over_the_episode_classes(host):
    algo = build(host).eval()
    ep = episode()
    learner, probs = adapt_and_predict(algo, ep)
    # The most probable class is the one with the highest relation score.
    with torch.inference_mode():
        logits = algo.logits_all(algo.embed_all(ep.query_images), learner.classes)
    assert probs.argmax(1).tolist() == logits.argmax(1).tolist()
    assert learner.predict(ep.query_images)[0][0] in ep.class_names
    assert algo.evaluate_episode(ep) == pytest.approx(float((probs.argmax(1) == ep.query_labels).float().mean()))


def test_sum_and_mean_class_embeddings(host):
    ep = episode(ways=3, shots=3, queries=2)
    mean, total = build(host, class_embedding="mean").eval(), build(host, class_embedding="sum").eval()
    feats = mean.embed_all(ep.support_images)
    m = mean.adapt(ep.support).classes
    s = total.adapt(ep.support).classes
    assert torch.allclose(s, 3 * m, atol=1e-4)
    assert torch.allclose(m[1], feats[3:6].mean(0), atol=1e-5) and torch.allclose(s[1], feats[3:6].sum(0), atol=1e-4)
    one = SupportSet(ep.support_images[::3], torch.arange(3), ep.class_names)  # with one shot they agree
    assert torch.allclose(mean.adapt(one).classes, total.adapt(one).classes)
    assert torch.allclose(mean.adapt(one).predict_proba(ep.query_images), total.adapt(one).predict_proba(ep.query_images))


def test_loss_decreases_and_it_learns(host):
    algo = build(host, lr=3e-3)
    ds = synthetic_dataset(classes=16, per_class=8)
    train = EpisodeSampler(ds, 5, 1, 3, seed=0)
    algo.configure_training(40)
    algo.train()
    losses, accs = [], []
    for i in range(40):
        metrics = algo.meta_train_step([train.episode(i)])
        assert set(metrics) >= {"loss", "accuracy"} and all(type(v) is float for v in metrics.values())
        losses.append(metrics["loss"])
        accs.append(metrics["accuracy"])
    assert sum(losses[-8:]) < sum(losses[:8])
    assert sum(accs[-8:]) > sum(accs[:8])
    algo.eval()
    test = EpisodeSampler(ds, 3, 1, 3, seed=1)
    assert sum(algo.evaluate_episode(test.episode(i)) for i in range(10)) / 10 > 0.6


def test_a_meta_batch_and_20_ways(host):
    algo = build(host)
    algo.configure_training(1)
    eps = [episode(ways=6, shots=1, queries=2, seed=s, classes=12) for s in range(2)]
    metrics = algo.meta_train_step(eps)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_chunked_prediction_gives_the_same_probabilities(host, monkeypatch):
    algo = build(host).eval()
    ep = episode()
    learner = algo.adapt(ep.support)
    whole = learner.predict_proba(ep.query_images)
    monkeypatch.setattr(rn, "PAIR_CHUNK", 4)  # one query (3 pairs) per pass
    monkeypatch.setattr(algo, "embed_chunk", 2)
    assert torch.allclose(learner.predict_proba(ep.query_images), whole, atol=1e-6)


def test_adapting_a_model_left_in_training_mode_changes_nothing(host):
    algo = build(host)
    algo.train()
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    ep = episode()
    algo.adapt(ep.support).predict_proba(ep.query_images)
    algo.evaluate_episode(ep)
    assert algo.training, "the mode is restored"
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed (batch-norm statistics must not move when adapting)"


def test_save_and_load_give_the_same_predictions(host, tmp_path):
    algo = build(host, class_embedding="sum", probabilities="softmax", temperature=4.0)
    algo.configure_training(3)
    algo.train()
    for i in range(3):  # move the weights and batch-norm statistics away from their initial values
        algo.meta_train_step([episode(seed=i)])
    ep = episode(shots=3)
    learner = algo.adapt(ep.support)
    expected = learner.predict_proba(ep.query_images)
    path = save_model(algo, tmp_path / "rn.safetensors", learner=learner)
    loaded = load_model(path, host)
    assert loaded.algorithm.hparams == algo.hparams and isinstance(loaded.algorithm.relation, ConvRelation)
    assert loaded.learner is not None and loaded.learner.class_names == ep.class_names
    assert torch.allclose(loaded.learner.predict_proba(ep.query_images), expected, atol=1e-6)
    assert torch.allclose(loaded.algorithm.adapt(ep.support).predict_proba(ep.query_images), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_the_standalone_learner_gives_its_probabilities_and_traces(host):
    algo = build(host).eval()
    ep = episode()
    assert_standalone_reproduces(algo.adapt(ep.support), algo, ep.query_images)


def test_follows_the_algorithm_contract(tmp_path):
    check_algorithm(RelationNetworks, backbone="conv4-maps", tmp_path=tmp_path)


def test_follows_the_algorithm_contract_with_vectors(tmp_path):
    check_algorithm(RelationNetworks, backbone="conv4", tmp_path=tmp_path)


def test_frozen_vector_backbone(host, seeded_conv4, tmp_path):
    algo = RelationNetworks(seeded_conv4.build(1, 28), backbone_name=seeded_conv4.name, image_size=28, channels=1,
                            hparams={"mlp_hidden": 32, "lr": 3e-3}, freeze_backbone=True)
    assert isinstance(algo.relation, MLPRelation) and algo.relation.dim == 64
    backbone_before = {k: v.clone() for k, v in algo.backbone.state_dict().items()}
    algo.configure_training(10)
    algo.train()
    relation_before = algo.relation.fc1.weight.clone()
    ds = synthetic_dataset(classes=10, per_class=6)
    sampler = EpisodeSampler(ds, 5, 1, 3, seed=0)
    losses = [algo.meta_train_step([sampler.episode(i)])["loss"] for i in range(10)]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert not torch.equal(algo.relation.fc1.weight, relation_before), "the relation module learns"
    for k, v in algo.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), f"frozen backbone changed: {k}"
    assert not any(k.startswith("backbone.") for k in algo.state_dict()), "a frozen backbone is not saved"
    ep = episode()
    learner = algo.adapt(ep.support)
    probs = learner.predict_proba(ep.query_images)
    assert probs.shape == (9, 3) and torch.allclose(probs.sum(1), torch.ones(9))
    loaded = load_model(save_model(algo, tmp_path / "frozen.safetensors", learner=learner), host)
    assert loaded.algorithm.backbone_frozen
    assert torch.allclose(loaded.learner.predict_proba(ep.query_images), probs, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(learner.standalone()(ep.query_images.float() / 255).softmax(1), probs, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# distortions of training images (metastudio.algorithms.augment)

def test_distortions_change_training_features_only(host):
    ep = episode()
    images = torch.cat([ep.support_images, ep.query_images])
    algo = build(host, distort=True, distort_prob=1.0)
    algo.train()
    with torch.no_grad():
        torch.manual_seed(1)
        distorted = algo.training_embed(images)
        torch.manual_seed(2)
        again = algo.training_embed(images)
        algo.eval()
        plain = algo.embed(images)
        assert torch.equal(algo.training_embed(images), plain), "no distortion outside training"
    assert not torch.allclose(distorted, plain, atol=1e-3) and not torch.allclose(distorted, again, atol=1e-3)
    # adaptation and prediction never distort: the same weights without distortions predict the same
    same = build(host, distort=False)
    same.load_state_dict(algo.state_dict())
    same.eval()
    assert torch.equal(algo.adapt(ep.support).predict_proba(ep.query_images),
                       same.adapt(ep.support).predict_proba(ep.query_images))
    assert algo.evaluate_episode(ep) == same.evaluate_episode(ep)


def test_distorted_training_still_learns(host):
    ep = episode(ways=3, shots=1, queries=3)
    algo = build(host, distort=True, distort_prob=0.5, lr=3e-3)
    algo.configure_training(30)
    algo.train()
    torch.manual_seed(0)
    losses = [algo.meta_train_step([ep])["loss"] for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5]), losses


def test_distortions_are_refused_on_a_frozen_backbone(host, seeded_conv4):
    with pytest.raises(ValueError, match="distort=true distorts training images, but the backbone 'seeded-conv4' is frozen"):
        build(host, "seeded-conv4", freeze=True, distort=True)
