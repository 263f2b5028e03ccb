"""Generated probe sets for the compositional weaknesses CLIP is known for, rendered with PIL.

Each probe is a Winoground-style pair: two captions that differ minimally (a relation word, the order of two
noun phrases, a number word, "no" for "a", two colour words swapped) and two scenes, scene ``i`` depicting
``captions[i]`` and not the other caption. The categories follow the benchmarks that found the weaknesses:
spatial relations (ARO VG-Relation, VL-Checklist relation), counting, negation (CREPE/"no" probes), and
attribute binding (ARO VG-Attribution, SugarCrepe swap-att, Winoground's object/relation swaps).

Probes are plain data (shapes, named colours, centres, sizes) and render on demand, so a few thousand cost no
memory until encoded; everything is fixed by ``seed`` and item ``i`` does not depend on ``n`` (the first 10 of
200 are the 10 you get asking for 10). Shapes are drawn without antialiasing: every pixel is either the
background or exactly one named colour, which lets tests read the scene back from the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UsageError
from ..fileio import atomic_file

CATEGORIES: tuple[str, ...] = ("spatial", "counting", "negation", "binding")
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 0),
    "purple": (130, 50, 170),
    "black": (20, 20, 20),
}
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five"}
MIN_SIZE = 128  # below it the smallest stars (counting) break into stray pixels
STAR_INNER = 0.45  # inner/outer radius of the five-pointed star


@dataclass(frozen=True)
class Thing:
    """One drawn object: ``radius`` is half its bounding-box width; ``(x, y)`` (pixels) is inside the shape."""

    shape: str
    colour: str
    x: float
    y: float
    radius: float


Scene = tuple[Thing, ...]


@dataclass(frozen=True)
class Probe:
    """``scenes[i]`` depicts ``captions[i]``; the other caption is its minimally changed twin. A probe with one
    scene (a user's own) is scored on image→text preference only. ``kind`` says what was changed."""

    category: str
    kind: str
    captions: tuple[str, str]
    scenes: tuple[Scene, ...]
    size: int

    @property
    def images(self) -> tuple[Image.Image, ...]:
        """The scenes rendered (each access renders anew: cheap, and nothing is held in memory)."""
        return tuple(render(scene, self.size) for scene in self.scenes)

    def image(self, i: int) -> Image.Image:
        """Scene ``i`` rendered."""
        return render(self.scenes[i], self.size)


def render(scene: Scene, size: int) -> Image.Image:
    """An RGB ``size``×``size`` image of ``scene`` on the plain background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for thing in scene:
        fill = COLOURS[thing.colour]
        x, y, r = thing.x, thing.y, thing.radius
        if thing.shape == "square":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
        elif thing.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif thing.shape == "triangle":  # equilateral, pointing up, its bounding box centred on (x, y)
            h = r * math.sqrt(3)
            draw.polygon([(x, y - h / 2), (x + r, y + h / 2), (x - r, y + h / 2)], fill=fill)
        elif thing.shape == "star":  # five points, one up; outer radius r / cos(18°) so its width is 2r
            outer = r / math.cos(math.radians(18))
            points = []
            for k in range(10):
                rho = outer if k % 2 == 0 else outer * STAR_INNER
                angle = -math.pi / 2 + k * math.pi / 5
                points.append((x + rho * math.cos(angle), y + rho * math.sin(angle)))
            draw.polygon(points, fill=fill)
        else:
            raise UsageError(f"unknown shape {thing.shape!r}; known: {', '.join(SHAPES)}")
    return image


def _phrase(thing: Thing) -> str:
    return f"a {thing.colour} {thing.shape}"


def _two(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Two different shapes and two different colours, in random order."""
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), 2, replace=False)]
    names = list(COLOURS)
    colours = [names[i] for i in rng.choice(len(names), 2, replace=False)]
    return shapes, colours


def _spatial(rng: np.random.Generator, i: int, size: int) -> Probe:
    # kinds cycle so every n has them balanced: (axis, what the twin changes)
    axis, twin = [("horizontal", "relation"), ("vertical", "relation"), ("horizontal", "order"),
                  ("vertical", "order")][i % 4]
    shapes, colours = _two(rng)
    r = rng.uniform(0.10, 0.14, 2) * size
    near, far = rng.uniform(0.20, 0.35) * size, rng.uniform(0.65, 0.80) * size  # along the axis: gap ≥ 0.3·size
    across = rng.uniform(0.35, 0.65) * size + rng.uniform(-0.05, 0.05, 2) * size  # nearly aligned across it
    if axis == "horizontal":
        pos = [(near, across[0]), (far, across[1])]
        words = ("to the left of", "to the right of")
    else:
        pos = [(across[0], near), (across[1], far)]
        words = ("above", "below")
    a = Thing(shapes[0], colours[0], *pos[0], r[0])  # a is left of / above b in scene 0
    b = Thing(shapes[1], colours[1], *pos[1], r[1])
    a1, b1 = Thing(a.shape, a.colour, *pos[1], a.radius), Thing(b.shape, b.colour, *pos[0], b.radius)
    true = f"{_phrase(a)} {words[0]} {_phrase(b)}"
    other = f"{_phrase(a)} {words[1]} {_phrase(b)}" if twin == "relation" else f"{_phrase(b)} {words[0]} {_phrase(a)}"
    return Probe("spatial", f"{axis}-{twin}", (true, other), ((a, b), (a1, b1)), size)


