"""Evaluation suites: metrics against brute-force numpy on the same embeddings, loaders against their formats
(and torchvision's ImageFolder), zero-shot against the trainer's own evaluation, the linear probe's C selection
blind to the test split, and the CLI's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import write_fashion_mnist
from typer.testing import CliRunner

from clipworks.cli import app
from clipworks.data import FASHION_MNIST_TEMPLATES, DataError, open_source
from clipworks.data.fashion_mnist import ENV_VAR
from clipworks.encoder import Encoder
from clipworks.errors import ClipworksError, MissingFileError, UsageError
from clipworks.evaluate import (
    caption_folder,
    caption_table,
    csv_labels,
    encode_labelled,
    evaluate_linear_probe,
    evaluate_retrieval,
    evaluate_zeroshot,
    fashion_mnist,
    image_folder,
    linear_probe,
    open_labelled,
    recall_at_k,
    top_k,
    zeroshot_metrics,
)
from clipworks.evaluate.linear_probe import C_GRID, SEARCH_STEPS, fit_logistic, select_c, split_validation
from clipworks.evaluate.report import to_markdown, write_report

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- retrieval


def brute_force_recall(images: np.ndarray, texts: np.ndarray, owner: np.ndarray, ks) -> dict[str, float]:
    """The full score matrix, a stable argsort (ties to the lower index), CLIP_benchmark's definitions."""
    scores = texts.astype(np.float32) @ images.astype(np.float32).T
    t2i = np.argsort(-scores, axis=1, kind="stable")
    i2t = np.argsort(-scores.T, axis=1, kind="stable")
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float(np.mean([owner[t] in t2i[t, :k] for t in range(len(texts))]))
        hits = [bool(np.isin(np.flatnonzero(owner == i), i2t[i, :k]).any()) for i in range(len(images)) if (owner == i).any()]
        out[f"text_retrieval_recall@{k}"] = float(np.mean(hits))
    return out


def test_top_k_equals_stable_argsort_with_ties_across_chunks():
    rs = np.random.RandomState(0)
    # Entries in quarters over 8 dims: every dot product is exact in float32, and most scores tie.
    queries = rs.randint(-2, 3, (23, 8)).astype(np.float32) / 4
    candidates = rs.randint(-2, 3, (41, 8)).astype(np.float32) / 4
    candidates[30] = candidates[3]  # an exact duplicate in another chunk
    want = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")
    for chunk in (1, 4, 7, 64):
        for k in (1, 5, 17, 41, 99):
            np.testing.assert_array_equal(top_k(queries, candidates, k, chunk=chunk), want[:, :min(k, 41)])


def test_recall_at_k_matches_brute_force_with_ties_and_several_captions():
    rs = np.random.RandomState(1)
    images = rs.randint(-1, 2, (30, 6)).astype(np.float32) / 2  # coarse: many tied scores
    owner = np.concatenate([np.arange(28), rs.randint(0, 28, 40)])  # 1–4 captions each; images 28, 29 have none
    texts = images[owner] + rs.randint(-1, 2, (len(owner), 6)).astype(np.float32) / 2
    ks = (1, 5, 10, 100)
    want = brute_force_recall(images, texts, owner, ks)
    for chunk in (3, 8, 1000):
        assert recall_at_k(images, texts, owner, ks, chunk=chunk) == want
    assert want["image_retrieval_recall@100"] == want["text_retrieval_recall@100"] == 1.0
    assert 0 < want["image_retrieval_recall@1"] < 1


def test_recall_at_k_on_random_embeddings():
    rs = np.random.RandomState(2)
    images = rs.randn(300, 32).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    owner = np.repeat(np.arange(300), 5)  # COCO-style: five captions per image
    texts = images[owner] + 0.9 * rs.randn(1500, 32).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    got = recall_at_k(images, texts, owner, (1, 5, 10), chunk=128)
    assert got == brute_force_recall(images, texts, owner, (1, 5, 10))
    assert got["text_retrieval_recall@1"] > got["image_retrieval_recall@1"]  # five chances beat one


