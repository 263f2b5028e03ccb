"""Files from the Hugging Face Hub, through ``huggingface_hub`` and its standard cache.

Downloads show huggingface_hub's progress bars, land in ``~/.cache/huggingface/hub`` (or ``HF_HUB_CACHE``,
``cache_dir``) and are served from there with ``HF_HUB_OFFLINE=1``; ``HF_ENDPOINT`` points them at a mirror.

What can go wrong, and what the caller sees (always a ``PretrainedError`` naming the repo and the file):

* the repo, revision or file does not exist (or is private/gated): said so; a file the repo lacks is ``None`` for
  the functions that look for optional files — huggingface_hub records the 404 in the cache, so the same answer
  holds offline;
* offline, unreachable Hub, server error, endpoint that is not a Hub: "not in the cache, and …" with the cause;
* a body shorter than announced, or a connection that drops for good: huggingface_hub writes into a temporary
  file that it deletes on failure and renames only after a size check, so nothing complete-looking stays behind;
* a body of the right size but the wrong bytes: a Hub LFS file is cached under its sha256, so a fresh download
  is hashed and, when it does not match, removed from the cache before the error is raised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import PretrainedError
from ..text.hf_dir import TOKENIZER_FILES

HF_HUB_PREFIX = "hf-hub:"


def is_local_path(name: str) -> bool:
    """A local path rather than a Hub repo id (``name`` or ``org/name``, ``@revision`` allowed): it exists, or it
    is spelled like a path. The one rule every 'directory or Hub id' argument follows."""
    return (Path(name).expanduser().exists() or name.startswith((".", "/", "~", "\\")) or name.count("/") > 1
            or name.endswith((".pt", ".pth", ".bin", ".safetensors", ".json")))
# What a model directory is made of; weights are picked separately, safetensors first.
CONFIG_FILES = ("open_clip_config.json", "config.json")
SIDE_FILES = ("preprocessor_config.json", *TOKENIZER_FILES)
WEIGHT_FILES = {
    "open_clip_config.json": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "config.json": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json"),
}
TOKENIZER_ONLY = (*TOKENIZER_FILES, "config.json")  # config.json: some tokenizers depend on the model type
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class NotCachedError(PretrainedError):
    """The file is not in the cache and cannot be downloaded now (offline, Hub unreachable or failing)."""


def _hub():
    """huggingface_hub (a core dependency), imported on first use so ``import clipworks`` stays light."""
    import huggingface_hub
    import huggingface_hub.constants  # noqa: F401  (submodules the package does not import eagerly)
    import huggingface_hub.errors  # noqa: F401

    return huggingface_hub


def _offline() -> bool:
    constants = _hub().constants
    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)


def split_repo(name: str) -> tuple[str, str | None]:
    """``org/repo[@revision]`` (an ``hf-hub:`` prefix allowed) → (repo id, revision). Legacy ids without an
    organisation (``xlm-roberta-base``, ``roberta-base``) are accepted: the Hub redirects them."""
    name = name.removeprefix(HF_HUB_PREFIX).strip("/")
    repo, _, revision = name.partition("@")
    if repo.count("/") > 1 or not all(repo.split("/")) or not repo:
        raise PretrainedError(f"{name!r} is not a Hugging Face Hub repo id (expected 'org/name')")
    return repo, revision or None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _not_cached(repo: str, filename: str, error: BaseException) -> NotCachedError:
    """Why a file that is not cached could not be fetched, from huggingface_hub's cause."""
    hub = _hub()
    what, cause = f"{repo}/{filename}", error.__cause__
    endpoint = hub.constants.ENDPOINT
    if isinstance(cause, hub.errors.OfflineModeIsEnabled) or (cause is None and _offline()):
        why = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif isinstance(cause, hub.errors.HfHubHTTPError) and getattr(cause, "response", None) is not None:
        why = f"the Hub at {endpoint} answered HTTP {cause.response.status_code}"
    elif isinstance(cause, getattr(hub.errors, "FileMetadataError", ())):
        why = f"{endpoint} does not answer like a Hugging Face Hub ({_first_line(cause)})"
    elif cause is not None:
        why = f"the Hub at {endpoint} cannot be reached ({type(cause).__name__}: {_first_line(cause)})"
    else:
        why = _first_line(error)
    return NotCachedError(f"{what} is not in the Hugging Face cache and cannot be downloaded: {why}")


