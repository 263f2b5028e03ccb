"""The tokenizer's cold start: the cached vocabulary is never wrong, and every fast path gives OpenAI's ids."""

from __future__ import annotations

import hashlib
import marshal
import os
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path

import pytest
import torch
from caption_corpus import TRICKY, corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from clipworks.errors import InputTypeError
from clipworks.text import bpe_cache, clip_bpe
from clipworks.text.clip_bpe import ClipTokenizer, MergeRank, bpe_pieces, rust_bpe

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
SRC = Path(clip_bpe.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ref():
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def asset() -> bytes:
    return (resources.files("clipworks") / "assets" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPWORKS_CACHE", str(tmp_path))
    bpe_cache.clear()
    yield tmp_path
    bpe_cache.clear()


def test_tables_equal_open_clips(ref, asset):
    vocab, merges = bpe_cache.parse(asset)
    assert vocab == ref.encoder
    assert {m: i for i, m in enumerate(merges)} == ref.bpe_ranks
    assert len(vocab) == len(merges) + 514  # no token string twice: what MergeRank relies on


def test_cache_written_then_read(cache_dir, asset):
    first = bpe_cache.vocab_and_merges()
    files = list(cache_dir.iterdir())
    assert [f.name for f in files] == [bpe_cache.cache_path(asset).name]  # no temp file left behind
    assert first == bpe_cache.parse(asset)
    vocab, firsts, blob = bpe_cache.read_cached(files[0])
    assert (vocab, firsts, marshal.loads(blob)) == (first[0], bpe_cache.first_lengths(first[1]), first[1])
    bpe_cache.clear()
    assert bpe_cache.tables() == (first[0], bpe_cache.first_lengths(first[1]))
    assert bpe_cache.vocab_and_merges() == first


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "flip_digest", "empty", "garbage", "other_magic"])
def test_damaged_cache_is_ignored_and_rewritten(cache_dir, asset, ref, damage):
    bpe_cache.vocab_and_merges()
    path = bpe_cache.cache_path(asset)
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip_payload":
        blob[-1000] ^= 0x01  # still valid marshal in places, but no longer the payload its digest names
    elif damage == "flip_digest":
        blob[len(bpe_cache._MAGIC) + 3] ^= 0xFF
    elif damage == "empty":
        blob = bytearray()
    elif damage == "garbage":
        blob = bytearray(os.urandom(5000))
    else:
        blob = bytearray(b"not-clipworks\n") + blob[len(bpe_cache._MAGIC):]
    path.write_bytes(bytes(blob))
    assert bpe_cache.read_cached(path) is None
    bpe_cache.clear()
    vocab, merges = bpe_cache.vocab_and_merges()
    assert vocab == ref.encoder
    assert bpe_cache.read_cached(path)[:2] == (vocab, bpe_cache.first_lengths(merges))  # rewritten whole


def test_wrong_tables_under_a_valid_digest_are_refused(cache_dir, asset):
    """A well-formed file whose tables are not CLIP's (e.g. written by a buggy version) is not trusted."""
    vocab, merges = bpe_cache.parse(asset)
    path = bpe_cache.cache_path(asset)
    bpe_cache.write_cached(path, vocab, merges[:-1])
    assert bpe_cache.read_cached(path) is None
    bpe_cache.write_cached(path, {"a": 0}, merges)
    assert bpe_cache.read_cached(path) is None


def test_packed_merges_that_do_not_decode_are_parsed_again(cache_dir, asset, ref):
    """A file whose digest is right but whose packed merge list is not (written by a buggy version): the vocabulary
    part is used, and the merges come from the package asset, never from the bad blob."""
    vocab, merges = bpe_cache.parse(asset)
    for blob in (b"garbage", marshal.dumps(merges[::-1]), marshal.dumps(merges[:-1])):
        payload = marshal.dumps((vocab, bpe_cache.first_lengths(merges), blob))
        path = bpe_cache.cache_path(asset)
        path.write_bytes(bpe_cache._MAGIC + hashlib.sha256(payload).digest() + payload)
        bpe_cache.clear()
        assert bpe_cache.vocab_and_merges() == (vocab, merges)
        assert {m: i for i, m in enumerate(bpe_cache.vocab_and_merges()[1])} == ref.bpe_ranks


def test_cache_name_changes_with_the_asset(asset):
    assert bpe_cache.cache_path(asset) != bpe_cache.cache_path(asset + b"\0")


def test_unwritable_cache_dir_still_tokenizes(tmp_path, monkeypatch, ref):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("CLIPWORKS_CACHE", str(blocker / "sub"))  # mkdir under a file fails
    bpe_cache.clear()
    try:
        texts = corpus(200, 0.3, seed=5)
        assert torch.equal(ClipTokenizer()(texts), ref(texts))
    finally:
        bpe_cache.clear()


def test_failed_write_leaves_no_partial_file(cache_dir, asset, monkeypatch):
    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(bpe_cache.os, "replace", crash)
    path = bpe_cache.cache_path(asset)
    assert not bpe_cache.write_cached(path, *bpe_cache.parse(asset))
    assert list(cache_dir.iterdir()) == []


