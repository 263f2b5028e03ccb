"""CLIP Score, CLIP-IQA-style quality and concept filters (``clipworks.scores``) and their commands.

Parity: a tiny random transformers ``CLIPModel`` and its ``CLIPProcessor`` (tokenizer files from clipworks' CLIP BPE
vocabulary) are saved to one directory; torchmetrics reads it through its documented callable hook and clipworks
reads it with ``Encoder.load(dir)``. Photos are 32×32, the model's input size, so neither side resamples (PIL and
the processor's tensor path would otherwise differ by interpolation, not by score). Random weights mean nothing, so
everything else is checked against a computation from the same encoder's embeddings.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo
from typer.testing import CliRunner

from clipworks.encoder import Encoder
from clipworks.errors import ConfigError, UsageError
from clipworks.scores import (
    PROMPT_PAIRS,
    Concept,
    ConceptFilter,
    calibrate,
    clip_score,
    concept_scores,
    load_concepts,
    load_labels,
    load_pairs,
    quality,
    save_concepts,
)

transformers = pytest.importorskip("transformers")
tm_functional = pytest.importorskip("torchmetrics.functional.multimodal")
tm_multimodal = pytest.importorskip("torchmetrics.multimodal")
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse"]
PROMPTS = ["a photo of an astronaut", "a cup of coffee", "a cat", "a rocket", "a man with a camera", "a horse"]
runner = CliRunner()


class Features(torch.nn.Module):
    """transformers 5 returns model outputs from ``get_*_features``; torchmetrics 1.9 expects the tensor."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    from clipworks.checkpoints.hf import write_processor_files

    d = tmp_path_factory.mktemp("hf-clip") / "tiny-clip"
    torch.manual_seed(2)  # a seed whose random towers give both positive and negative cosines on these pairs
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = transformers.CLIPConfig(text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8},
                                     projection_dim=16)
    transformers.CLIPModel(config).eval().save_pretrained(d)
    write_processor_files(d, Encoder.load(str(d)).model.config)  # vocab.json/merges.txt from clipworks' BPE
    transformers.CLIPProcessor.from_pretrained(d).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reference(hf_dir):
    """What torchmetrics is pointed at: the directory's model and processor."""
    model = Features(transformers.CLIPModel.from_pretrained(hf_dir).eval())
    processor = transformers.CLIPProcessor.from_pretrained(hf_dir)
    return lambda: (model, processor)


@pytest.fixture(scope="module")
def hf_encoder(hf_dir) -> Encoder:
    return Encoder.load(str(hf_dir))


@pytest.fixture(scope="module")
def small_photos():
    images = [photo(n).convert("RGB").resize((32, 32)) for n in NAMES]
    return images, [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]


def cosines(encoder: Encoder, images, prompts) -> np.ndarray:
    return np.einsum("nd,nd->n", encoder.encode_images(images), encoder.encode_text(prompts))


# ---------------------------------------------------------------- CLIP Score

def test_clip_score_equals_torchmetrics_where_every_cosine_is_positive(hf_encoder, reference, small_photos):
    images, tensors = small_photos
    result = clip_score(hf_encoder, images, PROMPTS)
    positive = [i for i, c in enumerate(result.cosines) if c > 0]
    assert 2 <= len(positive) < len(PROMPTS)  # the seed gives both signs; the other test needs a negative
    with torch.no_grad():
        for i in range(len(PROMPTS)):  # one pair alone: a clamped mean is a clamped pair
            theirs = float(tm_functional.clip_score(tensors[i], PROMPTS[i], reference))
            assert theirs == pytest.approx(float(result.scores[i]), abs=1e-4), PROMPTS[i]
        metric = tm_multimodal.CLIPScore(model_name_or_path=reference)
        metric.update([tensors[i] for i in positive], [PROMPTS[i] for i in positive])
        theirs = float(metric.compute())
    ours = clip_score(hf_encoder, [images[i] for i in positive], [PROMPTS[i] for i in positive])
    assert ours.mean == pytest.approx(theirs, abs=1e-4)
    assert ours.truncated_count == 0


def test_clip_score_clamps_each_pair_where_torchmetrics_clamps_the_mean(hf_encoder, reference, small_photos):
    images, tensors = small_photos
    cos = cosines(hf_encoder, images, PROMPTS)
    assert (cos < 0).any() and (cos > 0).any()
    result = clip_score(hf_encoder, images, PROMPTS)
    assert np.allclose(result.cosines, cos, atol=1e-6)
    assert np.allclose(result.scores, 100 * np.maximum(cos, 0), atol=1e-4)
    assert result.mean == pytest.approx(float(np.mean(100 * np.maximum(cos, 0))), abs=1e-4)
    with torch.no_grad():
        theirs = float(tm_functional.clip_score(tensors, PROMPTS, reference))
    assert theirs == pytest.approx(max(float(np.mean(100 * cos)), 0.0), abs=1e-4)  # max(mean(100·cos), 0)
    assert result.mean > theirs + 1  # negative pairs pull torchmetrics' mean down; here they count as 0


