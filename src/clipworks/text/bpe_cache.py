"""CLIP's BPE vocabulary and merges, loaded fast: parsed once from the package's gzip file, then kept in a user cache.

Why: parsing ``bpe_simple_vocab_16e6.txt.gz`` (gunzip, 48,894 merge lines split into tuples, a 49,408-entry
vocabulary built from them) costs about 0.1 s, which is most of what a fresh process pays before its first
tokenized caption. The parsed tables are stored with ``marshal`` (loads in ~15 ms) in
``$CLIPWORKS_CACHE`` (default ``$XDG_CACHE_HOME/clipworks`` or ``~/.cache/clipworks``).

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
_MAGIC = b"clipworks-bpe-1\n"


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


def read_cached(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]] | None:
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
        vocab, merges = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(vocab, dict) or not isinstance(merges, list) or len(merges) != _N_MERGES \
            or len(vocab) != _N_MERGES + 514:
        return None
    return vocab, merges


def write_cached(path: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> bool:
    """Write the tables atomically (temp file in the same folder, then rename); False when the folder is unwritable."""
    payload = marshal.dumps((vocab, merges))
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


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges: from the user cache when it holds a valid copy, else parsed and cached."""
    asset = (resources.files("clipworks") / "assets" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    path = cache_path(asset)
    tables = read_cached(path)
    if tables is None:
        tables = parse(asset)
        write_cached(path, *tables)
    return tables
