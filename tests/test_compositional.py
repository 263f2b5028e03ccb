"""Compositional probes: the images are read back with numpy (connected components, colours, bounding-box fill)
and checked against a parser of the captions; the scores are checked against loops over the raw definitions on
the vectors of a deterministic hashing encoder, and on hand-made 2×2 cases."""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque

import numpy as np
import pytest
from typer.testing import CliRunner

from clipworks.cli import app
from clipworks.errors import UsageError
from clipworks.evaluate.compositional import (
    CHANCE,
    evaluate_compositional,
    markdown_table,
    preference_correct,
    similarities,
    summarise,
    winoground_correct,
)
from clipworks.evaluate.probes import (
    BACKGROUND,
    CATEGORIES,
    COLOURS,
    NUMBERS,
    Probe,
    generate_probes,
    save_probes,
)

NAME_OF = {rgb: name for name, rgb in COLOURS.items()}
WORD_NUMBER = {w: k for k, w in NUMBERS.items()}


# --- reading a probe image back: objects as (shape, colour, centroid x, centroid y) --------------------------

def components(image) -> list[tuple[str, str, float, float]]:
    """4-connected components of non-background pixels (BFS), each classified by its exact colour and by how much
    of its bounding box it fills: square ≈ 1, circle ≈ π/4, triangle ≈ 1/2, five-pointed star ≈ 0.38."""
    a = np.asarray(image.convert("RGB"))
    fg = np.any(a != np.array(BACKGROUND, dtype=np.uint8), axis=2)
    seen = np.zeros_like(fg)
    found = []
    h, w = fg.shape
    for y0, x0 in zip(*np.nonzero(fg)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pixels = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        ys, xs = np.array(pixels).T
        colours = {tuple(int(v) for v in a[y, x]) for y, x in pixels}
        assert len(colours) == 1, f"an object of several colours {colours}"
        fill = len(pixels) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        shape = "square" if fill > 0.9 else "circle" if fill > 0.66 else "triangle" if fill > 0.45 else "star"
        found.append((shape, NAME_OF[colours.pop()], float(xs.mean()), float(ys.mean())))
    return found


def holds(caption: str, scene: list[tuple[str, str, float, float]]) -> bool:
    """Whether ``caption`` (in the probes' grammar) is true of the objects read from an image."""
    def where(colour, shape):
        hits = [(x, y) for s, c, x, y in scene if s == shape and c == colour]
        return hits[0] if len(hits) == 1 else None

    if m := re.fullmatch(r"a (\w+) (\w+) (to the left of|to the right of|above|below) a (\w+) (\w+)", caption):
        a, b = where(m[1], m[2]), where(m[4], m[5])
        if len(scene) != 2 or a is None or b is None:
            return False
        dx, dy = b[0] - a[0], b[1] - a[1]
        return {"to the left of": dx > abs(dy), "to the right of": -dx > abs(dy),
                "above": dy > abs(dx), "below": -dy > abs(dx)}[m[3]]
    if m := re.fullmatch(r"(two|three|four|five) (\w+) (\w+)s", caption):
        return len(scene) == WORD_NUMBER[m[1]] and all((s, c) == (m[3], m[2]) for s, c, _, _ in scene)
    if m := re.fullmatch(r"a (\w+) (\w+) and (no|a) (\w+)", caption):
        others = [s for s, c, _, _ in scene if (s, c) != (m[2], m[1])]
        return where(m[1], m[2]) is not None and (others == [] if m[3] == "no" else others == [m[4]])
    if m := re.fullmatch(r"a (\w+) (\w+) and a (\w+) (\w+)", caption):
        return len(scene) == 2 and where(m[1], m[2]) is not None and where(m[3], m[4]) is not None
    raise AssertionError(f"caption outside the probe grammar: {caption!r}")


@pytest.fixture(scope="module")
def probes() -> dict[str, list[Probe]]:
    return {c: generate_probes(c, 12, seed=3) for c in CATEGORIES}


def test_images_depict_their_caption_and_not_the_twin(probes):
    for category, items in probes.items():
        for p in items:
            assert len(p.scenes) == 2 and p.images[0].size == (224, 224)
            for i, image in enumerate(p.images):
                scene = components(image)
                assert len(scene) == len(p.scenes[i]), (p.captions[i], scene)
                assert holds(p.captions[i], scene), (category, p.captions[i], scene)
                assert not holds(p.captions[1 - i], scene), (category, p.captions[1 - i], scene)


def test_object_centres_are_painted_in_their_colour(probes):
    for p in probes["binding"] + probes["spatial"]:
        for scene, image in zip(p.scenes, p.images):
            for thing in scene:
                assert image.getpixel((round(thing.x), round(thing.y))) == COLOURS[thing.colour]


def _words(caption: str) -> list[str]:
    return caption.split()


def test_twins_differ_by_exactly_the_intended_words(probes):
    for p in probes["counting"]:
        a, b = _words(p.captions[0]), _words(p.captions[1])
        assert a[1:] == b[1:] and WORD_NUMBER[b[0]] == WORD_NUMBER[a[0]] + 1
    for p in probes["negation"]:
        a, b = _words(p.captions[0]), _words(p.captions[1])
        assert [k for k in range(len(a)) if a[k] != b[k]] == [4] and (a[4], b[4]) == ("no", "a")
    for p in probes["binding"]:
        a, b = _words(p.captions[0]), _words(p.captions[1])
        assert len(a) == len(b) == 7 and [k for k in range(7) if a[k] != b[k]] == [1, 5]
        assert (a[1], a[5]) == (b[5], b[1]) and a[1] in COLOURS
    kinds = set()
    for p in probes["spatial"]:
        a, b = p.captions
        kinds.add(p.kind)
        if p.kind.endswith("relation"):  # one relation word flipped
            pair = {tuple(sorted(set(_words(a)) ^ set(_words(b))))}
            assert pair <= {("left", "right"), ("above", "below")} and len(_words(a)) == len(_words(b))
        else:  # the same words, the two noun phrases swapped around the same relation
            m = re.fullmatch(r"(a \w+ \w+) (.+) (a \w+ \w+)", a)
            assert m and b == f"{m[3]} {m[2]} {m[1]}" and sorted(_words(a)) == sorted(_words(b))
    assert kinds == {"horizontal-relation", "vertical-relation", "horizontal-order", "vertical-order"}


def test_probes_are_fixed_by_the_seed_and_do_not_depend_on_n():
    for c in CATEGORIES:
        a, b = generate_probes(c, 6, seed=7, size=128), generate_probes(c, 6, seed=7, size=128)
        assert a == b
        assert [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a[0].images, b[0].images)] == [True] * 2
        assert generate_probes(c, 2, seed=7, size=128) == a[:2]
        assert generate_probes(c, 6, seed=8, size=128) != a