def test_clip_score_weight_2_5_is_the_clip_s_scale(tiny_encoder, photos):
    images = [photos[n] for n in NAMES]
    cos = cosines(tiny_encoder, images, PROMPTS)
    paper = clip_score(tiny_encoder, images, PROMPTS, weight=2.5)
    assert np.allclose(paper.scores, 2.5 * np.maximum(cos, 0), atol=1e-5)
    assert np.allclose(paper.scores * 40, clip_score(tiny_encoder, images, PROMPTS).scores, atol=1e-4)
    features = tiny_encoder.encode_images(images)  # embeddings in: the same scores, no image encoded twice
    assert np.allclose(clip_score(tiny_encoder, features, PROMPTS, weight=2.5).scores, paper.scores, atol=1e-6)


def test_long_prompt_keeps_its_end_token_and_is_counted(hf_dir, hf_encoder, reference, small_photos):
    images, tensors = small_photos
    tokenizer = hf_encoder.tokenizer
    long, longer = "x " * 76, "a photo of a cat " * 20  # 78 and 102 tokens with start and end
    assert tokenizer.token_count([long, longer, "a cat"]) == [78, 102, 4]
    ids = tokenizer([long])
    assert ids.shape == (1, 77) and int(ids[0, -1]) == tokenizer.eot_token_id
    result = clip_score(hf_encoder, images[:3], ["a cat", long, longer])
    assert result.truncated == (1, 2) and result.truncated_count == 2 and result.to_dict()["truncated_count"] == 2
    # ours is the model's embedding of the cut prompt, pooled at its end token, as transformers computes it
    model = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
        image = model.get_image_features(
            pixel_values=torch.stack([hf_encoder.preprocess(images[2])])).pooler_output
    cos = float(torch.nn.functional.cosine_similarity(text, image))
    ours = clip_score(hf_encoder, images[2:3], [long])
    assert float(ours.cosines[0]) == pytest.approx(cos, abs=1e-5)
    # torchmetrics slices at 77: no end token left, so it pools at the start token, whatever the prompt says
    with torch.no_grad(), pytest.warns(UserWarning, match="longer than max_position_embeddings=77"):
        theirs = [float(tm_functional.clip_score(tensors[2], text, reference)) for text in (long, longer)]
    assert theirs[0] > 0 and theirs[0] == pytest.approx(theirs[1], abs=1e-4)
    assert abs(float(ours.scores[0]) - theirs[0]) > 5


def test_clip_score_errors_name_the_counts_and_values(tiny_encoder, photos):
    images = [photos[n] for n in NAMES[:3]]
    with pytest.raises(UsageError, match="3 images and 2 prompts"):
        clip_score(tiny_encoder, images, PROMPTS[:2])
    with pytest.raises(UsageError, match="weight"):
        clip_score(tiny_encoder, images, PROMPTS[:3], weight=0)
    with pytest.raises(UsageError, match=r"\[N, 64\]"):
        clip_score(tiny_encoder, np.ones((3, 32), np.float32), PROMPTS[:3])
    with pytest.raises(UsageError, match="not one string"):
        clip_score(tiny_encoder, images[:1], "a cat")
    with pytest.raises(UsageError, match="at least one"):
        clip_score(tiny_encoder, [], [])


# ---------------------------------------------------------------- quality

def test_quality_equals_torchmetrics_clip_iqa(hf_encoder, reference, small_photos):
    images, tensors = small_photos
    names = ("quality", "brightness", "colorfullness", ("a photo of a cat", "a photo of a dog"))
    ours = quality(hf_encoder, images, names)
    assert list(ours) == ["quality", "brightness", "colorfulness", "user_defined_0"]
    with torch.no_grad():  # 0-255 floats with data_range 1: torchmetrics hands them to the processor unscaled
        theirs = tm_functional.clip_image_quality_assessment(torch.stack(tensors).float(), reference, data_range=1.0,
                                                             prompts=names)
    for name, key in zip(ours, ["quality", "brightness", "colorfullness", "user_defined_0"]):
        assert np.allclose(ours[name], theirs[key].numpy(), atol=1e-4), name


