"""CLIP's BPE vocabulary and merges, loaded fast: parsed once from the package's gzip file, then kept in a user cache.

Why: parsing ``bpe_simple_vocab_16e6.txt.gz`` (gunzip, 48,894 merge lines split into tuples, a 49,408-entry
vocabulary built from them) costs about 0.1 s, which is most of what a fresh process pays before its first
tokenized caption. The parsed tables are stored with ``marshal`` in ``$CLIPWORKS_CACHE`` (default
``$XDG_CACHE_HOME/clipworks`` or ``~/.cache/clipworks``): the vocabulary and, per merge, the length of its first
part (all a tokenizer's cold start needs: 6 ms to load), and the merge list packed, decoded only when asked for
(the Rust BPE for big batches, Hugging Face export).

Never a wrong vocabulary: the cache file's name carries the sha256 of the package asset and the marshal format
(a new vocabulary file or Python cannot pick up an old cache), its body starts with the sha256 of the payload
(a truncated or corrupted file is detected, ignored and rewritten), and it is written atomically (temp file and
rename: a crash mid-write leaves no partial file). An unwritable cache directory costs speed, not correctness.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import marshal
import os
import sys
from importlib import resources
from pathlib import Path

SOT = "<start_of_text>"
EOT = "<end_of_text>"
_N_MERGES = 49152 - 256 - 2
_MAGIC = b"clipworks-bpe-2\n"


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte → printable-character map that byte-level BPE runs on."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def parse(data: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary (token → id) and merges (in rank order) from the gzip asset's bytes, as OpenAI builds them."""
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
    return {tok: i for i, tok in enumerate(vocab)}, merges  # type: ignore[return-value]


def cache_dir() -> Path:
    if os.environ.get("CLIPWORKS_CACHE"):
        return Path(os.environ["CLIPWORKS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipworks"


def cache_path(asset: bytes) -> Path:
    """Where the tables parsed from ``asset`` are cached: named by the asset's hash and the marshal format."""
    digest = hashlib.sha256(asset).hexdigest()[:16]
    return cache_dir() / f"bpe-{digest}-marshal{marshal.version}-py{sys.version_info[0]}{sys.version_info[1]}.bin"


def first_lengths(merges: list[tuple[str, str]]) -> bytes:
    """For each merge, the length of its first part: with the vocabulary (merge ``r`` made token ``512 + r``) this
    says whether a pair is a merge, without building 48,894 tuples at start-up (``clip_bpe.MergeRank``)."""
    return bytes(len(first) for first, _ in merges)


Tables = tuple[dict[str, int], bytes, bytes]  # vocabulary, first_lengths(merges), marshal.dumps(merges)


def read_cached(path: Path) -> Tables | None:
    """The cached tables, or None when the file is missing, truncated, corrupted or not ours."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 32
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC) : head]:
        return None
    try:
        vocab, firsts, merges_blob = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(vocab, dict) or not isinstance(firsts, bytes) or not isinstance(merges_blob, bytes) \
            or len(firsts) != _N_MERGES or len(vocab) != _N_MERGES + 514:
        return None
    return vocab, firsts, merges_blob


def write_cached(path: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> bool:
    """Write the tables atomically (temp file in the same folder, then rename); False when the folder is unwritable."""
    payload = marshal.dumps((vocab, first_lengths(merges), marshal.dumps(merges)))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def _asset() -> bytes:
    return (resources.files("clipworks") / "assets" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()


def _fresh(asset: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tables = parse(asset)
    write_cached(cache_path(asset), *tables)
    return tables


@functools.lru_cache(maxsize=1)
def tables() -> tuple[dict[str, int], bytes]:
    """(vocabulary, ``first_lengths`` of the merges): what a tokenizer's cold start needs, from the user cache when
    it holds a valid copy (the merge list itself stays packed until ``vocab_and_merges`` asks for it)."""
    asset = _asset()
    cached = read_cached(cache_path(asset))
    if cached is not None:
        _merges_blob.append(cached[2])
        return cached[0], cached[1]
    vocab, merges = _fresh(asset)
    _merges.append(merges)
    return vocab, first_lengths(merges)


_merges_blob: list[bytes] = []
_merges: list[list[tuple[str, str]]] = []


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges (in rank order), as ``parse`` gives them."""
    vocab, firsts = tables()
    if _merges:
        return vocab, _merges[-1]
    try:
        merges = marshal.loads(_merges_blob[-1])
    except (EOFError, ValueError, TypeError, IndexError):
        merges = None
    if not isinstance(merges, list) or len(merges) != _N_MERGES or first_lengths(merges) != firsts:
        return _fresh(_asset())
    return vocab, merges


def clear() -> None:
    """Forget the loaded tables (tests: a new cache directory)."""
    tables.cache_clear()
    vocab_and_merges.cache_clear()
    _merges_blob.clear()
    _merges.clear()