def test_recall_at_k_refuses_bad_input():
    x = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(UsageError, match="caption_image must index the 3 images"):
        recall_at_k(x, x, [0, 1, 3])
    with pytest.raises(UsageError, match="NaN"):
        recall_at_k(x * np.nan, x, [0, 1, 2])
    with pytest.raises(UsageError, match=">= 1"):
        recall_at_k(x, x, [0, 1, 2], ks=(0, 1))


# ------------------------------------------------------------------------------------------------ zero-shot


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # class 6: predicted, never true
def test_zeroshot_metrics_match_numpy_and_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    rs = np.random.RandomState(3)
    features = rs.randn(230, 16).astype(np.float32)
    classifier = rs.randn(16, 7).astype(np.float32)
    labels = rs.randint(0, 6, 230)  # class 6 has no images: its recall is undefined, not 0
    got = zeroshot_metrics(features, labels, classifier, batch_size=50)
    logits = features @ classifier
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert got["acc1"] == pytest.approx((pred == labels).mean(), abs=0)
    assert got["acc5"] == pytest.approx((top5 == labels[:, None]).any(1).mean(), abs=0)
    assert got["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-12)
    assert got["per_class_recall"][6] is None
    want = np.zeros((7, 7), dtype=np.int64)
    np.add.at(want, (labels, pred), 1)
    np.testing.assert_array_equal(got["confusion"], want)
    assert zeroshot_metrics(features, labels % 3, classifier[:, :3])["acc5"] is None  # under 5 classes


@pytest.fixture()
def fake_fashion(tmp_path, monkeypatch) -> Path:
    """Fashion-MNIST-format files; the test split spans three of the trainer's 500-image evaluation batches."""
    folder = write_fashion_mnist(tmp_path / "fm", n_train=120, n_test=1100)
    monkeypatch.setenv(ENV_VAR, str(folder))
    return folder


@pytest.fixture()
def small_fashion(tmp_path, monkeypatch) -> Path:
    folder = write_fashion_mnist(tmp_path / "fm", n_train=120, n_test=60)
    monkeypatch.setenv(ENV_VAR, str(folder))
    return folder


def test_zeroshot_equals_the_trainers_evaluation(fake_fashion, tiny_encoder):
    from clipworks.train.loop import zeroshot_eval

    templates = list(FASHION_MNIST_TEMPLATES)
    dataset = open_labelled("fashion-mnist", split="test")
    assert dataset.templates == FASHION_MNIST_TEMPLATES and len(dataset) == 1100
    got = evaluate_zeroshot(tiny_encoder, dataset, single_template="a photo of a {}.")
    # The trainer reads the same files in a shuffled order, in its own loader: same counts, image for image.
    want = zeroshot_eval(tiny_encoder.model, open_source("fashion-mnist", split="test"), templates, None, seed=0,
                         device=torch.device("cpu"))
    assert got["templates"] == templates
    np.testing.assert_array_equal(np.array(got["confusion"]), want.confusion.numpy())
    assert got["metrics"]["acc1"] == want.top1 and got["metrics"]["acc5"] == want.top5 and got["n"] == want.n
    single = zeroshot_eval(tiny_encoder.model, open_source("fashion-mnist", split="test"), ["a photo of a {}."], None,
                           seed=3, device=torch.device("cpu"))
    assert got["single_template"]["metrics"]["acc1"] == single.top1
    per_class = want.per_class_accuracy.numpy()
    assert got["metrics"]["mean_per_class_recall"] == pytest.approx(float(np.nanmean(per_class)), abs=1e-12)


def test_zeroshot_refuses_unnamed_and_duplicate_classes(tmp_path, tiny_encoder):
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "ids.csv").write_text("filepath,label\n0.png,0\n1.png,1\n")
    with pytest.raises(UsageError, match="class names"):
        evaluate_zeroshot(tiny_encoder, csv_labels(tmp_path / "ids.csv"), "simple")
    (tmp_path / "names.txt").write_text("cat\ncat\n")
    with pytest.raises(UsageError, match="names.txt: duplicate class names 'cat' ×2"):
        csv_labels(tmp_path / "ids.csv", class_names=tmp_path / "names.txt")
    with pytest.raises(UsageError, match="template"):
        evaluate_zeroshot(tiny_encoder, csv_labels(tmp_path / "ids.csv", class_names=_write(tmp_path / "n.txt", "a\nb\n")),
                          ["no slot"])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def class_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for c, name in enumerate(["ankle_boot", "bag", "coat"]):
        for i in range(3 + c):
            sub = root / name / ("nested" if i == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 12), (40 * c, 20 * i, 0)).save(sub / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / ".hidden").mkdir()
    Image.new("RGB", (4, 4)).save(root / "loose.png")
    return root


