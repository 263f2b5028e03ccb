import html
import string

import ftfy
import pytest
import torch
from caption_corpus import TRICKY, corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from clipworks import tokenize
from clipworks.text.clip_bpe import _PLAIN_ASCII, _SPLIT, _SPLIT_ASCII, ClipTokenizer, clean_text

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")


@pytest.fixture(scope="module")
def ref():
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


def test_identical_to_open_clip_on_corpus(ref, tok):
    captions = corpus(n=4000, tricky_share=0.25, seed=1)
    expected, got = ref(captions), tok(captions)
    bad = [captions[i] for i in (expected != got).any(1).nonzero().flatten().tolist()]
    assert not bad, f"{len(bad)} captions differ, e.g. {bad[:3]!r}"


@pytest.mark.parametrize("text", TRICKY)
def test_identical_on_each_tricky_input(ref, tok, text):
    assert torch.equal(tok(text), ref(text))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_identical_on_arbitrary_unicode(ref, text):
    assert torch.equal(ClipTokenizer()(text), ref(text))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=string.printable + "&<>_'", max_size=80))
def test_ascii_shortcuts_equal_the_full_path(text):
    # fast cleaning is only taken when ftfy + unescaping would not change the text
    full = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split()).lower()
    assert clean_text(text) == full
    if _PLAIN_ASCII.fullmatch(text):
        assert text.lower().split() == full.split()
    # the stdlib split equals OpenAI's regex on lowercased ASCII
    assert _SPLIT_ASCII.findall(full) == _SPLIT.findall(full)


def test_truncation_keeps_end_token(ref, tok):
    text = "word " * 200
    out = tok(text)
    assert out.shape == (1, 77)
    assert out[0, 0] == tok.sot_token_id and out[0, -1] == tok.eot_token_id
    assert torch.equal(out, ref(text))
    short = tok(["a b c d e f"], context_length=5)
    assert short.tolist() == [[tok.sot_token_id, *tok.encode("a b c"), tok.eot_token_id]]


def test_token_count_is_the_untruncated_length(ref, tok):
    texts = corpus(n=300, tricky_share=0.25, seed=3) + ["word " * 80, "word " * 74, "word " * 75, ""]
    counts = tok.token_count(texts)
    assert counts == [len(ref.encode(t)) + 2 for t in texts]
    assert counts[-4:] == [82, 76, 77, 2]  # 75 words + start + end fill 77 exactly: nothing is cut
    rows = tok(texts)
    for text, n, row in zip(texts, counts, rows):  # a text that fits ends where its count says
        if n <= 77:
            assert int(row[n - 1]) == tok.eot_token_id and (n == 77 or int(row[n]) == 0), text


def test_ten_thousand_characters_and_empty(ref, tok):
    texts = ["x" * 10_000, "a dog " * 2000, "", " \n\t "]
    assert torch.equal(tok(texts), ref(texts))


def test_output_contract(tok):
    out = tok(["a photo of a dog", "a cat"])
    assert out.dtype == torch.long and out.shape == (2, 77)
    assert tok.vocab_size == 49408
    assert tok.decode(out[0]) == "a photo of a dog"
    assert torch.equal(tokenize("a cat"), out[1:])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 5]])
def test_non_strings_raise_type_error_naming_the_type(tok, bad):
    with pytest.raises(TypeError) as e:
        tok(bad)
    assert type(bad if not isinstance(bad, list) else bad[1]).__name__ in str(e.value)


def test_context_length_too_small(tok):
    with pytest.raises(ValueError, match="context_length"):
        tok("x", context_length=1)


def test_cache_does_not_change_results(ref):
    t = ClipTokenizer()
    captions = corpus(n=300, seed=7)
    first, second = t(captions), t(captions)
    assert torch.equal(first, second) and torch.equal(first, ref(captions))