def _counting(rng: np.random.Generator, i: int, size: int) -> Probe:
    k = (2, 3, 4)[i % 3]
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    cell = size / 3  # a 3×3 grid, at most one object per cell: objects never touch
    r = rng.uniform(0.07, 0.10) * size
    slack = cell / 2 - r - 0.02 * size
    cells = rng.choice(9, k + 1, replace=False)
    jitter = rng.uniform(-slack, slack, (k + 1, 2))
    things = tuple(Thing(shape, colour, (c % 3 + 0.5) * cell + dx, (c // 3 + 0.5) * cell + dy, r)
                   for c, (dx, dy) in zip(cells, jitter))
    captions = tuple(f"{NUMBERS[m]} {colour} {shape}s" for m in (k, k + 1))
    return Probe("counting", f"{k}-vs-{k + 1}", captions, (things[:k], things), size)  # type: ignore[arg-type]


def _negation(rng: np.random.Generator, i: int, size: int) -> Probe:
    shapes, colours = _two(rng)
    r = rng.uniform(0.10, 0.14, 2) * size
    left, right = rng.uniform(0.20, 0.35) * size, rng.uniform(0.65, 0.80) * size
    xs = (left, right) if rng.integers(2) else (right, left)
    ys = rng.uniform(0.3, 0.7, 2) * size
    present = Thing(shapes[0], colours[0], xs[0], ys[0], r[0])
    absent = Thing(shapes[1], colours[1], xs[1], ys[1], r[1])
    captions = (f"{_phrase(present)} and no {absent.shape}", f"{_phrase(present)} and a {absent.shape}")
    return Probe("negation", "no-vs-a", captions, ((present,), (present, absent)), size)


def _binding(rng: np.random.Generator, i: int, size: int) -> Probe:
    shapes, colours = _two(rng)
    r = rng.uniform(0.10, 0.14, 2) * size
    left, right = rng.uniform(0.20, 0.35) * size, rng.uniform(0.65, 0.80) * size
    xs = (left, right) if rng.integers(2) else (right, left)  # where each sits is not in the caption
    ys = rng.uniform(0.3, 0.7, 2) * size
    scene = tuple(Thing(shapes[j], colours[j], xs[j], ys[j], r[j]) for j in range(2))
    swapped = tuple(Thing(shapes[j], colours[1 - j], xs[j], ys[j], r[j]) for j in range(2))
    captions = (f"{_phrase(scene[0])} and {_phrase(scene[1])}", f"{_phrase(swapped[0])} and {_phrase(swapped[1])}")
    return Probe("binding", "colour-swap", captions, (scene, swapped), size)


_GENERATORS = {"spatial": _spatial, "counting": _counting, "negation": _negation, "binding": _binding}


def check_categories(categories: Sequence[str] | None) -> list[str]:
    """The categories asked for (all by default), in order, each once; an unknown one is an error naming it."""
    if categories is None:
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    unknown = [c for c in categories if c not in _GENERATORS]
    if unknown or not categories:
        raise UsageError(f"unknown compositional categor{'ies' if len(unknown) > 1 else 'y'} "
                         f"{', '.join(map(repr, unknown)) or '(none given)'}; known: {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(categories))


def generate_probes(category: str, n: int = 200, seed: int = 0, size: int = 224) -> list[Probe]:
    """``n`` probes of one category, fixed by ``seed``; probe ``i`` is the same for every ``n > i``."""
    (category,) = check_categories([category])
    if n < 1:
        raise UsageError(f"n={n}: ask for at least one probe")
    if size < MIN_SIZE:
        raise UsageError(f"size={size}: probe images need at least {MIN_SIZE} px to draw their shapes")
    index = CATEGORIES.index(category)
    return [_GENERATORS[category](np.random.default_rng([seed, index, i]), i, size) for i in range(n)]


def save_probes(probes: Sequence[Probe], directory: str | Path) -> list[Path]:
    """Write each probe's images as ``<category>-<i>-<j>.png`` (``i`` counts within a category) and their
    captions to ``captions.tsv`` (file, the caption it depicts, the twin) in ``directory``; returns the images."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = ["file\tcaption\ttwin"]
    counts: dict[str, int] = {}
    for probe in probes:
        i = counts[probe.category] = counts.get(probe.category, -1) + 1
        for j, image in enumerate(probe.images):
            path = directory / f"{probe.category}-{i:03d}-{j}.png"
            with atomic_file(path) as tmp:
                image.save(tmp, format="PNG")
            written.append(path)
            rows.append(f"{path.name}\t{probe.captions[j]}\t{probe.captions[1 - j]}")
    with atomic_file(directory / "captions.tsv") as tmp:
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return written
