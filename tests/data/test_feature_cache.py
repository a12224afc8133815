"""The embedding cache: hits, misses, invalidation when a file changes, persistence, bounds."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from metastudio.data.feature_cache import FeatureCache, content_hash


class CountingEmbedder:
    """A stand-in backbone: the embedding of an image is derived from its bytes; calls are recorded."""

    def __init__(self, contents):
        self.contents = contents
        self.calls: list[list[int]] = []

    def __call__(self, indices):
        self.calls.append(list(indices))
        return torch.stack([torch.tensor([len(self.contents[i]), self.contents[i][0], sum(self.contents[i]) % 97],
                                         dtype=torch.float32) for i in indices])


def test_only_new_or_changed_images_are_embedded(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    images = [b"alpha", b"bravo", b"charlie"]
    first = cache.embed("lite0|224", images, CountingEmbedder(images))
    again = CountingEmbedder(images)
    assert torch.equal(cache.embed("lite0|224", images, again), first) and again.calls == []

    added = images + [b"delta"]  # one more support image
    emb = CountingEmbedder(added)
    out = cache.embed("lite0|224", added, emb)
    assert emb.calls == [[3]] and torch.equal(out[:3], first)

    changed = [b"alpha", b"bravo!", b"charlie", b"delta"]  # a file edited in place
    emb = CountingEmbedder(changed)
    cache.embed("lite0|224", changed, emb)
    assert emb.calls == [[1]]
    assert cache.hits == 3 + 3 + 3 and cache.misses == 3 + 1 + 1


def test_namespaces_do_not_mix(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    images = [b"same bytes"]
    cache.embed("lite0|224|stretch", images, CountingEmbedder(images))
    other = CountingEmbedder(images)
    cache.embed("lite0|224|center-crop", images, other)
    assert other.calls == [[0]]


def test_entries_persist_on_disk_as_plain_npy_and_deleting_is_safe(tmp_path):
    images = [b"one", b"two"]
    FeatureCache(tmp_path / "c").embed("ns", images, CountingEmbedder(images))
    files = sorted((tmp_path / "c").rglob("*.npy"))
    assert len(files) == 2
    assert np.load(files[0], allow_pickle=False).dtype == np.float32
    fresh = FeatureCache(tmp_path / "c")  # a new process: empty memory
    emb = CountingEmbedder(images)
    fresh.embed("ns", images, emb)
    assert emb.calls == []
    shutil.rmtree(tmp_path / "c")
    fresh.clear_memory()
    emb = CountingEmbedder(images)
    fresh.embed("ns", images, emb)
    assert emb.calls == [[0, 1]]


def test_disk_size_is_bounded_and_recent_entries_survive(tmp_path):
    cache = FeatureCache(tmp_path / "c", max_bytes=3000, memory_items=2)
    for i in range(30):
        data = [f"image {i}".encode()]
        cache.embed("ns", data, lambda idx: torch.ones(len(idx), 64))
    assert cache.disk_bytes() <= 3000
    assert sum(p.stat().st_size for p in (tmp_path / "c").rglob("*.npy")) <= 3000
    assert cache.get("ns", content_hash(b"image 29")) is not None


def test_an_unwritable_cache_only_costs_speed(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = FeatureCache(blocker / "c")
    images = [b"x", b"y"]
    out = cache.embed("ns", images, CountingEmbedder(images))
    assert out.shape == (2, 3)


def test_image_store_decodes_each_file_once_until_it_changes(tmp_path):
    import os

    from PIL import Image

    from metastudio.data.imagestore import ImageStore

    f = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(f)
    store = ImageStore(16, 3, "center-crop")
    first = store.get(f)
    assert first.shape == (3, 16, 16) and store.get(f) is first and store.decoded == 1
    Image.new("RGB", (40, 30), "blue").save(f)
    os.utime(f, ns=(1, 10**18))  # a new modification time, as an editor would leave
    second = store.get(f)
    assert store.decoded == 2 and second[2].mean() > 200 and first[0].mean() > 200


def test_use_feature_cache_gives_only_a_frozen_backbone_a_cache(host, tmp_path):
    from metastudio.app.catalogue import resolve_model
    from metastudio.data.feature_cache import use_feature_cache
    from metastudio.engine.checkpoint import load_model

    frozen = load_model(resolve_model("photos"), host, "cpu").algorithm
    learning = load_model(resolve_model("protonet-omniglot"), host, "cpu").algorithm
    cache = FeatureCache(tmp_path / "c")
    assert use_feature_cache(learning, cache) is None and learning.feature_cache is None
    assert use_feature_cache(frozen, cache) is cache and frozen.feature_cache is cache
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    first = frozen.embed(images)
    assert (cache.hits, cache.misses) == (0, 2)
    assert torch.equal(frozen.embed(images), first) and (cache.hits, cache.misses) == (2, 2)
    assert isinstance(use_feature_cache(frozen), FeatureCache) and frozen.feature_cache is not cache
