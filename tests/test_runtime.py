"""The onnxruntime backend and the torch-free runtime: an exported folder embeds, classifies, indexes and searches
like the torch model it came from, refuses folders it cannot trust, and runs in a process where torch cannot be
imported at all (the last tests: the Python API, the CLI and the service under an import blocker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipworks.encoder import Encoder
from clipworks.encoding import load_encoder
from clipworks.errors import MissingDependencyError, UsageError
from clipworks.image.decode import ImageError, expand_image_paths
from clipworks.image.transforms import ImageTransform
from clipworks.runtime import OnnxEncoder, Package, PackageError, Preprocess
from clipworks.runtime.package import MANIFEST
from clipworks.search import Index
from clipworks.zeroshot import ZeroShotClassifier, classify

pytest.importorskip("onnxruntime")
export = pytest.importorskip("clipworks.export")
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["cat", "dog", "rocket ship", "coffee cup"]
TEXTS = ["a cat", "a photo of a dog in the snow at night", "", "café crème brûlée", "x " * 100, "A ROCKET!"]
ATOL = 1e-4  # the parity promise: ONNX fp32 within 1e-4 of torch
BLOCKED = ("torch", "torchvision", "open_clip", "timm", "transformers", "onnx", "onnxscript", "matplotlib",
           "tensorboard", "huggingface_hub", "sklearn")


@pytest.fixture(scope="module")
def folder(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    export.export_onnx(str(tiny_checkpoint), out, int8=True, check=False)  # parity is what these tests check
    return out


@pytest.fixture(scope="module")
def sigmoid_folder(tiny_sigmoid_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny-sigmoid"
    export.export_onnx(str(tiny_sigmoid_checkpoint), out, check=False)
    return out


@pytest.fixture(scope="module")
def onnx_encoder(folder) -> OnnxEncoder:
    return OnnxEncoder.load(folder, threads=1)


@pytest.fixture(scope="module")
def sigmoid_encoders(tiny_sigmoid_checkpoint, sigmoid_folder) -> tuple[Encoder, OnnxEncoder]:
    return Encoder.load(str(tiny_sigmoid_checkpoint)), OnnxEncoder.load(sigmoid_folder, threads=1)


# -- preprocessing ---------------------------------------------------------------------------------------------------

def _modes(photo: Image.Image) -> list[Image.Image]:
    """One photo in the modes files decode to: RGB, greyscale, RGBA, palette, 16-bit, 32-bit int and float."""
    grey = np.asarray(photo.convert("L"), dtype=np.float64)
    return [photo, photo.convert("L"), photo.convert("RGBA"), photo.convert("P"), photo.convert("LA"),
            photo.convert("CMYK"), Image.fromarray((grey * 257).astype(np.uint16)),
            Image.fromarray((grey * 1000).astype(np.int32)), Image.fromarray((grey / 7).astype(np.float32))]


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_preprocessing_is_bit_identical_to_the_torch_transform(resize_mode, photos):
    rng = np.random.default_rng(0)
    sizes = [(50, 37), (37, 50), (224, 224), (1, 1), (2, 3), (7, 300), (300, 200), (33, 31)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    images += _modes(photos["chelsea"].resize((61, 45))) + [photos["astronaut"]]
    checked = 0
    for interpolation in ("bicubic", "bilinear", "nearest"):
        for resize_size in (None, 40):
            fields = {"image_size": 32, "interpolation": interpolation, "resize_mode": resize_mode,
                      "resize_size": resize_size, "fill_color": 9, "mean": (0.48, 0.45, 0.40),
                      "std": (0.26, 0.26, 0.27)}
            torch_transform, numpy_transform = ImageTransform(**fields), Preprocess(**fields)
            for image in images:
                if resize_mode == "longest" and max(image.size) > 40 * min(image.size):
                    continue  # the shorter side rounds to 0 px: both transforms refuse it alike (PIL's error)
                want = torch_transform(image).numpy()
                got = numpy_transform(image)
                assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=f"{image.mode} {image.size} {fields}")
                checked += 1
    assert checked >= 6 * (len(images) - 2)


def test_preprocessing_comes_from_the_manifest(folder, tiny_encoder, onnx_encoder, photos):
    package = Package.read(folder)
    assert Preprocess.from_dict(package.preprocess) == onnx_encoder.preprocess
    for image in _modes(photos["coffee"]):
        np.testing.assert_array_equal(onnx_encoder.pixels(image), tiny_encoder.pixels(image).numpy())
    with pytest.raises(PackageError, match="unknown field 'size'"):
        Preprocess.from_dict({**package.preprocess, "size": 32})
    with pytest.raises(PackageError, match="resize_mode"):
        Preprocess.from_dict({**package.preprocess, "resize_mode": "crop"})


# -- embeddings ------------------------------------------------------------------------------------------------------

def test_text_embeddings_match_torch_with_trimmed_batches(tiny_encoder, onnx_encoder):
    ids = onnx_encoder.tokenizer.encode_np(TEXTS[:2], onnx_encoder.context_length)
    trimmed = onnx_encoder.trim(ids)
    assert trimmed.shape == (2, 12) and (ids[:, 12:] == 0).all()  # "…at night" is 10 tokens + start + end
    np.testing.assert_array_equal(trimmed, ids[:, :12])
    assert onnx_encoder.trim(onnx_encoder.tokenizer.encode_np(TEXTS[4:5], 77)).shape == (1, 77)  # truncated: full
    want = tiny_encoder.encode_text(TEXTS)
    got = onnx_encoder.encode_text(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(got, want, atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    widths = []
    run = onnx_encoder._run
    onnx_encoder._run = lambda kind, x, normalize: widths.append(x.shape) or run(kind, x, normalize)
    onnx_encoder.text_batch_size = 2  # batches of similar lengths, each trimmed to its own longest caption
    try:
        np.testing.assert_allclose(onnx_encoder.encode_text(TEXTS), want, atol=ATOL)
    finally:
        onnx_encoder.text_batch_size = 256
        del onnx_encoder._run
    assert widths == [(2, 4), (2, 11), (2, 77)]  # sorted by length (2, 4 | 5, 11 | 12, 77 tokens), not input order
    raw = onnx_encoder.encode_text(TEXTS[:3], normalize=False)
    np.testing.assert_allclose(raw, tiny_encoder.encode_text(TEXTS[:3], normalize=False), atol=ATOL)
    assert onnx_encoder.encode_text([]).shape == (0, 64)
    with pytest.raises(UsageError, match="not one string"):
        onnx_encoder.encode_text("a cat")


def test_text_without_trimming_runs_the_full_context(folder, tmp_path, tiny_encoder):
    copy = tmp_path / "untrimmed"
    shutil.copytree(folder, copy)
    data = json.loads((copy / MANIFEST).read_text())
    data["text_trim"] = False
    (copy / MANIFEST).write_text(json.dumps(data))
    untrimmed = OnnxEncoder.load(copy, threads=1)
    ids = untrimmed.tokenizer.encode_np(TEXTS[:2], 77)
    assert untrimmed.trim(ids) is ids
    np.testing.assert_allclose(untrimmed.encode_text(TEXTS), tiny_encoder.encode_text(TEXTS), atol=ATOL)


def _hf_tokenizer_dir(directory: Path) -> Path:
    """A Hugging Face tokenizer directory on CLIP's vocabulary (so the tiny model's text tower can read its ids) whose
    pad token is the end token, as in transformers' CLIP files: the case where trimming must keep one pad column."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from clipworks.text.clip_bpe import EOT, SOT, vocab_and_merges

    vocab, merges = vocab_and_merges()
    tok = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(single=f"{SOT} $A {EOT}",
                                                       special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])])
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"pad_token": EOT, "tokenizer_class": "CLIPTokenizer"}))
    return directory


