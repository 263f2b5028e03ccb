"""openclipart SVGs (Debian ``openclipart-svg``): rasterised onto white, captioned from title and keywords."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from ..image.decode import ImageError
from .pairs import DataError, Pair, clean_captions

DEFAULT_DIR = Path("/usr/share/openclipart/svg")
HOW_TO_GET = ("install them with `sudo apt-get install openclipart-svg` (they land in "
              f"{DEFAULT_DIR}), or pass a directory of .svg files")
MAX_KEYWORDS = 8  # the tail of a long keyword list only pushes the caption past the 77-token context


def svg_captions(path: Path) -> tuple[str, ...]:
    """("{title}", "{title}, {keyword}, …") from the SVG's RDF metadata; the file name stands in for a missing title.

    Only the ``<metadata>`` element is parsed — it comes first, before the (large) drawing.
    """
    title, keywords = "", []
    try:
        with open(path, "rb") as f:
            for _, element in ET.iterparse(f, events=("end",)):
                if element.tag.endswith("}metadata"):
                    node = element.find(".//{*}Work/{*}title")
                    title = " ".join((node.text or "").split()) if node is not None else ""
                    keywords = [" ".join((li.text or "").replace("_", " ").split())
                                for li in element.findall(".//{*}Work/{*}subject//{*}li")]
                    break
    except (ET.ParseError, OSError):
        pass  # a broken file will also fail to render, and get() reports that
    if not title:
        title = " ".join(path.stem.replace("_", " ").replace("-", " ").split())
    seen, kept = {title.lower()}, []
    for keyword in keywords:
        if keyword and keyword.lower() not in seen:
            seen.add(keyword.lower())
            kept.append(keyword)
    kept = kept[:MAX_KEYWORDS]
    return clean_captions([title] + ([f"{title}, {', '.join(kept)}"] if kept else []))


def _renderer() -> str:
    """Which SVG rasteriser is installed: resvg-py (preferred: fast, no system cairo) or cairosvg."""
    for module in ("resvg_py", "cairosvg"):
        try:
            __import__(module)
            return module
        except (ImportError, OSError):  # cairosvg raises OSError when libcairo is missing
            continue
    raise DataError("rendering SVGs needs resvg-py or cairosvg: pip install resvg-py")


def render_svg(path: Path, size: int) -> Image.Image:
    """RGB ``size``×``size``: the drawing fitted inside (aspect kept), centred on white.

    resvg first; cairosvg, when installed, gets a second try at files resvg refuses (e.g. sizes in "pt").
    """
    errors = []
    png = None
    try:
        import resvg_py

        png = resvg_py.svg_to_bytes(svg_path=str(path), width=size, height=size, background="white")
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 — a renderer fed arbitrary files; any failure means "skip this one"
        errors.append(f"resvg: {e}")
    if png is None:
        try:
            import cairosvg

            png = cairosvg.svg2png(url=str(path), output_width=size, background_color="white")
        except (ImportError, OSError) as e:  # not installed, or libcairo missing
            errors.append(f"cairosvg: {e}")
        except Exception as e:  # noqa: BLE001 — as above
            errors.append(f"cairosvg: {type(e).__name__}: {e}")
    if png is None:
        raise ImageError(f"{path} cannot be rendered: {'; '.join(errors)}")
    drawing = Image.open(io.BytesIO(png))
    drawing.load()
    if drawing.width > size or drawing.height > size:
        drawing.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(drawing, ((size - drawing.width) // 2, (size - drawing.height) // 2),
                 drawing if drawing.mode in ("RGBA", "LA") else None)
    return canvas


class OpenClipart:
    """Every .svg under a folder (symlinked duplicates counted once), rasterised on demand at ``size`` px."""

    class_names = None

    def __init__(self, folder: str | Path | None = None, size: int = 224):
        self.folder = Path(folder) if folder is not None else DEFAULT_DIR
        if not self.folder.is_dir():
            raise DataError(f"openclipart SVGs not found: {self.folder} does not exist; " + HOW_TO_GET)
        self.renderer = _renderer()
        self.size = size
        unique: dict[Path, Path] = {}  # real file → the path that names it; the file itself beats links to it
        for svg in sorted(self.folder.rglob("*.svg"), key=lambda p: (p.is_symlink(), p)):
            if svg.is_file():
                unique.setdefault(svg.resolve(), svg)
        self.files = sorted(unique.values())
        if not self.files:
            raise DataError(f"{self.folder}: no .svg files: zero samples")
        self.description = (f"openclipart ({len(self.files)} SVGs from {self.folder}, rasterised at {size} px "
                            f"with {self.renderer})")

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> Pair:
        path = self.files[index]
        return Pair(render_svg(path, self.size), svg_captions(path), None, str(path))