def test_quality_is_the_softmax_over_each_pair(tiny_encoder, photos):
    images = [photos[n] for n in NAMES]
    img = tiny_encoder.encode_images(images)
    pairs = {"sharp": ("Sharp photo.", "Blurry photo."), "cat": ("a cat", "a dog")}
    for scale, factor in ((100.0, 100.0), ("model", float(tiny_encoder.model.logit_scale.detach().exp()))):
        got = quality(tiny_encoder, img, pairs, scale=scale)
        for name, (pos, neg) in pairs.items():
            logits = factor * img @ tiny_encoder.encode_text([pos, neg]).T
            expected = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)
            assert got[name].shape == (len(images),) and np.allclose(got[name], expected, atol=1e-5), (name, scale)
    assert set(quality(tiny_encoder, img)) == {"quality", "brightness", "noisiness", "colorfulness", "sharpness",
                                               "contrast"}
    with pytest.raises(UsageError, match="unknown quality attribute 'crispness'"):
        quality(tiny_encoder, img, ["crispness"])


def test_pairs_file(tmp_path):
    f = tmp_path / "pairs.toml"
    f.write_text('sharpness = true\nmine = ["a crisp photo", "a smeared photo"]\n')
    assert load_pairs(f) == {"sharpness": PROMPT_PAIRS["sharpness"], "mine": ("a crisp photo", "a smeared photo")}
    f.write_text('mine = ["only one"]\n')
    with pytest.raises(ConfigError, match="mine: expected \\[positive prompt, negative prompt\\]"):
        load_pairs(f)


# ---------------------------------------------------------------- concepts and calibration

def test_concept_scores_equal_a_hand_computation(tiny_encoder, photos):
    images = [photos[n] for n in NAMES]
    concepts = [Concept("animal", ("a cat", "a horse", "an animal"), ("a toy animal", "a drawing of an animal"), 0.01),
                Concept("space", ("a rocket", "outer space"), threshold=0.1),
                Concept("unset", ("a thing",))]
    result = concept_scores(tiny_encoder, images, concepts)
    img = tiny_encoder.encode_images(images)
    expected = np.zeros((len(images), 3))
    for j, c in enumerate(concepts):
        p = tiny_encoder.encode_text(list(c.prompts))
        p = p.mean(axis=0) / np.linalg.norm(p.mean(axis=0))
        expected[:, j] = img @ p - ((img @ tiny_encoder.encode_text(list(c.negatives)).T).max(axis=1) if c.negatives else 0)
    assert np.allclose(result.scores, expected, atol=1e-5)
    flags = expected >= np.array([0.01, 0.1, np.inf])
    assert (result.flags == flags).all() and not result.flags[:, 2].any()
    assert result.flagged() == [(int(i), concepts[j].name, pytest.approx(float(expected[i, j]), abs=1e-5))
                                for i, j in zip(*np.nonzero(flags))]


def brute_force_lowest(scores: np.ndarray, labels: np.ndarray, target: float) -> float | None:
    for t in sorted(set(scores.tolist())):
        flagged = scores >= t
        if labels[flagged].mean() >= target:
            return t
    return None


def test_calibration_reaches_the_target_with_the_lowest_threshold():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.normal(0.2, 0.05, 200) + 0.06 * labels, 3)  # rounded: ties between scores
    for target in (0.6, 0.8, 0.9):
        cal = calibrate(scores, labels, target, "weapon")
        flagged = scores >= cal.threshold
        assert cal.precision == pytest.approx(labels[flagged].mean()) and cal.precision >= target
        assert cal.recall == pytest.approx(labels[flagged].sum() / labels.sum())
        assert cal.threshold == brute_force_lowest(scores, labels, target)
        lower = scores[scores < cal.threshold]
        assert all(labels[scores >= t].mean() < target for t in lower)  # no lower threshold reaches it
    # precision is not monotone: the lowest threshold reaching 2/3 is below a dip to 1/2
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 1, 1, 0, 0])
    assert calibrate(s, y, 2 / 3).threshold == 0.6 and calibrate(s, y, 1.0).threshold == 0.9


def test_calibration_errors_name_the_concept_and_best_precision():
    with pytest.raises(UsageError, match=r"'nudity': no threshold reaches precision 0.95 .* best is 0.667"):
        calibrate(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 1, 0]), 0.95, "nudity")
    with pytest.raises(UsageError, match="'x': the labelled set has no positive"):
        calibrate(np.array([0.1, 0.2]), np.array([0, 0]), 0.9, "x")
    with pytest.raises(UsageError, match="target precision"):
        calibrate(np.array([0.1]), np.array([1]), 1.5)