def test_hf_tokenizers_come_from_the_folder(folder, tiny_encoder, tmp_path):
    from clipworks.text import HFTokenizer

    copy = tmp_path / "hf"
    shutil.copytree(folder, copy)
    _hf_tokenizer_dir(copy / "tokenizer")
    data = json.loads((copy / MANIFEST).read_text())
    data["tokenizer"] = {"type": "hf", "name": "tokenizer", "clean": "whitespace", "strip_sep_token": False,
                         "normalize": "none", "padding_side": "right"}
    (copy / MANIFEST).write_text(json.dumps(data))
    encoder = OnnxEncoder.load(copy, threads=1)
    assert isinstance(encoder.tokenizer, HFTokenizer) and encoder.tokenizer.pad_token_id == 49407
    ids = encoder.tokenizer.encode_np(TEXTS[:2], 77)
    trimmed = encoder.trim(ids)
    assert trimmed.shape[1] < 20 and (trimmed[:, 0] == 49406).all() and (trimmed[:, -1] == 49407).all()
    reference = HFTokenizer(copy / "tokenizer", 77)(TEXTS)
    with torch.no_grad():
        want = tiny_encoder.model.encode_text(reference, normalize=True).numpy()
    np.testing.assert_allclose(encoder.encode_text(TEXTS), want, atol=ATOL)
    data["tokenizer"]["name"] = "../elsewhere"
    (copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="no such tokenizer subfolder"):
        OnnxEncoder.load(copy)


