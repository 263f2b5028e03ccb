"""Zero-shot: the prompt ensemble matches a hand computation; evaluate's numbers match a score matrix
we dictate by solving for the classifier that produces it from the model's own image embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipworks
from clipworks.zeroshot import (
    FASHION_MNIST_TEMPLATES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_TEMPLATES,
    ZeroShotResult,
    build_classifier,
    check_regression,
    evaluate,
)


@pytest.fixture(scope="module")
def model() -> clipworks.Clip:
    torch.manual_seed(0)
    return clipworks.create_model("tiny-vit")


@pytest.fixture(scope="module")
def tokenizer() -> clipworks.ClipTokenizer:
    return clipworks.get_tokenizer("tiny-vit")


def test_template_sets():
    assert len(OPENAI_IMAGENET_TEMPLATES) == len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    for templates in (SIMPLE_TEMPLATES, OPENAI_IMAGENET_TEMPLATES, FASHION_MNIST_TEMPLATES):
        assert all(t.count("{}") == 1 for t in templates)


def test_classifier_is_the_normalised_mean_of_normalised_prompts(model, tokenizer):
    names = ["t-shirt", "sneaker", "bag"]
    templates = ["a photo of a {}.", "a black and white photo of a {}.", "itap of a {}."]
    model.train()
    got = build_classifier(model, tokenizer, names, templates, batch_size=4)  # batches cut across classes
    assert model.training, "build_classifier must restore the caller's mode"
    model.eval()
    with torch.no_grad():
        columns = []
        for name in names:
            per_template = [model.encode_text(tokenizer([t.format(name)])) for t in templates]
            emb = torch.cat([e / e.norm(dim=-1, keepdim=True) for e in per_template]).mean(dim=0)
            columns.append(emb / emb.norm())
    want = torch.stack(columns, dim=1)
    assert got.shape == (model.config.embed_dim, len(names)) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=0), torch.ones(len(names)))


def test_classifier_refuses_bad_templates(model, tokenizer):
    with pytest.raises(ValueError, match="a photo"):
        build_classifier(model, tokenizer, ["cat"], ["a photo"])
    with pytest.raises(ValueError, match="class name"):
        build_classifier(model, tokenizer, [], SIMPLE_TEMPLATES)


def _dictated(model: clipworks.Clip, scores: np.ndarray, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and the classifier W with normalize(encode_image(images)) @ W == scores."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(scores.shape[0], 3, model.image_size, model.image_size, generator=gen)
    with torch.no_grad():
        features = model.encode_image(images, normalize=True).double().numpy()
    weights = np.linalg.pinv(features) @ scores  # exact: N <= embed_dim and the features are independent
    return images, torch.from_numpy(weights).float()


def test_evaluate_matches_the_dictated_scores(model):
    rng = np.random.default_rng(0)
    n, c = 24, 7
    scores = np.stack([rng.permutation(c) for _ in range(n)]).astype(np.float64)  # margins of 1
    labels = torch.from_numpy(rng.integers(0, c, n))
    labels[:3] = torch.from_numpy(scores[:3].argmax(1))  # some right answers for certain
    images, classifier = _dictated(model, scores)
    batches = [(images[s], labels[s]) for s in (slice(0, 5), slice(5, 16), slice(16, n))]
    result = evaluate(model, classifier, batches)

    predicted = scores.argmax(1)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    want_confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(want_confusion, (labels.numpy(), predicted), 1)
    assert result.n == n
    assert result.top1 == pytest.approx((predicted == labels.numpy()).mean())
    assert result.top5 == pytest.approx(np.mean([y in row for y, row in zip(labels.numpy(), top5)]))
    assert 0 < result.top1 < result.top5 < 1
    assert torch.equal(result.confusion, torch.from_numpy(want_confusion))
    rows = want_confusion.sum(1)
    np.testing.assert_allclose(result.per_class_accuracy.numpy(), np.diag(want_confusion) / rows)


def test_evaluate_few_classes_progress_and_bad_labels(model):
    scores = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0], [2.0, 0.0, 1.0]])
    images, classifier = _dictated(model, scores)
    result = evaluate(model, classifier, ((images[i : i + 1], torch.tensor([y])) for i, y in enumerate([0, 1, 0, 0])),
                      progress=True)
    assert result.top5 is None and result.top1 == 0.75
    assert result.confusion.tolist() == [[2, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert torch.isnan(result.per_class_accuracy[2])
    with pytest.raises(ValueError, match="label 3 is outside"):
        evaluate(model, classifier, [(images, torch.tensor([0, 1, 2, 3]))])
    with pytest.raises(ValueError, match="no images"):
        evaluate(model, classifier, [])


def _result(top1: float, classes: int = 10) -> ZeroShotResult:
    return ZeroShotResult(top1=top1, top5=None, confusion=torch.zeros(classes, classes, dtype=torch.int64), n=1000)


def test_check_regression():
    message = check_regression(_result(0.80), _result(0.75), max_drop=0.02)
    assert message is not None and "5.00 points" in message and "80.00%" in message and "75.00%" in message
    assert check_regression(_result(0.80), _result(0.79), max_drop=0.02) is None
    assert check_regression(_result(0.80), _result(0.90), max_drop=0.0) is None
    with pytest.raises(ValueError, match="different class sets"):
        check_regression(_result(0.8), _result(0.8, classes=5), max_drop=0.01)
    with pytest.raises(ValueError, match="fraction"):
        check_regression(_result(0.8), _result(0.7), max_drop=5)