def test_bad_arguments_name_the_value():
    with pytest.raises(UsageError, match="'colour'.*spatial, counting, negation, binding"):
        generate_probes("colour", 3)
    with pytest.raises(UsageError, match="size=100"):
        generate_probes("spatial", 3, size=100)
    with pytest.raises(UsageError, match="n=0"):
        generate_probes("spatial", 0)


# --- scoring --------------------------------------------------------------------------------------------------

def _hashed(data: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class HashEncoder:
    """A deterministic two-tower model: each text and each image (by its pixels) gets its own fixed random
    vector, deliberately not normalised; an image-blind variant gives every image the same vector."""

    def __init__(self, dim: int = 16, blind: bool = False, batch_size: int = 5):
        self.dim, self.blind, self.batch_size, self.calls = dim, blind, batch_size, 0

    def encode_text(self, texts):
        return np.stack([_hashed(t.encode(), self.dim) for t in texts])

    def encode_images(self, images):
        self.calls += 1
        assert len(images) <= self.batch_size
        return np.stack([_hashed(b"blind" if self.blind else im.tobytes(), self.dim) for im in images])


def _cos(u, v) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_scores_equal_a_loop_over_the_definitions():
    enc = HashEncoder()
    result = evaluate_compositional(enc, ["counting", "binding"], n_per_category=7, seed=1, size=128)
    for c in ("counting", "binding"):
        acc, text, image, group = [], [], [], []
        for p in generate_probes(c, 7, seed=1, size=128):
            t = [enc.encode_text([cap])[0] for cap in p.captions]
            v = [enc.encode_images([im])[0] for im in p.images]
            s = [[_cos(v[i], t[j]) for j in range(2)] for i in range(2)]  # s[image][caption]
            acc += [s[0][0] > s[0][1], s[1][1] > s[1][0]]
            text.append(s[0][0] > s[0][1] and s[1][1] > s[1][0])
            image.append(s[0][0] > s[1][0] and s[1][1] > s[0][1])
            group.append(text[-1] and image[-1])
        got = result["categories"][c]
        assert (got["n"], got["n_images"], got["n_pairs"]) == (7, 14, 7)
        assert got["accuracy"] == pytest.approx(np.mean(acc))
        assert (got["text_score"], got["image_score"], got["group_score"]) == pytest.approx(
            (np.mean(text), np.mean(image), np.mean(group)))
    assert result["overall"]["n"] == 14 and list(result["categories"]) == ["counting", "binding"]
    assert result["chance"] == CHANCE and "model" not in result


def test_images_are_encoded_in_batches_with_progress():
    enc, done = HashEncoder(batch_size=5), []
    evaluate_compositional(enc, "negation,spatial", n_per_category=4, size=128, progress=done.append)
    assert done == [5, 5, 5, 1] and enc.calls == 4


def test_winoground_definitions_on_constructed_cases():
    sims = np.array([
        [[1.0, 0.0], [0.0, 1.0]],    # all right
        [[0.9, 0.5], [0.95, 0.99]],  # each image prefers its caption; caption 0 prefers image 1
        [[0.5, 0.9], [0.1, 0.95]],   # image 0 prefers the twin; each caption prefers its own image
        [[0.5, 0.5], [0.1, 0.9]],    # a tie is wrong
    ])  # [probe, image, caption]
    w = winoground_correct(sims)
    assert w["text_score"].tolist() == [True, True, False, False]
    assert w["image_score"].tolist() == [True, False, True, True]
    assert w["group_score"].tolist() == [True, False, False, False]
    assert preference_correct(sims).tolist() == [[True, True], [True, True], [False, True], [False, True]]
    s = summarise(sims)
    assert s == {"n": 4, "n_images": 8, "accuracy": 0.75, "n_pairs": 4, "text_score": 0.5, "image_score": 0.75,
                 "group_score": 0.25}


def test_single_image_probes_get_accuracy_only():
    sims = np.array([[[0.8, 0.2], [np.nan, np.nan]], [[0.1, 0.3], [np.nan, np.nan]], [[0.1, 0.3], [0.2, 0.4]]])
    assert summarise(sims[:2]) == {"n": 2, "n_images": 2, "accuracy": 0.5}
    s = summarise(sims, kinds=["one", "one", "two"])
    assert (s["n_images"], s["accuracy"], s["n_pairs"], s["text_score"]) == (4, 0.5, 1, 0.0)
    assert s["by_kind"]["one"] == {"n": 2, "n_images": 2, "accuracy": 0.5}
    one = Probe("custom", "one", ("a red square", "a blue square"), (generate_probes("negation", 1, size=128)[0].scenes[0],),
                128)
    got = similarities(HashEncoder(), [one])
    assert np.isnan(got[0, 1]).all() and np.isfinite(got[0, 0]).all()


def test_chance_levels_are_those_of_random_scores():
    sims = np.random.default_rng(0).standard_normal((60_000, 2, 2))
    s = summarise(sims)
    for k, v in CHANCE.items():
        assert s[k] == pytest.approx(v, abs=0.006), k


def test_an_image_blind_model_scores_one_half_and_no_pairs():
    r = evaluate_compositional(HashEncoder(blind=True), n_per_category=6, size=128)
    for c in CATEGORIES:
        assert r["categories"][c]["accuracy"] == 0.5
        assert r["categories"][c]["text_score"] == 0 and r["categories"][c]["image_score"] == 0
    table = markdown_table(r)
    assert "| spatial | 6 | 50.0 | 0.0 | 0.0 | 0.0 |" in table and "| *chance* |  | 50.0 | 25.0 | 25.0 | 16.7 |" in table


class OracleEncoder:
    """A model that understands the probes: a caption's vector is its own axis; an image's vector is the sum of
    the axes of every caption seen so far that is true of the objects read from its pixels."""

    def __init__(self):
        self.axes: dict[str, int] = {}

    def encode_text(self, texts):
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for k, t in enumerate(texts):
            out[k, self.axes.setdefault(t, len(self.axes))] = 1
        return out

    def encode_images(self, images):
        out = np.zeros((len(images), 512), dtype=np.float32)
        for k, im in enumerate(images):
            scene = components(im)
            for t, axis in self.axes.items():
                out[k, axis] = holds(t, scene)
        return out


def test_a_model_that_reads_the_images_scores_perfectly():
    r = evaluate_compositional(OracleEncoder(), n_per_category=5, seed=11, size=160)
    for c in CATEGORIES:
        s = r["categories"][c]
        assert (s["accuracy"], s["text_score"], s["image_score"], s["group_score"]) == (1, 1, 1, 1), c


def test_save_probes_writes_images_and_captions(tmp_path, probes):
    written = save_probes(probes["counting"][:2] + probes["spatial"][:1], tmp_path / "ex")
    assert sorted(p.name for p in written) == ["counting-000-0.png", "counting-000-1.png", "counting-001-0.png",
                                               "counting-001-1.png", "spatial-000-0.png", "spatial-000-1.png"]
    rows = (tmp_path / "ex" / "captions.tsv").read_text().splitlines()
    assert rows[1] == "counting-000-0.png\t" + "\t".join(probes["counting"][0].captions)
    assert rows[2] == "counting-000-1.png\t" + "\t".join(reversed(probes["counting"][0].captions))


# --- CLI ------------------------------------------------------------------------------------------------------

def test_cli_writes_json_and_table(tmp_path, tiny_checkpoint, tiny_encoder, one_thread):
    out, examples = tmp_path / "out", tmp_path / "examples"
    r = CliRunner().invoke(app, ["eval", "compositional", "--model", str(tiny_checkpoint), "--n", "3", "--size", "128",
                                    "--categories", "counting,negation", "--out", str(out),
                                    "--save-images", str(examples)])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "compositional.json").read_text())
    assert list(result["categories"]) == ["counting", "negation"] and result["overall"]["n"] == 6
    assert result["model"]["weights"].startswith("sha256:")
    direct = evaluate_compositional(tiny_encoder, ["counting", "negation"], 3, seed=0, size=128)
    assert result["categories"] == json.loads(json.dumps(direct["categories"]))
    assert (out / "compositional.md").read_text() == markdown_table(direct)
    assert "| counting | 3 |" in r.stdout
    assert len(list(examples.glob("*.png"))) == 12 and (examples / "captions.tsv").is_file()


def test_cli_unknown_category_is_one_line(tmp_path, tiny_checkpoint):
    r = CliRunner().invoke(app, ["eval", "compositional", "--model", str(tiny_checkpoint), "--categories", "spatial,colour",
                                    "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "'colour'" in r.stderr and "known: spatial" in r.stderr
    assert not (tmp_path / "out").exists()