def test_image_embeddings_match_torch(tiny_encoder, onnx_encoder, photos):
    images = [photos[n] for n in ("astronaut", "coffee", "chelsea")] + _modes(photos["rocket"].resize((40, 30)))
    want = tiny_encoder.encode_images(images)
    np.testing.assert_allclose(onnx_encoder.encode_images(images), want, atol=ATOL)
    pixels = [onnx_encoder.pixels(im) for im in images]
    np.testing.assert_allclose(onnx_encoder.encode_pixels(pixels), want, atol=ATOL)
    np.testing.assert_allclose(onnx_encoder.encode_pixels(np.stack(pixels)), want, atol=ATOL)
    assert onnx_encoder.encode_images([]).shape == (0, 64)


def test_files_skip_unreadable_ones_as_the_torch_encoder_does(tiny_encoder, onnx_encoder, image_dir):
    paths = expand_image_paths([image_dir])
    want = tiny_encoder.encode_files(paths)
    seen = []
    got = onnx_encoder.encode_files(paths, progress=seen.append, batch_size=2)
    assert got.paths == want.paths and len(got.paths) == 4
    assert got.failures == want.failures and len(got.failures) == 3  # truncated, empty, not an image
    assert sum(seen) == len(paths)
    np.testing.assert_allclose(got.features, want.features, atol=ATOL)
    raw = onnx_encoder.encode_files(paths, normalize=False)
    np.testing.assert_allclose(raw.features, tiny_encoder.encode_files(paths, normalize=False).features, atol=ATOL)
    with pytest.raises(ImageError, match="empty"):
        onnx_encoder.encode_files(sorted(paths), strict=True)


def test_int8_graphs_stay_close_to_fp32(folder, onnx_encoder, photos):
    int8 = OnnxEncoder.load(folder, precision="int8", threads=1)
    images = [photos[n] for n in ("astronaut", "coffee", "chelsea", "rocket")]
    cosine = (int8.encode_images(images) * onnx_encoder.encode_images(images)).sum(axis=1)
    assert cosine.min() > 0.99
    assert (int8.encode_text(TEXTS) * onnx_encoder.encode_text(TEXTS)).sum(axis=1).min() > 0.99
    assert int8.ref == onnx_encoder.ref and int8.precision == "int8"


