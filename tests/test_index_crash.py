"""Crash safety: an ``add`` killed with SIGKILL leaves an index that opens consistent, and the next ``add``
completes the work — the result equals a clean build."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo

import clipworks
from clipworks.search import Index, VectorIndex
from clipworks.search.index import CACHE_NAME

pytestmark = pytest.mark.usefixtures("one_thread")

# Opens the index and runs `add` (batches of 4 files) until a hook says the moment has come; then it writes
# MARKER and hangs, and the test SIGKILLs it. "embedding": two batches committed, the third being embedded.
# "cache": every row committed, the FAISS file written to its temp name but not yet renamed.
CHILD = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import faiss
from clipworks.search import Index, index as index_module
index_module.CACHE_SLACK = 0  # write the FAISS file after every add, so that there is a write to die in
index_dir, marker, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
index = Index.open(index_dir, writable=True)
index.encoder

def hang():
    marker.write_text("now")
    time.sleep(600)

done = 0
def progress(n):
    global done
    done += n
    if mode == "embedding" and done > 8:
        hang()

write_index = faiss.write_index
def write_then_hang(ix, path):
    write_index(ix, path)
    if mode == "cache":
        hang()
faiss.write_index = write_then_hang
index.add(progress=progress, commit_every=4)
"""


def crops(folder: Path, names: list[str], size: int = 48) -> None:
    """Distinct small photos: corners and centres of the scikit-image photos."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for base in ("astronaut", "coffee", "chelsea", "rocket"):
        im = photo(base)
        w, h = im.size
        for box in ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 4, h // 4, 3 * w // 4, 3 * h // 4)):
            if n == len(names):
                return
            im.crop(box).resize((size, size)).save(folder / names[n])
            n += 1


def kill_when_ready(index_dir: Path, tmp: Path, mode: str) -> None:
    marker = tmp / f"{mode}.marker"
    src = str(Path(clipworks.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(index_dir), str(marker), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"add exited before the kill point:\n{proc.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the kill point was not reached in 120 s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def assert_consistent(index_dir: Path, rows: int) -> None:
    """Rows, stored vectors and FAISS vectors agree after opening, read-only or writable."""
    with sqlite3.connect(index_dir / "index.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == rows
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == rows
    conn.close()
    assert VectorIndex.load(index_dir / CACHE_NAME, "flat", 64, {}).index.ntotal < rows  # the file lags behind
    for writable in (False, True):
        with Index.open(index_dir, writable=writable) as index:
            assert len(index) == rows and index._vectors.index.ntotal == rows
            assert (index._vectors.ids() == index.all_ids()).all()
            assert np.allclose(index._vectors.index.reconstruct_batch(index.all_ids()), index.vectors(index.all_ids()))
    assert not list(index_dir.glob(".*.tmp-*"))  # the half-written cache file is cleaned up


def contents(index: Index) -> dict[str, np.ndarray]:
    ids = index.all_ids()
    return {item.path: v for item, v in zip(index.items(ids), index.vectors(ids))}


def test_sigkill_during_add_then_add_completes(tmp_path, tiny_encoder):
    names = [f"{i:02d}.png" for i in range(14)]
    crops(tmp_path / "photos", names)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG broken")
    Index.create(tmp_path / "idx", tmp_path / "photos", tiny_encoder).close()

    kill_when_ready(tmp_path / "idx", tmp_path, "embedding")
    assert_consistent(tmp_path / "idx", 8)  # two batches of 4 committed, nothing of the third
    with Index.open(tmp_path / "idx", encoder=tiny_encoder, writable=True) as index:
        report = index.add(commit_every=4)
        assert (report.added, report.unchanged, report.embedded, report.failed) == (6, 8, 6, 1)
        resumed = contents(index)

    for i, name in enumerate(f"{i:02d}.png" for i in range(14, 18)):
        photo("camera").crop((10 * i, 0, 10 * i + 200, 200)).resize((48, 48)).save(tmp_path / "photos" / name)  # 4 more
    kill_when_ready(tmp_path / "idx", tmp_path, "cache")
    assert_consistent(tmp_path / "idx", 18)
    with Index.open(tmp_path / "idx", encoder=tiny_encoder, writable=True) as index:
        report = index.add()
        assert report.unchanged == 18 and report.embedded == 0
        resumed = contents(index)

    with Index.create(tmp_path / "clean", tmp_path / "photos", tiny_encoder) as clean:
        clean.add()
        fresh = contents(clean)
    assert sorted(resumed) == sorted(fresh) == sorted(f"{i:02d}.png" for i in range(18))
    assert all(np.allclose(resumed[p], fresh[p], atol=1e-6) for p in fresh)