def test_image_folder_matches_torchvision(class_tree):
    from torchvision.datasets import ImageFolder

    data = image_folder(class_tree)  # skips the hidden folder, which torchvision would take as a class
    (class_tree / ".hidden").rmdir()
    reference = ImageFolder(str(class_tree))
    assert data.class_names == ["ankle boot", "bag", "coat"]
    assert [(str(p), int(y)) for p, y in zip(data.paths, data.labels)] == reference.samples
    assert "1 images outside class folders ignored" in data.description
    renamed = image_folder(class_tree, _write(class_tree.parent / "names.txt", "boot\nhandbag\njacket\n"))
    assert renamed.class_names == ["boot", "handbag", "jacket"]
    mapped = image_folder(class_tree, _write(class_tree.parent / "names.json", json.dumps(
        {"ankle_boot": "boot", "bag": "bag", "coat": "coat"})))
    assert mapped.class_names == ["boot", "bag", "coat"]
    with pytest.raises(DataError, match="2 class names for 3 class folders"):
        image_folder(class_tree, _write(class_tree.parent / "short.txt", "a\nb\n"))
    (class_tree / "empty").mkdir()
    with pytest.raises(DataError, match="without images: 'empty'"):
        image_folder(class_tree)
    with pytest.raises(MissingFileError, match="nowhere"):
        open_labelled(class_tree / "nowhere")