@pytest.mark.parametrize("sigmoid", [False, True])
def test_scores_match_torch(sigmoid, tiny_encoder, onnx_encoder, sigmoid_encoders, photos):
    torch_encoder, onnx_enc = sigmoid_encoders if sigmoid else (tiny_encoder, onnx_encoder)
    assert onnx_enc.uses_sigmoid is torch_encoder.uses_sigmoid is sigmoid
    assert onnx_enc.logit_scale == pytest.approx(torch_encoder.logit_scale, rel=1e-7)
    assert onnx_enc.logit_bias == (None if not sigmoid else pytest.approx(torch_encoder.logit_bias))
    images = torch_encoder.encode_images([photos["astronaut"], photos["coffee"]])
    texts = torch_encoder.encode_text(NAMES)
    np.testing.assert_allclose(onnx_enc.logits(images, texts), torch_encoder.logits(images, texts), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(onnx_enc.probabilities(images, texts), torch_encoder.probabilities(images, texts),
                               rtol=1e-5, atol=1e-7)


# -- applications ----------------------------------------------------------------------------------------------------

def test_classify_matches_torch(tiny_encoder, onnx_encoder, sigmoid_encoders, image_dir, tmp_path):
    want_clf = ZeroShotClassifier.build(tiny_encoder, NAMES)
    clf = ZeroShotClassifier.build(onnx_encoder, NAMES)
    assert clf.model_ref == want_clf.model_ref and clf.logit_scale == pytest.approx(want_clf.logit_scale, rel=1e-7)
    np.testing.assert_allclose(clf.weights, want_clf.weights, atol=ATOL)
    paths = expand_image_paths([image_dir])
    for tta in ("none", "flip"):
        want = classify(tiny_encoder, paths, want_clf, k=2, tta=tta)
        got = classify(onnx_encoder, paths, clf, k=2, tta=tta)
        assert [(p.path, p.labels, p.error) for p in got] == [(p.path, p.labels, p.error) for p in want]
        np.testing.assert_allclose([p.probabilities for p in got if p.ok], [p.probabilities for p in want if p.ok],
                                   atol=1e-4)
    saved = want_clf.save(tmp_path / "clf.safetensors")  # built with torch, applied with ONNX: the same weights
    assert ZeroShotClassifier.load(saved, onnx_encoder).model_ref == onnx_encoder.ref
    with pytest.raises(UsageError, match="built with"):
        ZeroShotClassifier.load(saved, sigmoid_encoders[1])


def test_an_index_built_with_torch_is_searched_with_onnx(tiny_encoder, onnx_encoder, sigmoid_encoders, image_dir,
                                                         tmp_path):
    from clipworks.search import search

    with Index.create(tmp_path / "torch-idx", image_dir, tiny_encoder) as index:
        index.add()
        want = search(index, "a photo of a cat", k=4)
    with Index.open(tmp_path / "torch-idx", encoder=onnx_encoder) as index:
        got = search(index, "a photo of a cat", k=4)
    assert [h.id for h in got.hits] == [h.id for h in want.hits] and len(got.hits) == 4
    np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in want.hits], atol=ATOL)
    with pytest.raises(UsageError, match="built with"):
        Index.open(tmp_path / "torch-idx", encoder=sigmoid_encoders[1])
    with Index.create(tmp_path / "onnx-idx", image_dir, onnx_encoder) as index:  # and the other way round
        report = index.add()
        assert report.embedded == 4 and len(report.failures) == 3
        np.testing.assert_allclose(index.vectors(index.all_ids()), tiny_encoder.encode_files(
            [index.root / it.path for it in index.items(index.all_ids())]).features, atol=ATOL)
    with Index.open(tmp_path / "onnx-idx", encoder=tiny_encoder) as index:
        assert [h.id for h in search(index, "a photo of a cat", k=4).hits] == [h.id for h in want.hits]