def test_filter_calibrate_sets_thresholds_from_labels(tiny_encoder, photos):
    images = [photos[n] for n in NAMES]
    filt = ConceptFilter(tiny_encoder, [Concept("animal", ("a cat", "a horse")), Concept("space", ("a rocket",))])
    scores = filt.scores(images).scores
    rank = np.argsort(-scores, axis=0)  # random weights: labels from the ranking, so the target is reachable
    labels = {"animal": np.zeros(6), "space": np.zeros(6)}
    labels["animal"][rank[[0, 2, 3], 0]] = 1
    labels["space"][rank[[0, 4], 1]] = 1
    labels["space"][rank[[1, 5], 1]] = np.nan
    got = filt.calibrate(images, labels, 0.6)
    assert got["animal"].threshold == brute_force_lowest(scores[:, 0], labels["animal"] == 1, 0.6)
    known = ~np.isnan(labels["space"])
    assert got["space"].labelled == 4
    assert got["space"].threshold == brute_force_lowest(scores[known, 1], labels["space"][known] == 1, 0.6)
    assert [c.threshold for c in filt.concepts] == [got["animal"].threshold, got["space"].threshold]
    with pytest.raises(UsageError, match="unknown concept.*'weapon'"):
        filt.calibrate(images, {"weapon": np.ones(6)}, 0.6)


def test_concept_files_round_trip_and_bad_files_name_the_field(tmp_path):
    concepts = [Concept("weapon", ("a gun", 'a "rifle"\n'), ("a toy gun",), 0.02), Concept("cat", ("a cat",))]
    for suffix in (".toml", ".json"):
        save_concepts(concepts, tmp_path / f"c{suffix}")
        assert load_concepts(tmp_path / f"c{suffix}") == concepts
    f = tmp_path / "bad.toml"
    cases = {'[weapon]\nprompts = ["a gun"\nthreshold = 1\n': r"bad.toml: not valid TOML: .*line 3",
             '[weapon]\nprompts = ["a gun"]\nthreshold = "high"\n': r"weapon.threshold: expected a number, got 'high'",
             '[weapon]\nprompt = ["a gun"]\n': r"concept 'weapon' has unknown field\(s\) prompt",
             '[weapon]\nnegatives = ["a toy"]\n': r"concept 'weapon' has no 'prompts'",
             '[weapon]\nprompts = ["a gun", 3]\n': r"weapon.prompts: expected a non-empty string",
             '': "no concepts"}
    for text, message in cases.items():
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_concepts(f)
    (tmp_path / "bad.json").write_text('{"weapon": {"prompts": ["a gun"],}}')
    with pytest.raises(ConfigError, match="bad.json: not valid JSON: .* line 1 column"):
        load_concepts(tmp_path / "bad.json")
    assert load_concepts(tmp_path / "c.toml")[0].threshold == 0.02
    (tmp_path / "n.json").write_text('{"w": {"prompts": "a gun", "negatives": ["a toy"]}}')
    assert load_concepts(tmp_path / "n.json") == [Concept("w", ("a gun",), ("a toy",), 0.0)]  # negatives: 0 default


# ---------------------------------------------------------------- commands

