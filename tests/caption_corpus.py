"""A reproducible caption corpus: plain captions plus a share of inputs that break naive tokenizers.

Shared by the tokenizer tests and ``bench/tokenizer.py``.
"""

from __future__ import annotations

import random

ADJ = ["red", "small", "old", "shiny", "wooden", "blurry", "bright", "dark", "striped", "happy", "tiny", "giant"]
NOUN = ["dog", "cat", "car", "bicycle", "mountain", "coffee cup", "sneaker", "t-shirt", "pullover", "ankle boot",
        "sandal", "handbag", "skyscraper", "river", "astronaut", "rocket", "guitar", "laptop", "pizza", "horse"]
PLACE = ["on a table", "in the snow", "near the beach", "at night", "in a studio", "on the street",
         "under a tree", "in Paris", "at sunset", "next to a window"]
TEMPLATES = [
    "a photo of a {a} {n} {p}.",
    "A {a} {n} {p}",
    "{n} {p}, {a}",
    "close-up of the {n}'s {a} surface",
    "there's a {a} {n} {p} - it's {k} years old!",
    "IMG_{k}.JPG: {a} {n}",
    "Two {n}s and {k} {a} things {p}???",
    "we've seen the {n}; they'll like it (I'm sure) {p}",
    "  {a}   {n}\t{p}  ",
    "#{n} #{a} @user_{k} https://example.com/{n}?id={k}",
]
TRICKY = [
    "", "   ", "\n\n\t", "ﬁne ﬂowers ﬀ ligatures", "&quot;quoted&quot; and &amp;amp; and &#39;apos&#39;",
    "&lt;b&gt;bold&lt;/b&gt;", "emoji 😀🎉👍🏽 family 👨‍👩‍👧", "Привет, мир! Кошка на окне", "你好世界 一只猫在桌子上",
    "こんにちは、猫", "مرحبا بالعالم", "עברית", "café naïve coöperate résumé", "cafÃ© mojibake â€œquotesâ€\x9d",
    "zero\u200bwidth\u200cjoin\u200d", "e\u0301 combining", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "line one\r\nline two\rthree\u2028four",
    "it'ſ long s", "ctrl\x00\x01\x1f\x7f chars", "<start_of_text> literal <end_of_text>", "x<<start_of_text>",
    "<END_OF_TEXT>", "tab\tsep\x0bvt\x0cff", "nbsp\u00a0here\u3000ideographic", "Ǆ ǅ ǆ titlecase", "İstanbul ß ẞ",
    "\ufeffbom", "😀" * 100, "1234567890" * 20, "!!!???...,,,;;;", "don't WON'T Can'T I'M", "ﬆ ﬅ ligature st",
    "Ω ℃ ℡ ™ ① ⅷ ½", "K\u212a kelvin", "\U0001d400\U0001d401 math bold", "a" * 300, "&amp;lt;double&amp;gt;",
    "\udcff lone surrogate? no", "x\u0000y", "🏳️‍🌈 flag", "\u202eRTL override\u202c",
]


def long_caption(rng: random.Random, n_chars: int = 10_000) -> str:
    words = [rng.choice(ADJ + NOUN) for _ in range(n_chars // 5)]
    return " ".join(words)[:n_chars]


def plain_caption(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(a=rng.choice(ADJ), n=rng.choice(NOUN), p=rng.choice(PLACE), k=rng.randint(0, 999))


def tricky_caption(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.02:
        return long_caption(rng)
    if roll < 0.5:
        return rng.choice(TRICKY)
    # mix a tricky fragment into a plain caption, so cleaning must work mid-sentence
    base = plain_caption(rng).split(" ")
    base.insert(rng.randrange(len(base) + 1), rng.choice(TRICKY))
    return " ".join(base)


def corpus(n: int = 20_000, tricky_share: float = 0.1, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    n_tricky = int(n * tricky_share)
    items = [tricky_caption(rng) for _ in range(n_tricky)] + [plain_caption(rng) for _ in range(n - n_tricky)]
    rng.shuffle(items)
    return items
