"""Data sources, the deterministic loader and the batched transform — all from tiny files written here."""

import gzip
import io
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipworks import get_tokenizer
from clipworks.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_TEMPLATES,
    DataError,
    PairLoader,
    ShardWriter,
    open_source,
)
from clipworks.data.fashion_mnist import DEFAULT_DIR as FASHION_MNIST_DIR
from clipworks.data.openclipart import DEFAULT_DIR as OPENCLIPART_DIR
from clipworks.data.shards import expand_braces
from clipworks.image.decode import ImageError
from clipworks.image.transforms import ImageTransform, _seeded_uniforms

tokenizer = get_tokenizer()
SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="{w}" height="{h}">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
    <dc:creator><cc:Agent><dc:title>Someone Else</dc:title></cc:Agent></dc:creator>
  </cc:Work></rdf:RDF></metadata>
  <rect x="0" y="0" width="{w}" height="{h}" fill="{fill}"/>
</svg>
"""


def noise(seed: int, size=(12, 10), mode="RGB") -> Image.Image:
    rs = np.random.RandomState(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rs.randint(0, 256, shape, dtype=np.uint8))


def write_idx(path: Path, array: np.ndarray) -> None:
    """The real IDX layout: 0, 0, 0x08 (ubyte), ndim, big-endian sizes, then the bytes."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.fixture()
