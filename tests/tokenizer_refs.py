"""Reference tokenizers of every family, built offline: small vocabularies trained on caption text, wrapped in the
classes the real checkpoints use and saved with ``save_pretrained``, as a Hub repo holds them.

No real SigLIP/Gemma/XLM-V vocabulary ships offline, so each family gets a vocabulary of its own kind, trained here:
SentencePiece unigram (T5/SigLIP layout: pad 0, eos 1, unk 2), SentencePiece BPE with byte fallback (Gemma layout:
pad 0, eos 1, bos 2, unk 3, no dummy prefix), SentencePiece unigram in fairseq's layout (XLM-R/XLM-V: unk 0, bos 1,
eos 2, converted by transformers to <s> 0, <pad> 1, </s> 2, <unk> 3), a WordPiece vocabulary (BERT/ALIGN) and a
byte-level BPE (RoBERTa). Shared by ``tests/test_tokenizers.py`` and ``bench/tokenizers_parity.py``.

``FAMILIES`` names each directory and the two references it is compared with: transformers called the way the
family's processor calls it, and open_clip's ``HFTokenizer`` with the clean mode open_clip's configs use.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from caption_corpus import corpus

VERSION = 1  # of the directories ``build`` writes; a build root holding another version is rebuilt


@dataclass(frozen=True)
class Family:
    name: str                      # directory name under the build root
    context_length: int
    clean: str | None              # open_clip's tokenizer_kwargs clean for this family; None: no open_clip reference
    strip_sep_token: bool = False
    note: str = ""


FAMILIES = {
    # Hugging Face SiglipModel dirs: spiece.model only, SiglipTokenizer (canonicalises in Python), pad = eos.
    "siglip": Family("siglip", 64, None, note="SiglipTokenizer, spiece.model only (google/siglip-*)"),
    # open_clip's timm/ViT-B-16-SigLIP: the same vocabulary as a T5 tokenizer.json, cleaned by open_clip.
    "t5": Family("t5", 64, "canonicalize", note="T5Tokenizer tokenizer.json (timm/ViT-B-16-SigLIP, mT5)"),
    # Hugging Face Siglip2Model dirs: Gemma files, model_type siglip2 makes transformers lowercase.
    "siglip2": Family("siglip2", 64, None, note="Gemma files + config.json model_type siglip2 (google/siglip2-*)"),
    # open_clip's timm/ViT-B-16-SigLIP2: Gemma tokenizer.json, eos appended, right padding, open_clip cleaning.
    "gemma": Family("gemma", 64, "canonicalize", note="GemmaTokenizer tokenizer.json (timm/ViT-*-SigLIP2)"),
    # MetaCLIP 2 (facebook/xlm-v-base) and open_clip's XLM-R towers.
    "xlmr": Family("xlmr", 77, "whitespace", note="XLMRobertaTokenizer tokenizer.json (MetaCLIP 2, XLM-R)"),
    # ALIGN (kakaobrain/align-base: BERT WordPiece, lowercase) and open_clip's CLIPA (bert-base-uncased, sep stripped).
    "bert": Family("bert", 64, "whitespace", strip_sep_token=True, note="BertTokenizer tokenizer.json (ALIGN, CLIPA)"),
    # open_clip's RoBERTa towers (roberta-base): byte-level BPE.
    "roberta": Family("roberta", 77, "whitespace", note="RobertaTokenizer tokenizer.json (roberta-base)"),
    # SentencePiece-only directories of classes transformers converts to a fast tokenizer itself.
    "t5_spm": Family("t5_spm", 64, "canonicalize", note="T5Tokenizer, spiece.model only"),
    "xlmr_spm": Family("xlmr_spm", 77, "whitespace", note="XLMRobertaTokenizer, sentencepiece.bpe.model only"),
}


def training_text(n: int = 6000) -> list[str]:
    """Caption text to train the vocabularies on (another seed than the test corpus); SentencePiece takes no
    lone surrogates and no empty lines."""
    return [t for t in corpus(n, tricky_share=0.1, seed=12345) if t.strip() and _utf8(t)]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def train_spm(kind: str, texts: list[str], vocab_size: int = 700) -> bytes:
    import sentencepiece as spm

    # the layouts of the real vocabularies: T5/SigLIP (pad 0, eos 1, unk 2), Gemma (BPE, byte fallback, no dummy
    # prefix, <mask> user-defined), fairseq's XLM-R (unk 0, bos 1, eos 2)
    opts: dict[str, object] = {"vocab_size": vocab_size, "minloglevel": 2, "num_threads": 1, "character_coverage": 0.995}
    if kind == "t5":
        opts.update(model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc")
    elif kind == "gemma":
        opts.update(model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                    bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, add_dummy_prefix=False,
                    normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
                    allow_whitespace_only_pieces=True, user_defined_symbols=["<mask>"])
    elif kind == "xlmr":
        opts.update(model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    else:
        raise ValueError(kind)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=out, **opts)
    return out.getvalue()


def _write(directory: Path, files: dict[str, bytes | dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = json.dumps(content).encode() if isinstance(content, dict) else content
        (directory / name).write_bytes(data)
    return directory


def _saved(tok, directory: Path, extra: dict[str, dict] | None = None) -> Path:
    tok.save_pretrained(directory)
    return _write(directory, extra or {})


def build(root: Path) -> dict[str, Path]:
    """Every family's tokenizer directory under ``root`` (built once; a second call reuses them)."""
    import transformers as tf
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer

    done = root / "done.json"
    stamp = json.loads(done.read_text()) if done.is_file() else None
    if isinstance(stamp, dict) and stamp.get("version") == VERSION:
        return {name: root / name for name in stamp["dirs"]}
    shutil.rmtree(root, ignore_errors=True)
    texts = training_text()
    src = root / "sources"
    t5, gemma, xlmr = (train_spm(k, texts) for k in ("t5", "gemma", "xlmr"))
    dirs: dict[str, Path] = {}

    # SigLIP (Hugging Face): what google/siglip-* hold: spiece.model, tokenizer_config, special_tokens_map, config.
    sig = tf.SiglipTokenizer.from_pretrained(_write(src / "siglip", {
        "spiece.model": t5, "tokenizer_config.json": {"tokenizer_class": "SiglipTokenizer", "model_max_length": 64}}))
    dirs["siglip"] = _saved(sig, root / "siglip", {"config.json": {"model_type": "siglip"}})

    # T5 layout as a fast tokenizer (open_clip's SigLIP hub repos: extra_ids 0, pad = eos).
    t5_tok = tf.T5Tokenizer.from_pretrained(_write(src / "t5", {
        "spiece.model": t5, "tokenizer_config.json": {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "pad_token": "</s>"}}))
    dirs["t5"] = _saved(t5_tok, root / "t5")
    dirs["t5_spm"] = _write(root / "t5_spm", {
        "spiece.model": t5, "tokenizer_config.json": {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "pad_token": "</s>"}})

    # Gemma (SigLIP 2): open_clip saved it with add_bos False, add_eos True, right padding.
    gem_cfg = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": True, "padding_side": "right"}
    gem_src = _write(src / "gemma", {"tokenizer.model": gemma, "tokenizer_config.json": gem_cfg})
    gem = tf.GemmaTokenizer.from_pretrained(gem_src, vocab_file=str(gem_src / "tokenizer.model"))
    dirs["gemma"] = _saved(gem, root / "gemma")
    _merge_json(root / "gemma" / "tokenizer_config.json", {"add_bos_token": False, "add_eos_token": True})
    _drop_keys(root / "gemma" / "tokenizer_config.json", ("vocab_file",))
    shutil.copytree(root / "gemma", root / "siglip2")
    _write(root / "siglip2", {"config.json": {"model_type": "siglip2"}})
    dirs["siglip2"] = root / "siglip2"

    # XLM-R / XLM-V: the fairseq layout transformers converts to.
    xl_src = _write(src / "xlmr", {"sentencepiece.bpe.model": xlmr,
                                   "tokenizer_config.json": {"tokenizer_class": "XLMRobertaTokenizer"}})
    dirs["xlmr"] = _saved(tf.XLMRobertaTokenizer.from_pretrained(xl_src), root / "xlmr")
    dirs["xlmr_spm"] = _write(root / "xlmr_spm", {"sentencepiece.bpe.model": xlmr,
                                                  "tokenizer_config.json": {"tokenizer_class": "XLMRobertaTokenizer"}})

    # BERT WordPiece (ALIGN: lowercase, CLIPA: bert-base-uncased).
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=900, min_frequency=1, show_progress=False)
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    bert_src = _write(src / "bert", {"vocab.txt": "\n".join(t for t, _ in vocab).encode() + b"\n",
                                     "tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "do_lower_case": True}})
    dirs["bert"] = _saved(tf.BertTokenizer.from_pretrained(bert_src), root / "bert", {"config.json": {"model_type": "align"}})

    # RoBERTa byte-level BPE.
    bl = ByteLevelBPETokenizer()
    bl.train_from_iterator(texts, vocab_size=900, min_frequency=1, show_progress=False,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (src / "roberta").mkdir(parents=True, exist_ok=True)
    bl.save_model(str(src / "roberta"))
    _write(src / "roberta", {"tokenizer_config.json": {"tokenizer_class": "RobertaTokenizer"}})
    dirs["roberta"] = _saved(tf.RobertaTokenizer.from_pretrained(src / "roberta"), root / "roberta")

    done.write_text(json.dumps({"version": VERSION, "dirs": sorted(dirs)}))
    return dirs


def _merge_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2))


def _drop_keys(path: Path, keys: tuple[str, ...]) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in data.items() if k not in keys}, indent=2))


def transformers_reference(directory: Path, context_length: int):
    """The family's tokenizer as its Hugging Face processor calls it: max-length padding, truncation."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(directory)

    def call(texts: list[str]):
        return tok(list(texts), padding="max_length", max_length=context_length, truncation=True,
                   return_tensors="pt").input_ids

    call.tokenizer = tok  # type: ignore[attr-defined]
    return call


def open_clip_reference(directory: Path, family: Family):
    from open_clip.tokenizer import HFTokenizer

    kwargs = {"clean": family.clean} if family.clean else {}
    return HFTokenizer(str(directory), context_length=family.context_length, strip_sep_token=family.strip_sep_token,
                       **kwargs)


def sample(n: int, seed: int = 1) -> list[str]:
    """Test captions: the bench corpus' mix at a higher tricky share, shuffled deterministically."""
    items = corpus(n, tricky_share=0.25, seed=seed)
    random.Random(seed).shuffle(items)
    return items