def test_csv_labels_names_ids_and_bad_rows(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    data = csv_labels(_write(tmp_path / "a.csv", "file,species\n0.png,dog\n1.png,cat\n2.png,dog\n"), label_key="species")
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [1, 0, 1] and data.named
    assert data.paths == [tmp_path / "0.png", tmp_path / "1.png", tmp_path / "2.png"]
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    ids = csv_labels(_write(tmp_path / "b.csv", "filepath,label\n0.png,2\n3.png,0\n"))
    assert ids.class_names == ["cat", "dog", "bird"] and ids.labels.tolist() == [2, 0]
    bad = {
        "filepath,label\n0.png,1\n1.png\n": "line 3: 1 fields",
        "filepath,label\n0.png,1\n1.png,\n": "line 3: empty 'label'",
        "filepath,label\n0.png,1\nmissing.png,0\n": "line 3: image .*missing.png does not exist",
        "filepath,label\n0.png,7\n": "line 2: label 7 is outside 0..2",
        "path,y\n0.png,1\n": "no column 'label'",
        "filepath,label\n0.png,fish\n": "line 2: label 'fish' is not one of the 3 classes",
    }
    for i, (text, message) in enumerate(bad.items()):
        with pytest.raises(ClipworksError, match=message) as e:
            csv_labels(_write(tmp_path / f"bad{i}.csv", text))
        assert f"bad{i}.csv" in str(e.value)
    with pytest.raises(MissingFileError, match="nope.csv"):
        open_labelled(tmp_path / "nope.csv")


def test_caption_table_groups_captions_per_image(tmp_path):
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    csv = caption_table(_write(tmp_path / "c.csv", "image,caption\na.png,a red  thing\nb.png,blue\na.png,also a\n"))
    assert csv.images == [tmp_path / "a.png", tmp_path / "b.png"]
    assert csv.captions == ["a red thing", "blue", "also a"] and csv.caption_image.tolist() == [0, 1, 0]
    jsonl = caption_table(_write(tmp_path / "c.jsonl", '{"image": "a.png", "captions": ["one", "two"]}\n\n'
                                 '{"image": "b.png", "captions": "three"}\n'))
    assert jsonl.captions == ["one", "two", "three"] and jsonl.caption_image.tolist() == [0, 0, 1]
    with pytest.raises(MissingFileError, match=r"c2.csv line 3: image .*gone.png does not exist"):
        caption_table(_write(tmp_path / "c2.csv", "filepath,title\na.png,x\ngone.png,y\n"))
    with pytest.raises(DataError, match="c3.jsonl line 2: not a JSON object"):
        caption_table(_write(tmp_path / "c3.jsonl", '{"image": "a.png", "caption": "x"}\n{oops\n'))
    with pytest.raises(DataError, match="c4.csv line 2: empty caption"):
        caption_table(_write(tmp_path / "c4.csv", "filepath,title\na.png, \n"))
    with pytest.raises(DataError, match="no caption column"):
        caption_table(_write(tmp_path / "c5.csv", "filepath,words\na.png,x\n"))


def test_caption_folder_reads_sidecars(tmp_path):
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "a.txt").write_text("first\nsecond\n")
    (tmp_path / "b.txt").write_text("third\n")
    data = caption_folder(tmp_path)
    assert data.captions == ["first", "second", "third"] and data.caption_image.tolist() == [0, 0, 1]
    assert data.left_out == [tmp_path / "c.png"]


def test_retrieval_with_encoder_skips_unreadable_images(tmp_path, tiny_encoder, photos):
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    rows = ["filepath,title"]
    for name in names:
        photos[name].resize((48, 40)).save(tmp_path / f"{name}.png")
        rows += [f"{name}.png,a photo of the {name}", f"{name}.png,{name}"]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows.append("broken.png,nothing")
    pairs = caption_table(_write(tmp_path / "pairs.csv", "\n".join(rows) + "\n"))
    got = evaluate_retrieval(tiny_encoder, pairs, ks=(1, 2), chunk=3)
    assert got["n_images"] == 4 and got["n_captions"] == 8 and len(got["skipped"]) == 1 and "broken.png" in got["skipped"][0]
    images = tiny_encoder.encode_files([tmp_path / f"{n}.png" for n in names]).features
    texts = tiny_encoder.encode_text([c for n in names for c in (f"a photo of the {n}", n)])
    assert got["metrics"] == brute_force_recall(images, texts, np.repeat(np.arange(4), 2), (1, 2))


# --------------------------------------------------------------------------------------------- linear probe


