"""Zero-shot classification as an application: the ensemble, probabilities by family, saved classifiers, test-time
augmentation, ``classify`` and ``clipworks classify`` — each checked against a computation from the encoder's own
embeddings (random weights carry no meaning, so nothing here asserts a label is "right")."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from typer.testing import CliRunner

import clipworks
from clipworks.cli import app
from clipworks.encoder import Encoder
from clipworks.errors import ConfigError, InputTypeError, UsageError
from clipworks.image.decode import expand_image_paths
from clipworks.zeroshot import Prediction, ZeroShotClassifier, build_classifier, classify
from clipworks.zeroshot.tta import encode_images, multicrop_size, tta_views

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
NAMES = ["cat", "dog", "rocket ship", "coffee cup"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "itap of my {}."]


@pytest.fixture(scope="module")
def sigmoid_encoder(tiny_sigmoid_checkpoint) -> Encoder:
    return Encoder.load(str(tiny_sigmoid_checkpoint))


@pytest.fixture(scope="module")
def small_photos(photos) -> list[Image.Image]:
    return [photos[n].resize((48, 40)) for n in ("astronaut", "coffee", "chelsea", "rocket", "horse")]


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# -- the classifier ----------------------------------------------------------------------------------------------


def test_ensemble_is_the_renormalised_mean_of_normalised_prompts(tiny_encoder):
    clf = ZeroShotClassifier.build(tiny_encoder, NAMES, TEMPLATES)
    want = np.stack([_normalize(np.mean([tiny_encoder.encode_text([t.format(n)])[0] for t in TEMPLATES], axis=0))
                     for n in NAMES])
    assert clf.weights.shape == (len(NAMES), 64) and clf.weights.dtype == np.float32
    np.testing.assert_allclose(clf.weights, want, atol=1e-6)
    # the trainer's build_classifier gives the same classifier, transposed
    torch_weights = build_classifier(tiny_encoder.model, tiny_encoder.tokenizer, NAMES, TEMPLATES).numpy()
    np.testing.assert_allclose(clf.weights, torch_weights.T, atol=1e-6)
    assert clf.class_names == tuple(NAMES) and clf.templates == tuple(TEMPLATES)
    assert clf.model_ref == tiny_encoder.ref


def test_ensemble_equals_open_clips_builder(tiny_encoder):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    tok = tiny_encoder.tokenizer
    peer = build_zero_shot_classifier(tiny_encoder.model, lambda t: tok(t, context_length=tiny_encoder.model.context_length),
                                      NAMES, TEMPLATES, num_classes_per_batch=3)
    np.testing.assert_allclose(ZeroShotClassifier.build(tiny_encoder, NAMES, TEMPLATES).weights, peer.numpy().T, atol=1e-6)


def test_one_template_is_the_plain_normalised_text_embedding(tiny_encoder):
    for spec, template in (("simple", "a photo of a {}."), ("a sketch of a {}", "a sketch of a {}"),
                           (["itap of my {}."], "itap of my {}.")):
        clf = ZeroShotClassifier.build(tiny_encoder, NAMES, spec)
        np.testing.assert_allclose(clf.weights, tiny_encoder.encode_text([template.format(n) for n in NAMES]), atol=1e-6)


def test_template_file_and_many_classes_in_chunks(tiny_encoder, tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("# mine\na photo of a {}.\n\nitap of my {}.\n")
    import clipworks.zeroshot.classifier as module

    monkeypatch.setattr(module, "_PROMPTS_PER_CHUNK", 5)  # 2 templates → 2 classes per text call
    clf = ZeroShotClassifier.build(tiny_encoder, NAMES, tmp_path / "t.txt")
    assert clf.templates == ("a photo of a {}.", "itap of my {}.")
    want = ZeroShotClassifier.build(tiny_encoder, NAMES, ["a photo of a {}.", "itap of my {}."])
    np.testing.assert_allclose(clf.weights, want.weights, atol=1e-6)


@pytest.mark.parametrize("sigmoid", [False, True])
def test_probabilities_follow_the_family(tiny_encoder, sigmoid_encoder, small_photos, sigmoid):
    encoder = sigmoid_encoder if sigmoid else tiny_encoder
    clf = ZeroShotClassifier.build(encoder, NAMES, TEMPLATES)
    assert clf.uses_sigmoid is sigmoid is encoder.uses_sigmoid
    feats = encoder.encode_images(small_photos)
    probs = clf.predict(feats)
    with torch.no_grad():
        reference = encoder.model.probabilities(torch.from_numpy(feats), torch.from_numpy(clf.weights)).numpy()
    np.testing.assert_allclose(probs, reference, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs, encoder.probabilities(feats, clf.weights), rtol=1e-5, atol=1e-7)
    logits = encoder.model.logit_scale.exp().item() * feats.astype(np.float64) @ clf.weights.T.astype(np.float64)
    if sigmoid:
        logits += encoder.model.logit_bias.item()
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-9)
        assert not np.allclose(probs.sum(axis=1), 1.0)  # independent per label
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(clf.logits(feats), encoder.logits(feats, clf.weights), rtol=1e-5, atol=1e-5)

    values, indices = clf.topk(feats, k=2)
    assert values.shape == indices.shape == (len(small_photos), 2)
    np.testing.assert_array_equal(indices[:, 0], probs.argmax(axis=1))
    np.testing.assert_array_equal(values, np.take_along_axis(probs, indices, axis=1))
    assert clf.topk(feats, k=99)[1].shape == (len(small_photos), len(NAMES))  # clamped to the classes


def test_bad_labels_and_templates_are_usage_errors(tiny_encoder, tmp_path):
    cases = [([], "no class names"), (["cat", "dog", "cat", "dog", "cow"], "'cat' ×2, 'dog' ×2"),
             (["cat", "  "], "class name 2 is blank"), (["cat", "cat "], "'cat' ×2"), ("cat,dog", "not one string")]
    for names, message in cases:
        with pytest.raises(UsageError, match=message):
            ZeroShotClassifier.build(tiny_encoder, names)
    with pytest.raises(UsageError, match="'a photo of' needs exactly one"):
        ZeroShotClassifier.build(tiny_encoder, NAMES, ["a photo of a {}.", "a photo of"])
    with pytest.raises(UsageError, match="template with '{}'"):
        ZeroShotClassifier.build(tiny_encoder, NAMES, "a photo of")
    (tmp_path / "t.txt").write_text("a photo of a {}.\nno slot here\n")
    with pytest.raises(UsageError, match="t.txt: template 2 'no slot here'"):
        ZeroShotClassifier.build(tiny_encoder, NAMES, tmp_path / "t.txt")
    clf = ZeroShotClassifier.build(tiny_encoder, NAMES)
    with pytest.raises(UsageError, match=r"\[N, 64\].*got \[3, 32\]"):
        clf.predict(np.zeros((3, 32), np.float32))
    with pytest.raises(UsageError, match="k must be"):
        clf.topk(np.zeros((1, 64), np.float32), k=0)
    with pytest.raises(UsageError, match="tta 'rotate'"):
        classify(tiny_encoder, [], clf, tta="rotate")
    with pytest.raises(InputTypeError, match="a list of images"):
        classify(tiny_encoder, "cat.jpg", clf)
    with pytest.raises(UsageError, match="templates apply"):
        classify(tiny_encoder, [], clf, templates="simple")


# -- saved classifiers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigmoid", [False, True])
def test_save_load_round_trip_is_exact(tiny_encoder, sigmoid_encoder, tmp_path, small_photos, sigmoid):
    encoder = sigmoid_encoder if sigmoid else tiny_encoder
    clf = ZeroShotClassifier.build(encoder, ["ünïcode näme", *NAMES], TEMPLATES)
    path = clf.save(tmp_path / "clf.safetensors")
    back = ZeroShotClassifier.load(path, encoder)
    np.testing.assert_array_equal(back.weights, clf.weights)
    assert (back.class_names, back.templates, back.model_ref) == (clf.class_names, clf.templates, clf.model_ref)
    assert (back.logit_scale, back.logit_bias, back.uses_sigmoid) == (clf.logit_scale, clf.logit_bias, sigmoid)
    feats = encoder.encode_images(small_photos)
    np.testing.assert_array_equal(back.predict(feats), clf.predict(feats))
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temp file left


def test_load_refuses_another_model_naming_both(tiny_encoder, sigmoid_encoder, tmp_path):
    path = ZeroShotClassifier.build(tiny_encoder, NAMES).save(tmp_path / "clf.safetensors")
    with pytest.raises(UsageError) as e:
        ZeroShotClassifier.load(path, sigmoid_encoder)
    assert tiny_encoder.ref.describe() in str(e.value) and sigmoid_encoder.ref.describe() in str(e.value)
    random_model = Encoder.load("tiny-vit")
    with pytest.raises(UsageError, match="random weights"):
        ZeroShotClassifier.load(path, random_model)
    with pytest.raises(UsageError, match="was built with"):
        classify(sigmoid_encoder, [], ZeroShotClassifier.load(path))


def test_load_refuses_unknown_versions_and_other_files(tiny_encoder, tmp_path):
    from safetensors.numpy import save_file

    clf = ZeroShotClassifier.build(tiny_encoder, NAMES)
    path = clf.save(tmp_path / "clf.safetensors")
    header = json.loads(__import__("safetensors").safe_open(str(path), "np").metadata()["clipworks"])
    for version, message in ((2, "version 2 is newer than this clipworks reads"), ("x", "version 'x' is unknown")):
        save_file({"weights": clf.weights}, str(tmp_path / "v.safetensors"),
                  metadata={"clipworks": json.dumps({**header, "format_version": version})})
        with pytest.raises(ConfigError, match=message):
            ZeroShotClassifier.load(tmp_path / "v.safetensors")
    save_file({"weights": clf.weights}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not a clipworks zero-shot classifier"):
        ZeroShotClassifier.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00junk")
    with pytest.raises(ConfigError, match="junk.safetensors is not a saved classifier"):
        ZeroShotClassifier.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="nothere"):
        ZeroShotClassifier.load(tmp_path / "nothere.safetensors")


def test_a_failed_save_keeps_the_old_file(tiny_encoder, tmp_path, monkeypatch):
    path = ZeroShotClassifier.build(tiny_encoder, NAMES).save(tmp_path / "clf.safetensors")
    before = path.read_bytes()
    import safetensors.numpy

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        ZeroShotClassifier.build(tiny_encoder, ["x", "y"]).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]


def test_a_thousand_classes_load_without_encoding_text(tiny_encoder, tmp_path, monkeypatch, small_photos, image_dir):
    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(1000)]
    weights = _normalize(rng.standard_normal((1000, 64))).astype(np.float32)
    clf = ZeroShotClassifier(tuple(names), ("a photo of a {}.",), weights, tiny_encoder.ref,
                             float(tiny_encoder.model.logit_scale.detach().exp()))
    path = clf.save(tmp_path / "imagenet.safetensors")

    def no_text(*args, **kwargs):
        raise AssertionError("the text tower ran")

    monkeypatch.setattr(clipworks.Clip, "encode_text", no_text)
    monkeypatch.setattr(Encoder, "encode_text", no_text)
    back = ZeroShotClassifier.load(path, tiny_encoder)
    got = classify(tiny_encoder, small_photos, back, k=3)
    want_p, want_i = clf.topk(tiny_encoder.encode_images(small_photos), k=3)
    assert [p.labels for p in got] == [tuple(names[j] for j in row) for row in want_i]
    np.testing.assert_allclose([p.probabilities for p in got], want_p, rtol=1e-5)
    r = runner.invoke(app, ["classify", "--classifier", str(path), str(image_dir), "--json", "-k", "2"])
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 4


# -- test-time augmentation --------------------------------------------------------------------------------------


def test_tta_flip_is_the_mean_of_the_image_and_its_mirror(tiny_encoder, photos):
    # a 32×32 image is the model's input as is, so mirroring the file and mirroring the input agree exactly
    images = [photos[n].resize((32, 32)) for n in ("astronaut", "coffee", "horse")]
    manual = [_normalize(tiny_encoder.encode_images([im, ImageOps.mirror(im)]).mean(axis=0)) for im in images]
    np.testing.assert_allclose(encode_images(tiny_encoder, images, "flip"), manual, atol=1e-6)
    np.testing.assert_array_equal(encode_images(tiny_encoder, images, "none"), tiny_encoder.encode_images(images))


def test_multicrop_views_are_the_corners_and_centre(tiny_encoder, photos):
    t = tiny_encoder.preprocess
    big = multicrop_size(t)
    assert big == 37  # round(32 · 8/7)
    image = photos["chelsea"].resize((big, big))  # already the enlarged size: crops are plain pixel boxes
    views = tta_views(image, t, "multicrop-flip")
    boxes = [(0, 0), (5, 0), (0, 5), (5, 5), (2, 2)]  # (left, top): corners, then round(5/2) = 2 for the centre
    want = torch.stack([t.normalize(image.crop((x, y, x + 32, y + 32))) for x, y in boxes])
    assert views.shape == (10, 3, 32, 32) and isinstance(views, np.ndarray)  # numpy, whichever backend embeds them
    np.testing.assert_array_equal(views[:5], want.numpy())
    np.testing.assert_array_equal(views[5:], want.flip(-1).numpy())
    feats = encode_images(tiny_encoder, [image], "multicrop")
    manual = _normalize(tiny_encoder.encode_images([image.crop((x, y, x + 32, y + 32)) for x, y in boxes]).mean(0))
    np.testing.assert_allclose(feats[0], manual, atol=1e-6)


# -- classify ----------------------------------------------------------------------------------------------------


def test_classify_reports_unreadable_files_and_matches_the_classifier(tiny_encoder, image_dir, small_photos):
    paths = expand_image_paths([image_dir])
    inputs = [*paths, small_photos[0]]
    seen = []
    for tta in ("none", "flip"):
        got = classify(tiny_encoder, inputs, NAMES, templates=TEMPLATES, k=2, tta=tta, progress=seen.append)
        assert [p.index for p in got] == list(range(len(inputs)))
        bad = {p.path.name for p in got if not p.ok}
        assert bad == {"truncated.jpg", "empty.png", "notes.png"}
        assert all(p.path.name in p.error for p in got if not p.ok)
        ok = [p for p in got if p.ok]
        clf = ZeroShotClassifier.build(tiny_encoder, NAMES, TEMPLATES)
        images = [Image.open(p.path) for p in ok[:-1]] + [small_photos[0]]
        probs, idx = clf.topk(encode_images(tiny_encoder, images, tta), k=2)
        assert [p.labels for p in ok] == [tuple(NAMES[j] for j in row) for row in idx]
        np.testing.assert_allclose([p.probabilities for p in ok], probs, rtol=1e-5)
        assert ok[-1].path is None and ok[-1].name == f"<image {len(inputs) - 1}>"
    assert sum(seen) == 2 * len(inputs)
    only_bad = classify(tiny_encoder, [image_dir / "empty.png"], NAMES)  # a batch with nothing to embed
    assert len(only_bad) == 1 and not only_bad[0].ok and only_bad[0].label is None
    assert clipworks.classify is classify and isinstance(got[0], Prediction)


# -- the command -------------------------------------------------------------------------------------------------


def _cli(*args: str):
    return runner.invoke(app, ["classify", *args], env={"COLUMNS": "200"})


def test_cli_formats_parse_and_agree_with_the_api(tiny_checkpoint, tiny_encoder, image_dir):
    api = [p for p in classify(tiny_encoder, expand_image_paths([image_dir]), ["cat", "dog", "car"], k=2) if p.ok]
    base = ["--model", str(tiny_checkpoint), "--labels", "cat, dog,car", str(image_dir), "-k", "2"]

    r = _cli(*base, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(d["path"], [(x["label"], x["probability"]) for x in d["top_k"]]) for d in doc["predictions"]] == \
        [(str(p.path), list(zip(p.labels, p.probabilities))) for p in api]
    assert {Path(s["path"]).name for s in doc["skipped"]} == {"truncated.jpg", "empty.png", "notes.png"}
    assert "skipped 3 unreadable" in r.stderr and "notes.png" in r.stderr

    r = _cli(*base, "--csv")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    want = [(str(p.path), str(rank), label, prob) for p in api
            for rank, (label, prob) in enumerate(zip(p.labels, p.probabilities), start=1)]
    assert [(row["path"], row["rank"], row["label"]) for row in rows] == [w[:3] for w in want]
    np.testing.assert_allclose([float(row["probability"]) for row in rows], [w[3] for w in want], rtol=1e-5)

    r = _cli(*base)
    assert r.exit_code == 0, r.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines() if line.count("│") == 4]
    assert [c[1] for c in cells] == [label for p in api for label in p.labels]
    assert [c[2] for c in cells] == [f"{100 * q:.1f}%" for p in api for q in p.probabilities]
    assert [c[0] for c in cells if c[0]] == [str(p.path) for p in api]


def test_cli_saves_and_reuses_a_classifier(tiny_checkpoint, tiny_sigmoid_checkpoint, image_dir, tmp_path):
    saved = tmp_path / "clf.safetensors"
    labels = tmp_path / "labels.txt"
    labels.write_text("# animals\ncat\n\ndog\nrocket ship\n")
    r = _cli("--model", str(tiny_checkpoint), "--labels-file", str(labels), "--templates", "openai-imagenet",
             "--save-classifier", str(saved))
    assert r.exit_code == 0, r.stderr
    assert ZeroShotClassifier.load(saved).class_names == ("cat", "dog", "rocket ship")
    first = _cli("--model", str(tiny_checkpoint), "--labels-file", str(labels), "--templates", "openai-imagenet",
                 str(image_dir), "--json", "--tta", "multicrop")
    again = _cli("--classifier", str(saved), str(image_dir), "--json", "--tta", "multicrop")  # no --model
    assert first.exit_code == again.exit_code == 0, again.stderr
    assert json.loads(first.stdout)["predictions"] == json.loads(again.stdout)["predictions"]
    r = _cli("--model", str(tiny_sigmoid_checkpoint), "--classifier", str(saved), str(image_dir))
    assert r.exit_code == 1 and "was built with" in r.stderr and str(tiny_sigmoid_checkpoint) in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--labels", "cat,dog,cat"], "duplicate class names 'cat' ×2"),
    (["--labels", "cat,,dog"], "class name 2 is blank"),
    (["--labels", "cat", "--labels-file", "x.txt"], "exactly one of --labels, --labels-file or --classifier"),
    ([], "exactly one of"),
    (["--labels", "cat,dog", "--templates", "a photo of"], "template with '{}'"),
    (["--labels", "cat,dog", "--json", "--csv"], "--json or --csv, not both"),
    (["--labels", "cat,dog", "--tta", "rotate"], "--tta 'rotate'"),
    (["--labels-file", "missing.txt"], "missing.txt: no such file"),
])
def test_cli_bad_input_is_one_line(tiny_checkpoint, image_dir, args, message):
    r = _cli("--model", str(tiny_checkpoint), *args, str(image_dir))
    assert r.exit_code == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_real_run_with_a_sigmoid_model(tiny_sigmoid_checkpoint, image_dir):
    env = {**os.environ, "PYTHONPATH": str(Path(clipworks.__file__).parents[1]), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "clipworks", "classify", "--model", str(tiny_sigmoid_checkpoint),
                        "--labels", "cat,dog,car", str(image_dir / "sub"), str(image_dir / "empty.png"), "-k", "3"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "rocket.png" in r.stdout and "per-label" not in r.stdout
    assert "sigmoid" in r.stderr and "skipped 1 unreadable" in r.stderr and "empty.png" in r.stderr


def test_encoder_hashes_its_checkpoint_only_when_the_identity_is_asked_for(tiny_checkpoint, monkeypatch):
    """Embedding never reads the checkpoint again; the sha256 is taken once, on first use of ``ref``."""
    import clipworks.modelref as encoder_module
    from clipworks.encoder import Encoder

    calls = []
    real = encoder_module.hash_checkpoint
    monkeypatch.setattr(encoder_module, "hash_checkpoint", lambda path: calls.append(path) or real(path))
    enc = Encoder.load(str(tiny_checkpoint))
    enc.encode_text(["a cat"])
    assert calls == []
    assert enc.ref.weights == f"sha256:{real(tiny_checkpoint)}" and enc.ref is enc.ref
    assert len(calls) == 1