def idx_dir(tmp_path: Path) -> Path:
    """Train (gzipped, 40 images) and test (raw, 12 images) in IDX format; image i is filled with value i."""
    d = tmp_path / "fmnist"
    d.mkdir()
    for split, n, ext in (("train", 40, ".gz"), ("t10k", 12, "")):
        images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
        write_idx(d / f"{split}-images-idx3-ubyte{ext}", images)
        write_idx(d / f"{split}-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return d


@pytest.fixture()
def captioned_dir(tmp_path: Path) -> Path:
    """20 PNGs with sidecars; image i has captions 'thing i' and 'other i'."""
    d = tmp_path / "folder"
    (d / "sub").mkdir(parents=True)
    for i in range(20):
        stem = d / ("sub" if i % 2 else "") / f"img{i:02d}"
        noise(i).save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(f"thing {i}\n\n  other   {i}  \n")
    return d


# ---------------------------------------------------------------- sources


def test_csv_and_tsv_tables(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        noise(i).save(tmp_path / "imgs" / f"{i}.jpg")
    (tmp_path / "data.csv").write_text('filepath,title,label\nimgs/0.jpg,"a cat, sitting",1\nimgs/1.jpg,a dog,2\n'
                                       "imgs/0.jpg,the same cat,1\n")
    src = open_source(tmp_path / "data.csv")
    assert len(src) == 3 and src.get(0).captions == ("a cat, sitting",) and src.get(2).captions == ("the same cat",)
    assert src.get(1).label == 2 and src.get(1).image.size == (12, 10) and src.get(1).key.endswith("imgs/1.jpg")
    (tmp_path / "data.tsv").write_text(f"path\tcaption\n{tmp_path / 'imgs' / '2.jpg'}\ttab separated\n")
    src = open_source(tmp_path / "data.tsv", csv_img_key="path", csv_caption_key="caption")
    assert len(src) == 1 and src.get(0).captions == ("tab separated",) and src.get(0).label is None


def test_folder_with_sidecars(captioned_dir):
    noise(99).save(captioned_dir / "uncaptioned.png")
    (captioned_dir / ".hidden.png").write_bytes(b"")
    src = open_source(captioned_dir)
    assert len(src) == 20 and "1 without a .txt sidecar" in src.description
    pair = src.get(3)  # sorted by path: img00, img02, img04, img06, …, sub/img01, …
    assert pair.key == str(captioned_dir / "img06.png")
    assert pair.captions == ("thing 6", "other 6") and pair.label is None and pair.image.mode == "RGB"


def test_shards_from_our_writer_by_file_dir_and_pattern(tmp_path):
    with ShardWriter(tmp_path / "out", shard_size=4) as writer:
        for i in range(10):
            buf = io.BytesIO()
            noise(i, mode="L").save(buf, "PNG")
            writer.write(f"s{i:03d}", {"png": buf.getvalue(), "txt": f"caption {i}\nalt {i}\n".encode(),
                                       "json": json.dumps({"label": i % 3}).encode()})
    assert [p.name for p in writer.paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in writer.paths]  # no temp left
    by_dir = open_source(tmp_path / "out")
    by_pattern = open_source(str(tmp_path / "out" / "shard-{000000..000002}.tar"))
    assert len(by_dir) == len(by_pattern) == 10 and len(open_source(writer.paths[1])) == 4
    for i in (9, 0, 5):  # random access, any order
        pair = by_pattern.get(i)
        assert pair.captions == (f"caption {i}", f"alt {i}") and pair.label == i % 3
        assert np.array_equal(np.asarray(pair.image), np.asarray(noise(i, mode="L")))
        assert pair.key.endswith(f"shard-00000{i // 4}.tar/s{i:03d}")


def test_shards_from_webdataset_tarwriter(tmp_path):
    wds = pytest.importorskip("webdataset")
    webp = io.BytesIO()
    noise(1, (16, 16)).save(webp, "WEBP")
    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        sink.write({"__key__": "x/000", "jpg": noise(0, (16, 16)), "json": {"caption": "first", "other": 1}})
        sink.write({"__key__": "x/001", "webp": webp.getvalue(), "json": {"captions": ["second", "2nd"]},
                    "cls": 7})
        sink.write({"__key__": "x/002", "png": noise(2), "txt": "third"})
    src = open_source(tmp_path / "a.tar")
    assert [src.get(i).captions for i in range(3)] == [("first",), ("second", "2nd"), ("third",)]
    assert src.get(1).image.size == (16, 16) and src.get(0).label is None  # labels count only when all have one


def test_fashion_mnist_from_tiny_idx_files(idx_dir):
    train, test = open_source(idx_dir), open_source(idx_dir, split="test")
    assert len(train) == 40 and len(test) == 12 and train.class_names == list(FASHION_MNIST_CLASSES)
    pair = train.get(13)
    assert pair.label == 3 and pair.image.size == (28, 28) and np.asarray(pair.image).max() == 13
    assert pair.captions == tuple(t.format("dress") for t in FASHION_MNIST_TEMPLATES)
    images, captions, labels = train.get_batch([5, 13])
    assert images.shape == (2, 28, 28) and images.dtype == torch.uint8 and labels.tolist() == [5, 3]
    assert captions[0][0] == FASHION_MNIST_TEMPLATES[0].format("sandal")
    custom = open_source(idx_dir, templates=["{}"])
    assert custom.get(9).captions == ("ankle boot",)


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train, test = open_source("fashion-mnist"), open_source("fashion-mnist:test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.labels.min() == 0 and train.labels.max() == 9 and test.labels.bincount().tolist() == [1000] * 10


def have_svg_renderer() -> bool:
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        try:
            import cairosvg  # noqa: F401
        except (ImportError, OSError):
            return False
    return True


@pytest.mark.skipif(not have_svg_renderer(), reason="needs resvg-py or cairosvg")
def test_openclipart_svgs(tmp_path):
    d = tmp_path / "svg"
    (d / "animals").mkdir(parents=True)
    kws = "".join(f"<rdf:li>{k}</rdf:li>" for k in ["a CAT", "", "pet", "Pet", "black_cat"])
    (d / "animals" / "cat.svg").write_text(SVG.format(w=40, h=20, title="A  cat", keywords=kws, fill="#ff0000"))
    (d / "plain.svg").write_text(SVG.format(w=10, h=10, title="", keywords="", fill="#0000ff"))
    (d / "broken.svg").write_text("<svg><rect")
    (d / "link.svg").symlink_to(d / "plain.svg")  # Debian's package links duplicates across categories
    src = open_source(d, image_size=32)
    assert len(src) == 3
    by_name = {Path(src.files[i]).name: i for i in range(3)}
    cat = src.get(by_name["cat.svg"])
    assert cat.captions == ("A cat", "A cat, pet, black cat") and cat.image.size == (32, 32)
    pixels = np.asarray(cat.image)
    assert tuple(pixels[16, 16]) == (255, 0, 0) and tuple(pixels[1, 16]) == (255, 255, 255)  # 2:1 drawing, white bands
    assert src.get(by_name["plain.svg"]).captions == ("plain",)  # no title: the file name stands in
    with pytest.raises(ImageError, match="broken.svg"):
        src.get(by_name["broken.svg"])


@pytest.mark.skipif(not (have_svg_renderer() and OPENCLIPART_DIR.is_dir()), reason="Debian openclipart-svg not installed")
def test_real_openclipart():
    src = open_source("openclipart", image_size=64)
    assert len(src) > 7000  # 7458 distinct drawings; the package's symlinked duplicates count once
    pair = src.get(0)
    assert pair.image.size == (64, 64) and pair.captions[0] and pair.key.endswith(".svg")


# ---------------------------------------------------------------- bad input, at open time


def test_bad_tables_name_the_file_and_column(tmp_path):
    csv = tmp_path / "d.csv"
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "missing.csv")
    csv.write_text("")
    with pytest.raises(DataError, match=f"{csv} is empty"):
        open_source(csv)
    csv.write_text("filepath,title\n")
    with pytest.raises(DataError, match="no rows"):
        open_source(csv)
    csv.write_text("image,text\na.png,x\n")
    with pytest.raises(DataError, match=r"no column 'filepath' \(columns: 'image', 'text'\)"):
        open_source(csv)
    with pytest.raises(DataError, match="no column 'title'"):
        open_source(csv, csv_img_key="image")
    with pytest.raises(DataError, match=r"none of the first 1 files in column 'image' exist, e\.g\. .*a\.png"):
        open_source(csv, csv_img_key="image", csv_caption_key="text")


def test_bad_folders_shards_and_specs(tmp_path, idx_dir):
    folder = tmp_path / "nocaps"
    folder.mkdir()
    noise(0).save(folder / "a.png")
    with pytest.raises(DataError, match=f"{folder}: 1 images but no captions"):
        open_source(folder)
    with ShardWriter(tmp_path / "shards") as writer:
        writer.write("a", {"png": (folder / "a.png").read_bytes()})
    with pytest.raises(DataError, match=r"shards: 1 images but no captions \(e\.g\. .*shard-000000\.tar/a\)"):
        open_source(tmp_path / "shards")
    with pytest.raises(DataError, match=r"9 of 10 shards do not exist, e\.g\. .*shard-000001\.tar"):
        open_source(str(tmp_path / "shards" / "shard-{000000..000009}.tar"))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match="junk.tar"):
        open_source(tmp_path / "junk.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no samples"):
        open_source(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        open_source(tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown kind"):
        open_source(folder / "a.png")
    (folder / "a.txt").write_text("a caption")
    with pytest.raises(DataError, match="templates= only applies"):
        open_source(folder, templates=["{}"])
    (idx_dir / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: IDX header cut short"):
        open_source(idx_dir, split="test")
    assert expand_braces("a{1..3}{x,y}") == ["a1x", "a1y", "a2x", "a2y", "a3x", "a3y"]


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # looks like the folder, lacks the rest
    with pytest.raises(DataError) as e:
        open_source(tmp_path, split="test")
    assert "sudo apt-get install dataset-fashion-mnist" in str(e.value) and "/usr/share/datasets/fashion-mnist" in str(e.value)
    assert "t10k-images-idx3-ubyte" in str(e.value)


# ---------------------------------------------------------------- loader


def batches(loader: PairLoader, epoch: int, start: int = 0) -> list:
    return [(b.indices.tolist(), b.captions, b.images, b.tokens, b.labels) for b in loader.epoch(epoch, start)]


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[0] == y[0] and x[1] == y[1] and torch.equal(x[2], y[2]) and torch.equal(x[3], y[3])
        assert (x[4] is None and y[4] is None) or torch.equal(x[4], y[4])


def test_corrupt_images_are_skipped_and_counted(captioned_dir):
    truncated, deleted = captioned_dir / "img04.png", captioned_dir / "sub" / "img07.png"  # 2 of 40 = 5%
    truncated.write_bytes(truncated.read_bytes()[:40])
    for i in range(20, 40):
        noise(i).save(captioned_dir / f"more{i}.png")
        (captioned_dir / f"more{i}.txt").write_text(f"more {i}")
    src = open_source(captioned_dir)  # a corrupt image is not an open-time error
    deleted.unlink()  # nor one that vanishes mid-run
    loader = PairLoader(src, ImageTransform(16, train=True), tokenizer, batch_size=8, seed=1)
    seen, skipped = [], []
    for batch in loader.epoch(0):
        assert len(batch.images) == len(batch.tokens) == len(batch.indices) == len(batch.captions) == 8 - len(batch.skipped)
        seen += batch.indices.tolist()
        skipped += batch.skipped
    assert len(seen) == 38 and loader.skipped_total == 2 and len(set(seen)) == 38
    assert sorted(Path(s.split(" ")[0].rstrip(":")).name for s in skipped) == ["img04.png", "img07.png"]


def test_resume_mid_epoch_gives_the_same_batches_fast_path(idx_dir):
    src = open_source(idx_dir)
    loader = PairLoader(src, ImageTransform(28, train=True), tokenizer, batch_size=6, seed=3)
    assert len(loader) == 6
    full = batches(loader, 2)
    assert_same(batches(loader, 2, start=4), full[4:])
    assert batches(loader, 2, start=6) == []
    assert not torch.equal(full[0][2], batches(loader, 3)[0][2])  # another epoch, another order
    assert sorted(i for b in full for i in b[0]) == sorted(loader.indices(2, b).tolist()[j] for b in range(6) for j in range(6))


def test_array_sources_take_the_pil_path_when_the_batched_transform_cannot_match(idx_dir):
    """MobileCLIP's bilinear preprocessing (or a 'longest' resize) has no batched twin: the loader decodes per image,
    exactly as the model's own transform does, instead of failing in a worker."""
    src = open_source(idx_dir)
    for fields in ({"interpolation": "bilinear"}, {"resize_mode": "longest"}):
        transform = ImageTransform(20, **fields)
        assert not transform.batchable
        loader = PairLoader(src, transform, tokenizer, batch_size=4, seed=0)
        batch = next(iter(loader.epoch(0)))
        expected = torch.stack([transform(src.get(i).image) for i in batch.indices.tolist()])
        assert torch.equal(batch.images, expected) and batch.images.shape == (4, 3, 20, 20)


def test_resume_and_workers_give_the_same_batches_per_sample_path(captioned_dir):
    src = open_source(captioned_dir)
    inline = PairLoader(src, ImageTransform(16, train=True), tokenizer, batch_size=3, seed=5)
    pooled = PairLoader(src, ImageTransform(16, train=True), tokenizer, batch_size=3, seed=5, workers=2)
    full = batches(inline, 1)
    assert len(full) == 6
    assert_same(batches(pooled, 1, start=2), full[2:])
    assert_same(batches(pooled, 1), full)  # the persistent pool, re-positioned
    assert_same(batches(inline, 1, start=5), full[5:])


def test_two_ranks_partition_each_global_batch(idx_dir):
    src, transform = open_source(idx_dir), ImageTransform(28)
    single = PairLoader(src, transform, tokenizer, batch_size=8, seed=7)
    ranks = [PairLoader(src, transform, tokenizer, batch_size=4, seed=7, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for whole, r0, r1 in zip(single.epoch(0), *(r.epoch(0) for r in ranks)):
        assert r0.indices.tolist() + r1.indices.tolist() == whole.indices.tolist()
        assert torch.equal(torch.cat([r0.images, r1.images]), whole.images)
        assert r0.captions + r1.captions == whole.captions  # the draw depends on (seed, epoch, i), not the rank
    with pytest.raises(DataError, match="do not fill one global batch of 64"):
        PairLoader(src, transform, tokenizer, batch_size=32, world_size=2)
    partial = PairLoader(src, transform, tokenizer, batch_size=32, world_size=2, rank=1, drop_last=False)
    assert len(partial) == 1 and len(next(partial.epoch(0)).indices) == 20


def test_caption_draws_vary_by_epoch_and_repeat_by_seed(captioned_dir):
    src = open_source(captioned_dir)

    def draws(seed: int, epoch: int) -> dict[int, str]:
        loader = PairLoader(src, ImageTransform(8), tokenizer, batch_size=5, seed=seed)
        return {i: c for b in loader.epoch(epoch) for i, c in zip(b.indices.tolist(), b.captions)}

    a = draws(0, 0)
    assert a == draws(0, 0) and set(a) == set(range(20))
    assert all(c in src.captions[i] for i, c in a.items())
    assert 4 <= sum(c.startswith("thing") for c in a.values()) <= 16
    assert sum(a[i] != b for i, b in draws(0, 1).items()) >= 4
    assert sum(a[i] != b for i, b in draws(1, 0).items()) >= 4


# ---------------------------------------------------------------- batched transform


def test_tensor_batch_eval_matches_the_pil_path():
    rs = np.random.RandomState(0)
    grey = rs.randint(0, 256, (6, 28, 28), dtype=np.uint8)
    t = ImageTransform(28)
    ref = torch.stack([t(Image.fromarray(a)) for a in grey])
    assert (t.tensor_batch(torch.from_numpy(grey)) - ref).abs().max() <= 1e-5
    assert (t.tensor_batch(torch.from_numpy(grey)[:, None]) - ref).abs().max() <= 1e-5
    rgb = rs.randint(0, 256, (4, 3, 40, 30), dtype=np.uint8)
    for size in (20, 64):  # down and up: PIL's bicubic weights, so within one grey level of PIL
        t = ImageTransform(size)
        ref = torch.stack([t(Image.fromarray(a.transpose(1, 2, 0))) for a in rgb])
        levels = (t.tensor_batch(torch.from_numpy(rgb)) - ref).abs() * torch.tensor(t.std)[:, None, None] * 255
        assert levels.max() < 1.01 and (levels > 0.5).float().mean() < 0.01
    with pytest.raises(ValueError, match="uint8"):
        t.tensor_batch(torch.zeros(2, 8, 8))


def test_tensor_batch_train_crops_like_pil_and_per_sample():
    rs = np.random.RandomState(1)
    grey = rs.randint(0, 256, (32, 28, 28), dtype=np.uint8)
    t = ImageTransform(28, train=True, scale=(0.5, 1.0))
    seeds = np.arange(100, 132, dtype=np.uint64)
    out = t.tensor_batch(torch.from_numpy(grey), seeds=seeds)
    top, left, ch, cw = t._crop_boxes(_seeded_uniforms(seeds, 22), 28, 28)
    assert len(set(zip(top, left, ch, cw))) > 16 and (ch * cw).min() >= 0.5 * 28 * 28 * 0.95
    for i in range(32):  # the same crop box through PIL's crop + resize gives the same pixels
        box = (int(left[i]), int(top[i]), int(left[i] + cw[i]), int(top[i] + ch[i]))
        ref = t.normalize(Image.fromarray(grey[i]).crop(box).resize((28, 28), Image.Resampling.BICUBIC).convert("RGB"))
        assert (out[i] - ref).abs().max() <= 0.02, i  # a one-level rounding difference at most
    alone = t.tensor_batch(torch.from_numpy(grey[7:8]), seeds=seeds[7:8])
    assert torch.equal(alone[0], out[7])  # a sample's crop does not depend on its batch-mates
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(t.tensor_batch(torch.from_numpy(grey), g1), t.tensor_batch(torch.from_numpy(grey), g2))


def test_pil_train_crop_takes_a_per_call_rng():
    t = ImageTransform(16, train=True, scale=(0.3, 1.0))
    im = noise(0, (24, 24))
    assert torch.equal(t(im, rng=random.Random(4)), t(im, rng=random.Random(4)))
    assert not torch.equal(t(im, rng=random.Random(4)), t(im, rng=random.Random(5)))