def test_the_service_runs_on_the_onnx_encoder(tiny_encoder, onnx_encoder):
    from fastapi.testclient import TestClient

    from clipworks.serve import create_app

    with TestClient(create_app(None, onnx_encoder)) as client:
        r = client.post("/embed/text", json={"texts": TEXTS[:2]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["embeddings"], tiny_encoder.encode_text(TEXTS[:2]), atol=ATOL)


def test_cli_backend_options_check_the_model(folder, sigmoid_folder, tiny_encoder, tiny_sigmoid_checkpoint, image_dir,
                                             tmp_path, monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from clipworks.cli import app

    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as index:
        index.add()
    runner = CliRunner()
    served = []

    def fake_run(served_app, **kw):
        with TestClient(served_app) as client:
            served.append(client.get("/search", params={"q": "a cat", "k": 2}).json())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    r = runner.invoke(app, ["serve", "--index", str(tmp_path / "idx"), "--backend", "onnx", "--model", str(folder)])
    assert r.exit_code == 0, r.output
    assert len(served[-1]["hits"]) == 2
    cases = [
        (["serve", "--index", str(tmp_path / "idx"), "--backend", "onnx"], "needs --model"),
        (["serve", "--index", str(tmp_path / "idx"), "--backend", "onnx", "--model", str(sigmoid_folder)],
         "built with"),
        (["search", str(tmp_path / "idx"), "a cat", "--backend", "onnx", "--model", str(sigmoid_folder)], "built with"),
        (["index", "add", str(tmp_path / "idx"), "--model", str(tiny_sigmoid_checkpoint)], "built with"),
        (["index", "add", str(tmp_path / "idx"), "--backend", "onnx", "--model", str(folder), "--device", "cuda"],
         "runs on the CPU"),
        (["embed", str(image_dir), "--backend", "onnx", "--model", str(folder), "--precision", "fp16"], "fp32 or int8"),
        (["classify", str(image_dir), "--backend", "onnx", "--model", str(tmp_path), "--labels", "a,b"],
         "not an exported clipworks folder"),
        (["embed", str(image_dir), "--backend", "tf", "--model", str(folder)], "backend 'tf'"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and message in r.output, (args, r.output)
    r = runner.invoke(app, ["search", str(tmp_path / "idx"), "a cat", "--backend", "onnx", "--model", str(folder),
                            "--precision", "int8", "--json", "-k", "2"])
    assert r.exit_code == 0, r.output
    from clipworks.search import search

    with Index.open(tmp_path / "idx", encoder=OnnxEncoder.load(folder, precision="int8", threads=1)) as index:
        want = search(index, "a cat", k=2).hits  # the int8 graphs answered, not the fp32 ones
    got = json.loads(r.stdout)["hits"]
    assert [h["id"] for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-6)


# -- refusals --------------------------------------------------------------------------------------------------------

def _edited(folder: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    data = json.loads((copy / MANIFEST).read_text())
    for key, value in changes.items():
        if key == "image_size":
            data["preprocess"]["image_size"] = value
        else:
            data[key] = value
    (copy / MANIFEST).write_text(json.dumps(data))
    return copy


def test_an_altered_graph_is_refused_naming_it(folder, tmp_path):
    copy = tmp_path / "altered"
    shutil.copytree(folder, copy)
    data = bytearray((copy / "text.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "text.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"text\.onnx: its sha256 does not match"):
        OnnxEncoder.load(copy)
    shutil.copyfile(folder / "text.onnx", copy / "text.onnx")
    (copy / "image.int8.onnx").write_bytes(b"truncated")
    assert OnnxEncoder.load(copy).precision == "fp32"  # only the graphs it runs are hashed (large models: seconds)
    with pytest.raises(PackageError, match=r"image\.int8\.onnx: its sha256 does not match"):
        OnnxEncoder.load(copy, precision="int8")
    (copy / "text.onnx").unlink()
    with pytest.raises(PackageError, match=r"text\.onnx is missing"):
        OnnxEncoder.load(copy)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"version": 2}, "format version 2"),
    ({"opset": 999}, "opset 999, newer than onnxruntime"),
    ({"embed_dim": 32, "model": None}, "embed_dim is 32"),
    ({"image_size": 48}, r"\[N, 3, 48, 48\]"),
    ({"context_length": 100}, "caption of the context length 100"),
])
def test_a_folder_that_disagrees_with_its_graphs_is_refused(folder, tmp_path, changes, reason):
    if changes.get("model", 0) is None:
        changes["model"] = {**Package.read(folder).model, "embed_dim": changes["embed_dim"]}
    with pytest.raises(PackageError, match=reason):
        OnnxEncoder.load(_edited(folder, tmp_path, **changes))


def test_bad_requests_are_refused(folder, sigmoid_folder, tmp_path, monkeypatch):
    with pytest.raises(PackageError, match="no int8 image graph"):
        OnnxEncoder.load(sigmoid_folder, precision="int8")
    with pytest.raises(UsageError, match="fp32 or int8"):
        OnnxEncoder.load(folder, precision="fp16")
    with pytest.raises(PackageError, match="not an exported clipworks folder"):
        OnnxEncoder.load(tmp_path)
    with pytest.raises(UsageError, match="pretrained"):
        load_encoder(str(folder), "laion2b", backend="onnx")
    with pytest.raises(UsageError, match="backend 'tf'"):
        load_encoder(str(folder), backend="tf")
    assert isinstance(load_encoder(str(folder), backend="onnx", threads=1), OnnxEncoder)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"clipworks\[runtime\]"):
        OnnxEncoder.load(folder)


# -- without torch ---------------------------------------------------------------------------------------------------

BLOCKER = """
import sys

BLOCKED = {blocked!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed in this test (torch-free runtime)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""

TORCH_FREE_API = """
import json, sys
from pathlib import Path
import numpy as np
import clipworks
from clipworks.search import Index, search
from clipworks.zeroshot import classify

folder, images, work = map(Path, sys.argv[1:4])
encoder = clipworks.load_encoder(str(folder), backend="onnx", threads=1)
np.save(work / "api_text.npy", encoder.encode_text({texts!r}))
files = encoder.encode_files(sorted(p for p in images.rglob("*") if p.is_file()))
np.save(work / "api_files.npy", files.features)
predictions = classify(encoder, files.paths, {names!r}, k=2)
with Index.create(work / "api-idx", images, encoder) as index:
    index.add()
    hits = [h.id for h in search(index, "a photo of a cat", k=4).hits]
from fastapi.testclient import TestClient
from clipworks.serve import create_app
with TestClient(create_app(None, encoder)) as client:
    served = client.post("/embed/text", json={{"texts": ["a cat"]}}).json()["embeddings"]
assert "torch" not in sys.modules and "onnx" not in sys.modules
json.dump({{"labels": [list(p.labels) for p in predictions], "paths": [str(p) for p in files.paths],
           "hits": hits, "served": served}}, open(work / "api.json", "w"))
"""


def test_the_runtime_runs_without_torch(folder, tiny_encoder, image_dir, tmp_path):
    """The Python API, the CLI and the service in processes where importing torch (and the reference libraries,
    the exporter's onnx, matplotlib, huggingface_hub) raises ImportError, compared with the torch model."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=BLOCKED))
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(src)]), "OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120,
                           check=False, cwd=work)
        assert r.returncode == 0 or not ok, f"{args}\n{r.stdout}\n{r.stderr}"
        return r

    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env,
                           check=False)
    assert probe.returncode != 0 and "not installed in this test" in probe.stderr  # the blocker works

    (work / "api.py").write_text(TORCH_FREE_API.format(texts=TEXTS, names=NAMES))
    run("api.py", str(folder), str(image_dir), str(work))
    api = json.loads((work / "api.json").read_text())
    np.testing.assert_allclose(np.load(work / "api_text.npy"), tiny_encoder.encode_text(TEXTS), atol=ATOL)
    files = tiny_encoder.encode_files(sorted(p for p in image_dir.rglob("*") if p.is_file()))
    assert api["paths"] == [str(p) for p in files.paths]
    np.testing.assert_allclose(np.load(work / "api_files.npy"), files.features, atol=ATOL)
    want = classify(tiny_encoder, files.paths, NAMES, k=2)
    assert api["labels"] == [list(p.labels) for p in want]
    np.testing.assert_allclose(api["served"], tiny_encoder.encode_text(["a cat"]), atol=ATOL)

    cli = ("-m", "clipworks")
    onnx = ("--backend", "onnx", "--model", str(folder))
    r = run(*cli, "embed", str(image_dir), *onnx, "--out", "images.npy", "--workers", "1")
    assert "skipped 3 unreadable" in r.stderr
    assert (work / "images.paths.txt").read_text().splitlines() == [str(p) for p in files.paths]
    np.testing.assert_allclose(np.load(work / "images.npy"), files.features, atol=ATOL)
    (work / "captions.txt").write_text("\n".join(TEXTS[:4]) + "\n")
    run(*cli, "embed", "--text", "captions.txt", *onnx, "--out", "captions.npy")
    np.testing.assert_allclose(np.load(work / "captions.npy"), tiny_encoder.encode_text(TEXTS[:4]), atol=ATOL)
    r = run(*cli, "classify", str(image_dir), *onnx, "--labels", ",".join(NAMES), "-k", "2", "--json")
    got = json.loads(r.stdout)
    assert [[t["label"] for t in p["top_k"]] for p in got["predictions"]] == [list(p.labels) for p in want if p.ok]
    assert len(got["skipped"]) == 3

    with Index.create(tmp_path / "torch-idx", image_dir, tiny_encoder) as index:  # the torch model's index
        index.add()
        want_hits = [Path(h.file) for h in index_search(index, "a photo of a cat")]
    r = run(*cli, "search", str(tmp_path / "torch-idx"), "a photo of a cat", *onnx, "-k", "4", "--paths")
    assert [Path(p) for p in r.stdout.splitlines()] == want_hits
    r = run(*cli, "search", str(tmp_path / "torch-idx"), "a photo of a cat", ok=False)  # the recorded torch model
    assert r.returncode == 1 and "needs torch" in r.stderr and "--backend onnx" in r.stderr
    run(*cli, "index", "build", str(image_dir), "--index", "cli-idx", *onnx, "--workers", "1")
    r = run(*cli, "search", "cli-idx", "a photo of a cat", *onnx, "-k", "4", "--paths")
    assert [Path(p) for p in r.stdout.splitlines()] == want_hits
    (image_dir / "sub" / "copy.png").write_bytes((image_dir / "sub" / "rocket.png").read_bytes())
    r = run(*cli, "index", "add", "cli-idx", *onnx)
    assert "5 items" in r.stdout
    r = run(*cli, "demo", "--out", "demo-run", ok=False)  # a command of the torch extra: one line naming the extra
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs torch" in r.stderr and "pip install 'clipworks[torch]'" in r.stderr
    r = run("-c", "import clipworks; clipworks.create_model('ViT-B-32')", ok=False)
    assert "MissingDependencyError: clipworks.create_model needs torch" in r.stderr


def index_search(index: Index, query: str):
    from clipworks.search import search

    return search(index, query, k=4).hits
