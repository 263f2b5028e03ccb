"""Prompt templates for zero-shot classification: built-in sets by name, or a user's file (one per line)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

# OpenAI's 80 ImageNet prompts (CLIP repo, notebooks/Prompt_Engineering_for_ImageNet.ipynb), in their order.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# Fashion-MNIST's small grey product shots: the demo trains on these captions and evaluates with them.
FASHION_MNIST_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a picture of a {}.",
    "a photo of the {}.",
)


TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "simple": SIMPLE_TEMPLATES,
    "openai-imagenet": OPENAI_IMAGENET_TEMPLATES,
    "fashion-mnist": FASHION_MNIST_TEMPLATES,
}


def check_templates(templates: Sequence[str], where: str = "templates") -> tuple[str, ...]:
    """The templates as a tuple, or a ``UsageError`` naming the first one without a ``{}`` for the class name."""
    templates = tuple(templates)
    if not templates:
        raise UsageError(f"{where}: no templates")
    for i, t in enumerate(templates):
        if not isinstance(t, str) or t.count("{}") != 1:
            raise UsageError(f"{where}: template {i + 1} {t!r} needs exactly one '{{}}' where the class name goes")
    return templates


def load_templates(spec: str | Path | Sequence[str]) -> tuple[str, ...]:
    """Templates from a built-in set name (``simple``, ``openai-imagenet``, ``fashion-mnist``), a text file with one
    template per line (blank lines and ``#`` comments skipped), or a list of template strings."""
    if isinstance(spec, (str, Path)):
        if str(spec) in TEMPLATE_SETS:
            return TEMPLATE_SETS[str(spec)]
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"templates {str(spec)!r} is neither a built-in set ({', '.join(TEMPLATE_SETS)}) nor a file")
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return check_templates([ln for ln in lines if ln and not ln.startswith("#")], where=str(path))
    return check_templates(spec)
