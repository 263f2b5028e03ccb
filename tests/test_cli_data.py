"""``clipworks data``: any source → WebDataset shards or open_clip's CSV, read back identically."""

import gzip
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipworks.cli import app
from clipworks.data import open_source

runner = CliRunner()


def make_idx_dir(d: Path, n: int = 30) -> Path:
    d.mkdir()
    rs = np.random.RandomState(0)
    for split in ("train", "t10k"):
        images, labels = rs.randint(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10
        for kind, a in (("images-idx3", images), ("labels-idx1", labels)):
            raw = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
            (d / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(raw))
    return d


def same_samples(a, b) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a.get(i), b.get(i)
        assert x.captions == y.captions and x.label == y.label
        assert x.image.mode == y.image.mode and np.array_equal(np.asarray(x.image), np.asarray(y.image))


def test_shards_round_trip(tmp_path):
    src_dir = make_idx_dir(tmp_path / "fm")
    out = tmp_path / "wds"
    r = runner.invoke(app, ["data", str(src_dir), str(out), "--shard-size", "8", "--split", "test"])
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt"] + [f"shard-00000{i}.tar" for i in range(4)]
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert tar.getnames()[:3] == ["00000000.png", "00000000.txt", "00000000.json"]
    back = open_source(out)
    same_samples(open_source(src_dir, split="test"), back)
    assert back.class_names == open_source(src_dir).class_names
    wds = pytest.importorskip("webdataset")  # and webdataset's own reader agrees
    streamed = list(wds.WebDataset(str(out / "shard-{000000..000003}.tar"), shardshuffle=False).decode("pil"))
    assert [s["txt"].splitlines() for s in streamed] == [list(back.get(i).captions) for i in range(30)]
    assert [s["json"]["label"] for s in streamed] == [back.get(i).label for i in range(30)]
    r = runner.invoke(app, ["data", str(src_dir), str(out)])
    assert r.exit_code == 1 and "already holds" in r.stderr


def test_csv_round_trip_and_skips_reported(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    rs = np.random.RandomState(1)
    for i in range(5):
        Image.fromarray(rs.randint(0, 256, (9, 7, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"caption {i}\nsecond {i}\n")
    (folder / "2.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "csv"
    r = runner.invoke(app, ["data", str(folder), str(out), "--format", "csv", "--limit", "4"])
    assert r.exit_code == 0, r.stderr
    assert "skipped 1 unreadable" in r.stderr and "2.png" in r.stderr
    rows = (out / "data.csv").read_text().splitlines()
    assert rows[0] == "filepath,title" and len(rows) == 4  # 4 taken, 1 skipped; no labels in this source
    back = open_source(out / "data.csv")
    assert [back.get(i).captions[0] for i in range(3)] == ["caption 0", "second 1", "second 3"]
    assert np.array_equal(np.asarray(back.get(2).image), np.asarray(Image.open(folder / "3.png")))
    # the shards of the same folder read back with every caption
    r = runner.invoke(app, ["data", str(folder), str(tmp_path / "wds"), "--workers", "2"])
    assert r.exit_code == 0, r.stderr
    assert open_source(tmp_path / "wds").get(3).captions == ("caption 4", "second 4")


def test_bad_source_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["data", str(tmp_path / "nope.csv"), str(tmp_path / "out")])
    assert r.exit_code == 1 and "nope.csv" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