def test_score_command_skips_unreadable_images_and_checks_counts(tiny_checkpoint, tiny_encoder, image_dir, tmp_path):
    from clipworks.cli import app
    from clipworks.image.decode import expand_image_paths, load_image

    paths = expand_image_paths([image_dir])  # 7 files, 3 of them unreadable
    prompts = [f"prompt {i} " + ("word " * 90 if i == 1 else "") for i in range(len(paths))]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    r = runner.invoke(app, ["score", str(image_dir), "--prompts", str(tmp_path / "p.txt"), "--model",
                            str(tiny_checkpoint), "--json", "--weight", "2.5"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    good = [(p, t) for p, t in zip(paths, prompts) if p.name not in ("empty.png", "notes.png", "truncated.jpg")]
    assert {Path(s["image"]).name for s in data["skipped"]} == {"empty.png", "notes.png", "truncated.jpg"}
    expected = clip_score(tiny_encoder, [load_image(p) for p, _ in good], [t for _, t in good], weight=2.5)
    assert [row["score"] for row in data["results"]] == pytest.approx(expected.scores.tolist(), abs=1e-5)
    assert data["mean"] == pytest.approx(expected.mean, abs=1e-5) and data["truncated_count"] == 1
    assert [row["truncated"] for row in data["results"]] == [i == 1 for i in range(len(good))]
    assert "truncated.jpg" in r.stderr and "cut" in r.stderr

    (tmp_path / "short.txt").write_text("\n".join(prompts[:6]) + "\n")
    r = runner.invoke(app, ["score", str(image_dir), "--prompts", str(tmp_path / "short.txt"), "--model",
                            str(tiny_checkpoint)])
    assert r.exit_code == 1 and "7 images but 6 prompts" in r.stderr

    table = image_dir.parent / "pairs.csv"  # a table of pairs: image paths relative to its folder
    table.write_text("image,prompt\n" + "".join(f"{p.relative_to(image_dir.parent)},{t}\n" for p, t in good[:2]))
    r = runner.invoke(app, ["score", "--prompts", str(table), "--model", str(tiny_checkpoint), "--csv"])
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [float(row["score"]) for row in rows] == pytest.approx(clip_score(
        tiny_encoder, [load_image(p) for p, _ in good[:2]], [t for _, t in good[:2]]).scores.tolist(), abs=1e-4)
    r = runner.invoke(app, ["score", str(good[0][0]), "--prompts", str(table), "--model", str(tiny_checkpoint)])
    assert r.exit_code == 1 and "line 3: image images/1_coffee.jpg is not among the 1 images given" in r.stderr


def test_quality_and_filter_commands(tiny_checkpoint, tiny_encoder, image_dir, tmp_path):
    from clipworks.cli import app
    from clipworks.image.decode import load_image

    r = runner.invoke(app, ["quality", str(image_dir), "--model", str(tiny_checkpoint), "--csv",
                            "--pairs", "quality,sharpness"])
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 4 and list(rows[0]) == ["image", "quality", "sharpness"]
    expected = quality(tiny_encoder, [load_image(row["image"]) for row in rows], ["quality", "sharpness"])
    assert [float(row["sharpness"]) for row in rows] == pytest.approx(expected["sharpness"].tolist(), abs=1e-4)

    concepts = tmp_path / "concepts.toml"
    listed = [Concept("animal", ("a cat", "a horse"), ("a toy",)), Concept("space", ("a rocket",))]
    save_concepts(listed, concepts)
    names = ["0_astronaut.jpg", "1_coffee.jpg", "2_chelsea.jpg", "sub/rocket.png"]
    scores = concept_scores(tiny_encoder, [load_image(image_dir / n) for n in names], listed).scores
    top = scores.argmax(axis=0)  # random weights: each concept's best-scored image is its positive, so 0.5 is reachable
    labels = tmp_path / "labels.csv"
    labels.write_text("image,animal,space\n" + "".join(
        f"{image_dir / n},{int(top[0] == i)},{int(top[1] == i)}\n" for i, n in enumerate(names)))
    saved = tmp_path / "calibrated.json"
    r = runner.invoke(app, ["filter", str(image_dir), "--concepts", str(concepts), "--model", str(tiny_checkpoint),
                            "--calibrate", str(labels), "--precision", "0.5", "--save", str(saved), "--json"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    thresholds = {n: c["threshold"] for n, c in data["calibration"].items()}
    assert {c.name: c.threshold for c in load_concepts(saved)} == thresholds
    assert all(data["calibration"][n]["precision"] >= 0.5 for n in thresholds)
    flagged = {(Path(f["image"]).name, f["concept"]) for f in data["flagged"]}
    assert flagged == {(Path(row["image"]).name, n) for row in data["scores"] for n in thresholds
                       if row[n] >= thresholds[n]}
    assert len(data["scores"]) == 4 and len(data["skipped"]) == 3

    r = runner.invoke(app, ["filter", str(image_dir), "--concepts", str(concepts), "--model", str(tiny_checkpoint)])
    assert r.exit_code == 0 and "'space' has no threshold" in r.stderr
    (tmp_path / "bad.toml").write_text('[x]\nprompts = ["a"]\nthreshold = "high"\n')
    r = runner.invoke(app, ["filter", str(image_dir), "--concepts", str(tmp_path / "bad.toml"), "--model",
                            str(tiny_checkpoint)])
    assert r.exit_code == 1 and "x.threshold" in r.stderr


def test_labels_file_errors_name_line_and_column(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("image,weapon\na.jpg,1\nb.jpg,maybe\n")
    with pytest.raises(ConfigError, match=r"line 3, column 'weapon': 'maybe'"):
        load_labels(f)
    f.write_text("path,weapon\n")
    with pytest.raises(ConfigError, match="line 1 must be the header"):
        load_labels(f)
    f.write_text("image,weapon\nsub/a.jpg,1\nb.jpg,\n")
    labels = load_labels(f)
    assert labels.paths[0] == (tmp_path / "sub" / "a.jpg").resolve()
    rows, values = labels.for_concept("weapon")
    assert rows.tolist() == [0] and values.tolist() == [True]
