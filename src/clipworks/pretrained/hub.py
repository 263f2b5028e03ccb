"""Files from the Hugging Face Hub, through ``huggingface_hub`` and its standard cache.

Downloads show huggingface_hub's progress bars, resume, land in ``~/.cache/huggingface/hub`` (or ``HF_HUB_CACHE``,
``cache_dir``) and are served from there with ``HF_HUB_OFFLINE=1``. ``HF_ENDPOINT`` points them at a mirror.
Every failure becomes a ``PretrainedError`` naming the repo and the file; huggingface_hub writes into
``.incomplete`` files and renames only a complete, size-checked download, so a failed one never looks cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import PretrainedError, require

HF_HUB_PREFIX = "hf-hub:"
# What a model directory is made of; weights are picked separately, safetensors first.
CONFIG_FILES = ("open_clip_config.json", "config.json")
SIDE_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "spiece.model", "tokenizer.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")
WEIGHT_FILES = {
    "open_clip_config.json": ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    "config.json": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
}
TOKENIZER_ONLY = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
                  "tokenizer.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt", "config.json")


def _hub():
    return require("huggingface_hub", "hub", "downloading from the Hugging Face Hub")


def split_repo(name: str) -> tuple[str, str | None]:
    """``org/repo[@revision]`` (an ``hf-hub:`` prefix allowed) → (repo id, revision)."""
    name = name.removeprefix(HF_HUB_PREFIX).strip("/")
    repo, _, revision = name.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise PretrainedError(f"{name!r} is not a Hugging Face Hub repo id (expected 'org/name')")
    return repo, revision or None


@contextlib.contextmanager
def _errors(repo: str, filename: str | None) -> Iterator[None]:
    hub = _hub()
    errors = hub.errors
    what = f"{repo}/{filename}" if filename else repo
    try:
        yield
    except errors.RepositoryNotFoundError as e:
        raise PretrainedError(f"Hugging Face Hub repo {repo!r} not found (or private/gated: log in with "
                              f"`hf auth login`): {_first_line(e)}") from e
    except errors.RevisionNotFoundError as e:
        raise PretrainedError(f"{repo}: revision not found: {_first_line(e)}") from e
    except errors.LocalEntryNotFoundError as e:
        raise PretrainedError(f"{what} is not in the Hugging Face cache and cannot be downloaded now "
                              f"(offline, HF_HUB_OFFLINE=1, or the Hub unreachable): {_first_line(e)}") from e
    except errors.EntryNotFoundError as e:
        raise PretrainedError(f"{repo} has no file {filename!r}") from e
    except (errors.HfHubHTTPError, OSError, ValueError) as e:
        raise PretrainedError(f"downloading {what} failed: {_first_line(e)}") from e
    except Exception as e:  # httpx transport errors and the like: still a failed download, named
        if type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise PretrainedError(f"downloading {what} failed: {type(e).__name__}: {_first_line(e)}") from e
        raise


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def download_file(repo: str, filename: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """One file of ``repo``, from the cache when it is there (offline included)."""
    with _errors(repo, filename):
        return Path(_hub().hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir))


def download_first(repo: str, filenames: Sequence[str], revision: str | None = None,
                   cache_dir: str | Path | None = None) -> Path:
    """The first of ``filenames`` the repo has (a safetensors file before its pickle twin); only 'no such file'
    moves on to the next name — any other failure is reported as it is."""
    missing = []
    for name in filenames:
        try:
            return download_file(repo, name, revision, cache_dir)
        except PretrainedError as e:
            cause = e.__cause__
            if isinstance(cause, _hub().errors.EntryNotFoundError) and not isinstance(
                    cause, _hub().errors.LocalEntryNotFoundError):
                missing.append(name)
                continue
            if isinstance(cause, _hub().errors.LocalEntryNotFoundError) and name != filenames[-1]:
                missing.append(name)  # offline: the other name may be the one in the cache
                continue
            raise
    raise PretrainedError(f"Hugging Face Hub repo {repo} has none of {', '.join(filenames)}")


def _optional(repo: str, filename: str, revision: str | None, cache_dir: str | Path | None,
              offline_misses: list[str] | None = None) -> Path | None:
    """The file, or None when the repo lacks it (or, offline, the cache does: noted in ``offline_misses``)."""
    try:
        return download_file(repo, filename, revision, cache_dir)
    except PretrainedError as e:
        if isinstance(e.__cause__, _hub().errors.LocalEntryNotFoundError):
            if offline_misses is not None:
                offline_misses.append(filename)
            return None
        if isinstance(e.__cause__, _hub().errors.EntryNotFoundError):
            return None
        raise


def download_model_dir(name: str, cache_dir: str | Path | None = None, weights: bool = True) -> Path:
    """A Hub model repo as a local directory clipworks can load: its config (open_clip's or Hugging Face's), the
    weights (safetensors preferred; shards included) and the tokenizer and preprocessor files it has.
    ``weights=False`` fetches only what a config-only read needs (``get_tokenizer``, ``clipworks info``)."""
    repo, revision = split_repo(name)
    config, offline = None, []
    for candidate in CONFIG_FILES:
        config = _optional(repo, candidate, revision, cache_dir, offline)
        if config is not None:
            break
    if config is None and offline:
        raise PretrainedError(f"{repo} is not in the Hugging Face cache and cannot be downloaded now (offline, "
                              "HF_HUB_OFFLINE=1, or the Hub unreachable)")
    if config is None:
        raise PretrainedError(f"Hugging Face Hub repo {repo} has no {' or '.join(CONFIG_FILES)}: not a model "
                              "clipworks can build")
    directory = config.parent
    for side in SIDE_FILES:
        _optional(repo, side, revision, cache_dir)
    if weights:
        weight = download_first(repo, WEIGHT_FILES[config.name], revision, cache_dir)
        if weight.name.endswith(".index.json"):
            import json

            shards = sorted(set(json.loads(weight.read_text()).get("weight_map", {}).values()))
            for shard in shards:
                download_file(repo, shard, revision, cache_dir)
    return directory


def download_tokenizer_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The tokenizer files of a Hub repo (``xlm-roberta-base``, ``timm/ViT-B-16-SigLIP``) in one cached directory."""
    repo, revision = split_repo(name) if "/" in name.removeprefix(HF_HUB_PREFIX) else (name, None)
    found = [p for p in (_optional(repo, f, revision, cache_dir) for f in TOKENIZER_ONLY) if p is not None]
    if not any(p.name != "config.json" for p in found):
        raise PretrainedError(f"Hugging Face Hub repo {repo} has no tokenizer files ({', '.join(TOKENIZER_ONLY[:-1])})")
    return found[0].parent
