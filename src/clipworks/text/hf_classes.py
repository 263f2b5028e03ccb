"""What transformers 5's tokenizer classes build in code around the vocabulary a ``tokenizer.json`` holds.

transformers 5 keeps only the model (vocabulary, merges, the SentencePiece normalization charsmap) of a
``tokenizer.json`` and rebuilds the rest in the class's ``__init__``. Where the class pipeline can differ from the
file — files converted by older transformers, say — the reference is the class, so the same is done here to the Rust
tokenizer read from the file:

- ``T5Tokenizer`` / ``XLMRobertaTokenizer``: normalizer = the file's ``Precompiled`` charsmap alone, pre-tokenizer =
  whitespace split + Metaspace (older files collapse spaces with a ``Replace`` and prepend ``▁`` before leading
  spaces: different ids for ~10% of captions with stray whitespace), the class's template (``… </s>``,
  ``<s> … </s>``);
- ``Siglip2Tokenizer``: a ``Lowercase`` normalizer in front;
- any other class whose files set ``add_bos_token``/``add_eos_token``: the template ``update_post_processor``
  builds from them;
- the special tokens the files name are matched in raw text.

``pipeline_spec`` reduces all of it to plain data (it travels with a pickled tokenizer); ``apply`` sets it on a
``tokenizers.Tokenizer``.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors

from ..errors import TokenizerError
from .hf_dir import SPECIAL_TOKENS, TokenizerDir

# Classes whose __init__ rebuilds a SentencePiece-unigram pipeline, and the Metaspace prepend scheme it uses.
_UNIGRAM_CLASSES = ("T5Tokenizer", "XLMRobertaTokenizer")
# Classes whose __init__ sets its own post-processor, whatever add_bos_token/add_eos_token say.
_OWN_TEMPLATE = {"T5Tokenizer", "XLMRobertaTokenizer", "BertTokenizer", "RobertaTokenizer"}


def pipeline_spec(files: TokenizerDir, tok: Tokenizer, normalize: str) -> dict[str, Any]:
    """What the directory's class does around ``tok``'s vocabulary, as plain data for ``apply``."""
    cls = files.tokenizer_class
    spec: dict[str, Any] = {"lowercase": normalize == "lower", "metaspace": None, "template": None,
                            "specials": _specials(files)}
    if cls in _UNIGRAM_CLASSES:
        add_prefix = files.settings.get("add_prefix_space", True) if cls == "XLMRobertaTokenizer" else True
        spec["metaspace"] = "always" if add_prefix is not False else "never"
    if cls == "T5Tokenizer":
        spec["template"] = {"single": ["$A", "</s>"], "special_tokens": [("</s>", _need(files, tok, "eos_token"))]}
    elif cls == "XLMRobertaTokenizer":
        bos, eos = files.token("bos_token") or "<s>", files.token("eos_token") or "</s>"
        spec["template"] = {"single": [bos, "$A", eos], "special_tokens": [
            (bos, _need(files, tok, "bos_token")), (eos, _need(files, tok, "eos_token"))]}
    elif cls not in _OWN_TEMPLATE:
        spec["template"] = _flag_template(files, tok)
    return spec


def apply(tok: Tokenizer, spec: dict[str, Any]) -> Tokenizer:
    """Set the class pipeline ``spec`` describes on ``tok`` (in place; returned for chaining)."""
    if spec["metaspace"] is not None:
        tok.normalizer = _precompiled(tok.normalizer)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=spec["metaspace"])])
    if spec["lowercase"] and not _starts_with_lowercase(tok.normalizer):
        tok.normalizer = (normalizers.Sequence([normalizers.Lowercase(), tok.normalizer])
                          if tok.normalizer is not None else normalizers.Lowercase())
    if spec["template"] is not None:
        tok.post_processor = processors.TemplateProcessing(**spec["template"])
    if spec["specials"]:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec["specials"]])
    return tok


def _specials(files: TokenizerDir) -> list[str]:
    """Tokens transformers registers as special: the files' added tokens, the named special tokens, and
    ``additional_special_tokens``/``extra_special_tokens`` — only those the vocabulary has a place for matter."""
    listed = [*(files.settings.get("additional_special_tokens") or []), *(files.settings.get("extra_special_tokens") or [])]
    names = [t.content for t in files.added_tokens()] + [files.token(n) for n in SPECIAL_TOKENS] + \
        [t.get("content") if isinstance(t, dict) else t for t in listed]
    out: list[str] = []
    for token in names:
        if isinstance(token, str) and token and token not in out:
            out.append(token)
    return out


def _need(files: TokenizerDir, tok: Tokenizer, name: str) -> int:
    token = files.token(name)
    token_id = None if token is None else tok.token_to_id(token)
    if token_id is None:
        raise TokenizerError(f"{files.directory}: {name} {token!r} is not in the vocabulary of {files.tokenizer_class}")
    return token_id


def _flag_template(files: TokenizerDir, tok: Tokenizer) -> dict[str, Any] | None:
    """transformers' ``update_post_processor``: ``[bos] $A [eos]`` as ``add_bos_token``/``add_eos_token`` say; None
    when the files set neither (tokenizer.json's own post-processor stands)."""
    add_bos, add_eos = files.flag("add_bos_token"), files.flag("add_eos_token")
    if add_bos is None and add_eos is None:
        return None
    single: list[str] = ["$A"]
    special: list[tuple[str, int]] = []
    if add_bos and files.token("bos_token"):
        single.insert(0, files.token("bos_token"))  # type: ignore[arg-type]
        special.append((files.token("bos_token"), _need(files, tok, "bos_token")))  # type: ignore[arg-type]
    if add_eos and files.token("eos_token"):
        single.append(files.token("eos_token"))  # type: ignore[arg-type]
        special.append((files.token("eos_token"), _need(files, tok, "eos_token")))  # type: ignore[arg-type]
    return {"single": single, "special_tokens": special}


def _parts(normalizer: normalizers.Normalizer | None) -> list[normalizers.Normalizer]:
    if normalizer is None:
        return []
    if isinstance(normalizer, normalizers.Sequence):
        return [normalizer[i] for i in range(len(normalizer))]
    return [normalizer]


def _precompiled(normalizer: normalizers.Normalizer | None) -> normalizers.Normalizer | None:
    """The SentencePiece charsmap of a normalizer (the part transformers keeps), or None."""
    return next((n for n in _parts(normalizer) if isinstance(n, normalizers.Precompiled)), None)


def _starts_with_lowercase(normalizer: normalizers.Normalizer | None) -> bool:
    """Whether the file already lowercases first (saved by ``Siglip2Tokenizer`` itself)."""
    parts = _parts(normalizer)
    return bool(parts) and isinstance(parts[0], normalizers.Lowercase)
