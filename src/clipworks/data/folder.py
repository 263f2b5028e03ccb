"""A folder of images, each with a same-stem ``.txt`` sidecar holding its captions, one per line."""

from __future__ import annotations

from pathlib import Path

from ..image.decode import IMAGE_SUFFIXES, load_image
from .pairs import DataError, Pair, clean_captions


def image_files(root: Path) -> list[Path]:
    """Image files under ``root``, sorted, skipping hidden files and folders (.ipynb_checkpoints, temp files)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


class FolderSource:
    """Images under a directory (recursively) paired with sidecars; images without captions are left out
    and counted in ``description`` — and if none has any, that is an error, since it is surely the wrong folder."""

    class_names = None

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such directory")
        found = image_files(self.root)
        if not found:
            raise DataError(f"{self.root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}): zero samples")
        self.images: list[Path] = []
        self.captions: list[tuple[str, ...]] = []
        uncaptioned: list[Path] = []
        for image in found:
            sidecar = image.with_suffix(".txt")
            captions = clean_captions(sidecar.read_text(encoding="utf-8").splitlines()) if sidecar.is_file() else ()
            if captions:
                self.images.append(image)
                self.captions.append(captions)
            else:
                uncaptioned.append(image)
        if not self.images:
            raise DataError(f"{self.root}: {len(found)} images but no captions — each image needs a same-stem .txt "
                            f"sidecar with one caption per line (e.g. {found[0].with_suffix('.txt')})")
        self.uncaptioned = uncaptioned
        self.description = f"{self.root} ({len(self.images)} images with captions" + (
            f"; {len(uncaptioned)} without a .txt sidecar left out)" if uncaptioned else ")")

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> Pair:
        return Pair(load_image(self.images[index]), self.captions[index], None, str(self.images[index]))