def _cache_state(repo: str, filename: str, revision: str | None, cache_dir: str | Path | None) -> object:
    """What the cache knows before a download: a path, the 'repo lacks it' marker, or None."""
    hub = _hub()
    try:
        return hub.try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
    except ValueError:  # an invalid repo id or filename: hf_hub_download says which
        return None


def _verify(repo: str, filename: str, path: Path) -> None:
    """A fresh LFS download (cached under its sha256) is hashed; the wrong bytes are removed, then reported."""
    blob = Path(os.path.realpath(path))
    if not _SHA256.fullmatch(blob.name):
        return  # a small git file (etag = git sha1), or a cache without symlinks
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        for p in (path, blob):
            p.unlink(missing_ok=True)
        raise PretrainedError(f"{repo}/{filename}: the downloaded file does not match the Hub's checksum (sha256 "
                              f"{digest.hexdigest()[:12]}…, expected {blob.name[:12]}…); it was removed from the cache, "
                              "try again")


def fetch(repo: str, filename: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path | None:
    """One file of ``repo`` from the cache or the Hub; None when the repo does not have it (the Hub answered 404
    for the file, or — offline — the cache recorded that answer). Every other failure raises a PretrainedError
    naming the repo and the file (``NotCachedError`` when only the cache could have helped)."""
    hub = _hub()
    errors = hub.errors
    what = f"{repo}/{filename}"
    before = _cache_state(repo, filename, revision, cache_dir)
    if before is not None and not isinstance(before, str) and revision and _COMMIT.fullmatch(revision):
        return None  # a commit's files never change: its recorded 404 stands, no need to ask (or wait on) the Hub
    try:
        path = Path(hub.hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir))
    except errors.LocalEntryNotFoundError as e:
        if before is not None and not isinstance(before, str):  # the cache's record of a 404
            return None
        raise _not_cached(repo, filename, e) from e
    except errors.EntryNotFoundError:
        return None
    except errors.RepositoryNotFoundError as e:
        raise PretrainedError(f"Hugging Face Hub repo {repo!r} not found, or private or gated (log in with "
                              f"`hf auth login`), while fetching {filename}") from e
    except errors.RevisionNotFoundError as e:
        raise PretrainedError(f"{repo}: revision {revision!r} not found, while fetching {filename}") from e
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise PretrainedError(f"downloading {what} failed: HTTP {status}: {_first_line(e)}") from e
    except (OSError, ValueError) as e:  # size check ("Consistency check failed"), disk full, bad repo id
        raise PretrainedError(f"downloading {what} failed: {_first_line(e)}") from e
    except Exception as e:  # httpx/requests transport errors after retries: still a failed download, named
        if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise PretrainedError(f"downloading {what} failed: the connection broke ({type(e).__name__}: "
                                  f"{_first_line(e)})") from e
        raise
    if not isinstance(before, str) or Path(os.path.realpath(before)) != Path(os.path.realpath(path)):
        _verify(repo, filename, path)
    return path


