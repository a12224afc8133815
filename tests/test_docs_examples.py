"""The complete examples in the docs work as written: the batch-trained algorithm of
docs/plugins.md section 3 passes the test kit."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _python_block(doc: str, containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"{doc} should have one python example with {containing!r}, found {len(found)}"
    return found[0]


def test_the_batch_trained_example_of_the_plugin_docs_passes_the_test_kit(tmp_path):
    from metastudio.api import check_algorithm

    source = _python_block("plugins.md", "class NearestMean(")
    assert len(source.splitlines()) < 80, "the example is meant to show a complete algorithm in under 80 lines"
    namespace: dict = {"__name__": "nearest_mean_example"}
    exec(compile(source, "docs/plugins.md (NearestMean example)", "exec"), namespace)
    report = check_algorithm(namespace["NearestMean"], tmp_path=tmp_path)
    assert "frozen backbone" not in report.skipped and "resume" not in report.skipped
    assert namespace["metastudio_algorithms"]() == [namespace["NearestMean"]]


def test_the_examples_centring_mean_follows_the_network_while_it_trains():
    import torch

    from metastudio.api import LabelledBatch
    from metastudio_builtins.backbones.networks import Conv4

    namespace: dict = {"__name__": "nearest_mean_example"}
    exec(_python_block("plugins.md", "class NearestMean("), namespace)
    torch.manual_seed(0)
    algorithm = namespace["NearestMean"](Conv4(1), backbone_name="conv4", image_size=28, channels=1)
    algorithm.start_batch_training(4)
    algorithm.configure_training(3)
    images = (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)
    batch = LabelledBatch(images, torch.arange(8) % 4, ("a", "b", "c", "d"))
    algorithm.train()
    algorithm.batch_train_step(batch)
    with torch.no_grad(), algorithm.evaluating():
        first = algorithm.backbone_features(images).mean(0)  # cl2n centres the raw features
    assert torch.allclose(algorithm.feature_mean, first, atol=1e-5), "the first estimate replaces the zeros"
    algorithm.batch_train_step(batch)
    with torch.no_grad(), algorithm.evaluating():
        second = algorithm.backbone_features(images).mean(0)  # cl2n centres the raw features
    assert torch.allclose(algorithm.feature_mean, first.lerp(second, 0.02), atol=1e-5), "then it moves 2 % of the way"