def blobs(n: int, seed: int, classes: int = 4, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    centres = np.random.RandomState(99).randn(classes, dim) * 3
    labels = np.arange(n) % classes
    return (centres[labels] + rs.randn(n, dim)).astype(np.float32), labels


def test_linear_probe_learns_and_picks_c_without_seeing_test():
    x, y = blobs(200, 0)
    tx, ty = blobs(120, 1)
    steps: list[int] = []
    got = linear_probe(x, y, tx, ty, val_fraction=0.25, max_iter=100, progress=steps.append)
    assert sum(steps) == SEARCH_STEPS + 1  # a progress bar's total is known in advance
    assert got["metrics"]["acc1"] > 0.9  # chance is 1/4
    assert got["metrics"]["acc5"] is None and got["validation"]["n_val"] == 50
    search = {float(c): acc for c, acc in got["validation"]["search"].items()}
    assert set(C_GRID[::16]) <= set(search) and len(search) <= 15  # the binary search, not the whole grid
    assert search[got["C"]] == max(search.values())
    # The same choice with a test split of garbage: selection never looks at it.
    noise = np.random.RandomState(5).randn(*tx.shape).astype(np.float32) * 100
    other = linear_probe(x, y, noise, (ty + 1) % 4, val_fraction=0.25, max_iter=100)
    assert other["C"] == got["C"] and other["validation"] == got["validation"]
    fit, val = split_validation(y, 0.25)
    assert len(set(fit) | set(val)) == 200 and not set(fit) & set(val)
    assert sorted(np.bincount(y[val])) == [12, 12, 13, 13]  # stratified: 50 of 200, a quarter of each class
    # The reported test score is scikit-learn's own, refit on train + validation at that C.
    model, _ = fit_logistic(x, y, got["C"], max_iter=100)
    assert got["metrics"]["acc1"] == pytest.approx(model.score(tx, ty), abs=1e-12)


def test_linear_probe_explicit_grid_prefers_stronger_regularisation_on_ties():
    x, y = blobs(80, 2, classes=2)
    best, tried, _ = select_c(x[:60], y[:60], x[60:], y[60:], cs=[10.0, 1.0, 100.0])
    assert sorted(tried) == [1.0, 10.0, 100.0]
    assert best == min(c for c, acc in tried.items() if acc == max(tried.values()))


def test_linear_probe_with_encoder_and_features_cache(small_fashion, tiny_encoder, tiny_sigmoid_checkpoint, tmp_path,
                                                      monkeypatch):
    train, test = fashion_mnist("train"), fashion_mnist("test")
    cache = tmp_path / "features.npz"
    got = evaluate_linear_probe(tiny_encoder, train, test, cs=[1.0, 100.0], features_cache=cache)
    assert got["n_train"] == 120 and got["n"] == 60 and cache.is_file()
    # Bright bands at class-dependent rows: even random features separate them far above chance.
    assert got["metrics"]["acc1"] > 0.5

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("clipworks.evaluate.features.encode_labelled", no_encoding)
    again = evaluate_linear_probe(tiny_encoder, train, test, cs=[1.0, 100.0], features_cache=cache)
    assert again["metrics"] == got["metrics"]
    with pytest.raises(UsageError, match="holds features of"):
        evaluate_linear_probe(tiny_encoder, test, test, cs=[1.0], features_cache=cache)
    other = Encoder.load(str(tiny_sigmoid_checkpoint))
    with pytest.raises(UsageError, match=r"was made by .*tiny-vit .*not .*tiny-vit-sigmoid"):
        evaluate_linear_probe(other, train, test, cs=[1.0], features_cache=cache)
    cache.write_bytes(b"not an npz")
    with pytest.raises(UsageError, match="features.npz cannot be read"):
        evaluate_linear_probe(tiny_encoder, train, test, cs=[1.0], features_cache=cache)


# ---------------------------------------------------------------------------------------------- report, CLI


def test_report_json_is_strict_and_markdown_has_the_numbers(tmp_path):
    result = {"task": "zeroshot", "dataset": {"name": "x"}, "n": 3, "templates": ["a {}."],
              "metrics": {"acc1": 0.5, "acc5": float("nan"), "mean_per_class_recall": np.float64(0.25)},
              "single_template": {"template": "b {}.", "metrics": {"acc1": 0.25, "acc5": None,
                                                                 "mean_per_class_recall": 0.2}}}
    json_path, md_path = write_report(result, tmp_path / "out", "r", {"batch_size": 4})
    saved = json.loads(json_path.read_text())
    assert saved["metrics"]["acc5"] is None and saved["settings"] == {"batch_size": 4}
    md = md_path.read_text()
    assert "| top-1 | 50.00% | 25.00% |" in md and "batch_size=4" in md
    assert to_markdown(saved) == md


def test_cli_zeroshot_writes_json_markdown_and_plot(small_fashion, tiny_checkpoint, tmp_path):
    out = tmp_path / "res"
    r = runner.invoke(app, ["eval", "zeroshot", "--model", str(tiny_checkpoint), "--dataset", "fashion-mnist",
                            "--compare-single", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    saved = json.loads((out / "zeroshot_fashion-mnist-test.json").read_text())
    assert saved["n"] == 60 and saved["templates"] == list(FASHION_MNIST_TEMPLATES)
    assert "sha256" in saved["model"]["describe"] and saved["settings"]["split"] == "test"
    assert set(saved["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert saved["single_template"]["template"] == "a photo of a {}."
    assert (out / "zeroshot_fashion-mnist-test.md").read_text() in r.stdout
    assert (out / "zeroshot_fashion-mnist-test_confusion.png").stat().st_size > 0
    r = runner.invoke(app, ["eval", "zeroshot", "--model", str(tiny_checkpoint), "--dataset", "fashion-mnist",
                            "--templates", "a grey photo of a {}.", "--no-plot", "--out", str(out)])
    assert r.exit_code == 0, r.stderr  # one template with {}, as `clipworks classify --templates` takes it
    assert json.loads((out / "zeroshot_fashion-mnist-test.json").read_text())["templates"] == ["a grey photo of a {}."]


def test_cli_retrieval_and_linear_probe(small_fashion, tiny_checkpoint, tmp_path, photos):
    for name in ("astronaut", "coffee"):
        photos[name].resize((40, 40)).save(tmp_path / f"{name}.jpg")
    _write(tmp_path / "pairs.csv", "filepath,title\nastronaut.jpg,a person\ncoffee.jpg,a cup\ncoffee.jpg,coffee\n")
    r = runner.invoke(app, ["eval", "retrieval", "-m", str(tiny_checkpoint), "-d", str(tmp_path / "pairs.csv"),
                            "--ks", "1,2", "--out", str(tmp_path / "res")])
    assert r.exit_code == 0, r.stderr
    saved = json.loads((tmp_path / "res" / "retrieval_pairs.json").read_text())
    assert saved["n_images"] == 2 and saved["metrics"]["image_retrieval_recall@2"] == 1.0
    r = runner.invoke(app, ["eval", "linear-probe", "-m", str(tiny_checkpoint), "-d", "fashion-mnist", "--c", "1",
                            "--out", str(tmp_path / "res")])
    assert r.exit_code == 0, r.stderr
    saved = json.loads((tmp_path / "res" / "linear-probe_fashion-mnist-test.json").read_text())
    assert saved["C"] == 1.0 and saved["n_train"] == 120 and "C = 1 chosen" in r.stdout


def test_cli_errors_are_one_line(tmp_path, tiny_checkpoint):
    r = runner.invoke(app, ["eval", "zeroshot", "-m", str(tiny_checkpoint), "-d", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "missing: no such file or directory" in r.stderr
    r = runner.invoke(app, ["eval", "linear-probe", "-m", str(tiny_checkpoint), "--train", str(tmp_path)])
    assert r.exit_code == 1 and "--train and --test" in r.stderr


def test_encode_labelled_skips_unreadable_files(tmp_path, tiny_encoder):
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"")
    data = csv_labels(_write(tmp_path / "l.csv", "filepath,label\n0.png,a\n1.png,b\n2.png,b\n"))
    got = encode_labelled(tiny_encoder, data, batch_size=2)
    assert got.labels.tolist() == [0, 1] and len(got.skipped) == 1 and "1.png" in got.skipped[0]
    np.testing.assert_allclose(got.features, tiny_encoder.encode_files([tmp_path / "0.png", tmp_path / "2.png"]).features,
                               atol=1e-6)