def download_file(repo: str, filename: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """One file that must be there."""
    path = fetch(repo, filename, revision, cache_dir)
    if path is None:
        raise PretrainedError(f"Hugging Face Hub repo {repo} has no file {filename!r}")
    return path


def download_first(repo: str, filenames: Sequence[str], revision: str | None = None,
                   cache_dir: str | Path | None = None, missing: str = "") -> Path:
    """The first of ``filenames`` the repo has (a safetensors file before its pickle twin). Offline, a name the
    cache knows nothing about is passed over for the next; any other failure is reported as it is."""
    not_cached: list[NotCachedError] = []
    for name in filenames:
        try:
            path = fetch(repo, name, revision, cache_dir)
        except NotCachedError as e:
            not_cached.append(e)
            continue
        if path is not None:
            return path
    if not_cached:
        also = f" (nor could {', '.join(filenames[1:])}, tried in its place)" if len(filenames) > 1 else ""
        raise NotCachedError(f"{not_cached[0]}{also}") from not_cached[0]
    raise PretrainedError(f"Hugging Face Hub repo {repo} has none of {', '.join(filenames)}"
                          + (f": {missing}" if missing else ""))


def _optional(repo: str, filename: str, revision: str | None, cache_dir: str | Path | None) -> Path | None:
    """A side file, or None when the repo lacks it. Offline, a file the cache knows nothing about is taken as
    absent (the cache may have been filled by another tool); online, failing to fetch it is an error."""
    try:
        return fetch(repo, filename, revision, cache_dir)
    except NotCachedError:
        if _offline():
            return None
        raise


def download_model_dir(name: str, cache_dir: str | Path | None = None, weights: bool = True) -> Path:
    """A Hub model repo as a local directory clipworks can load: its config (open_clip's or Hugging Face's), the
    tokenizer and preprocessor files it has, and with ``weights`` its weights (``download_model_weights``).
    ``weights=False`` fetches only what a config-only read needs (``get_tokenizer``, ``clipworks info``), and
    lets a caller refuse an architecture before fetching gigabytes."""
    repo, revision = split_repo(name)
    config = download_first(repo, CONFIG_FILES, revision, cache_dir, missing="not a model clipworks can build")
    revision = _snapshot_commit(config.parent, revision)
    for side in SIDE_FILES:
        _optional(repo, side, revision, cache_dir)
    if weights:
        download_model_weights(name, config.parent, cache_dir)
    return config.parent


def _snapshot_commit(directory: Path, revision: str | None) -> str | None:
    """The commit of a cache snapshot directory (``…/snapshots/<commit>``): the rest of a model is fetched at the
    commit its config came from, so its files match, and files the cache already holds (or knows to be absent)
    are answered without asking the Hub."""
    if directory.parent.name == "snapshots" and _COMMIT.fullmatch(directory.name):
        return directory.name
    return revision


def download_model_weights(name: str, directory: Path, cache_dir: str | Path | None = None) -> Path:
    """The weights of the Hub model whose config ``download_model_dir`` put in ``directory``: safetensors first,
    every shard of a sharded checkpoint. Returns the file found (the index, for shards)."""
    repo, revision = split_repo(name)
    revision = _snapshot_commit(directory, revision)
    layout = "open_clip_config.json" if (directory / "open_clip_config.json").is_file() else "config.json"
    weight = download_first(repo, WEIGHT_FILES[layout], revision, cache_dir)
    if weight.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(weight.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise PretrainedError(f"{repo}/{weight.name} is not a shard index (no weight_map): {e}") from e
        for shard in shards:
            download_file(repo, shard, revision, cache_dir)
    return weight


def download_tokenizer_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The tokenizer files of a Hub repo (``xlm-roberta-base``, ``timm/ViT-B-16-SigLIP``) in one cached directory."""
    repo, revision = split_repo(name)
    found = [p for p in (_optional(repo, f, revision, cache_dir) for f in TOKENIZER_ONLY) if p is not None]
    if not any(p.name != "config.json" for p in found):
        if _offline():
            raise NotCachedError(f"Hugging Face Hub repo {repo}: no tokenizer files ({', '.join(TOKENIZER_ONLY[:-1])}) "
                                 "in the Hugging Face cache, and offline mode is on (HF_HUB_OFFLINE=1)")
        raise PretrainedError(f"Hugging Face Hub repo {repo} has no tokenizer files ({', '.join(TOKENIZER_ONLY[:-1])})")
    return found[0].parent