def _fresh_ids(cache: Path, n: int = 300) -> bytes:
    code = ("import sys; sys.path.insert(0, 'tests'); from caption_corpus import corpus; "
            "from clipworks.text.clip_bpe import ClipTokenizer; "
            f"sys.stdout.buffer.write(ClipTokenizer()(corpus({n}, 0.3, seed=3)).numpy().tobytes())")
    env = {**os.environ, "CLIPWORKS_CACHE": str(cache), "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env,
                          cwd=SRC.parent).stdout


def test_fresh_processes_cold_and_cached_give_open_clips_ids(tmp_path, ref):
    """A first start (no cache: parse + write), a second (read) and one after corruption all give the same ids."""
    expected = ref(corpus(300, 0.3, seed=3)).numpy().tobytes()
    assert _fresh_ids(tmp_path) == expected
    (cached,) = list(tmp_path.iterdir())
    assert _fresh_ids(tmp_path) == expected
    cached.write_bytes(cached.read_bytes()[:-7])
    assert _fresh_ids(tmp_path) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_python_bpe_equals_rust_bpe(word):
    vocab, firsts = bpe_cache.tables()
    rank = MergeRank(vocab, firsts)
    ours = [vocab[p] for p in bpe_pieces(word, rank)]
    assert ours == rust_bpe().encode([word], is_pretokenized=True, add_special_tokens=False).ids


def test_python_bpe_on_every_vocabulary_word(ref):
    """Every whole-word token of the vocabulary, through OpenAI's own ``bpe`` and ours."""
    vocab, firsts = bpe_cache.tables()
    rank = MergeRank(vocab, firsts)
    byte_decoder = {c: b for b, c in bpe_cache.bytes_to_unicode().items()}
    words = [t[:-4] for t in vocab if t.endswith("</w>") and len(t) > 4][::5]
    checked = 0
    for chars in words:
        try:
            word = bytes(byte_decoder[c] for c in chars).decode("utf-8")
        except UnicodeDecodeError:
            continue
        assert bpe_pieces(word, rank) == ref.bpe(chars).split(" "), word
        checked += 1
    assert checked > 5000


def test_many_new_words_take_the_rust_batch_and_agree(ref, monkeypatch):
    """Past ``_PYTHON_BPE_MAX`` new words the Rust BPE is built; the ids are the same either way."""
    texts = corpus(3000, 0.2, seed=11) + [f"word{i}x{i * 7919 % 1000}y" for i in range(1500)]
    monkeypatch.setattr(clip_bpe, "_PYTHON_BPE_MAX", 10**9)
    rust_bpe.cache_clear()
    python_ids = ClipTokenizer()(texts)
    assert rust_bpe.cache_info().currsize == 0
    monkeypatch.setattr(clip_bpe, "_PYTHON_BPE_MAX", 0)
    rust_ids = ClipTokenizer()(texts)
    assert rust_bpe.cache_info().currsize == 1
    assert torch.equal(python_ids, rust_ids)
    assert torch.equal(rust_ids, ref(texts))


def test_full_chunk_table_restarts_without_losing_this_calls_chunks(ref, monkeypatch):
    monkeypatch.setattr(clip_bpe, "_CACHE_LIMIT", 50)
    tok = ClipTokenizer()
    for seed in range(4):
        texts = corpus(120, 0.3, seed=seed)
        assert torch.equal(tok(texts), ref(texts))
        assert len(tok._table) <= max(50, len({c for t in texts for c in tok._chunks(t, 0)}) + 3)


def test_repeated_tricky_texts_are_cleaned_once(monkeypatch, ref):
    calls = []
    real = clip_bpe.clean_text
    monkeypatch.setattr(clip_bpe, "clean_text", lambda t: calls.append(t) or real(t))
    tok = ClipTokenizer()
    texts = TRICKY * 3
    assert torch.equal(tok(texts), ref(texts))
    assert sorted(calls) == sorted({t for t in TRICKY if not clip_bpe._PLAIN_ASCII.fullmatch(t)})


def test_gc_state_restored(ref):
    import gc

    tok = ClipTokenizer()
    tok(["a photo"])
    assert gc.isenabled()
    gc.disable()
    try:
        tok(["another photo"])
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(InputTypeError):
        tok(["fine", 3])  # type: ignore[list-item]
    assert gc.isenabled()


def test_threads_share_one_tokenizer(ref):
    tok = ClipTokenizer()
    batches = [corpus(400, 0.2, seed=s) for s in range(6)]
    results: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, tok(batches[s]))) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in range(6):
        assert torch.equal(results[s], ref(batches[s]))


def test_encode_and_decode_after_cold_start(ref):
    tok = ClipTokenizer()
    text = "A photo of a café, 3 dogs & a 🐶"
    assert tok.encode(text) == ref.encode(text)
    assert tok.decode(tok(text)[0]) == ref.decode(ref.encode(text)).strip()
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([5, 10**6])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
