"""``ServeSettings``: every limit and switch of the HTTP service in one validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from PIL import Image

from ..errors import UsageError

_DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's decompression-bomb limit (~89 Mpx)


@dataclass(frozen=True)
class ServeSettings:
    """Limits are what a service that faces a network needs: every request is bounded in bytes, pixels, texts,
    characters and results. ``api_key`` guards the writing routes (``/index/add``, ``DELETE /index/items/{id}``);
    without one they are refused. ``cors_origins`` empty means no CORS headers at all (same-origin only)."""

    api_key: str | None = None
    max_batch: int = 32  # items per model call the micro-batcher gathers
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = _DEFAULT_MAX_PIXELS
    max_text_chars: int = 1000
    max_texts: int = 256  # texts per /embed/text request
    max_k: int = 1000
    max_offset: int = 100_000
    max_labels: int = 1000  # labels per /classify request
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    thumb_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins or ()))
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("api_key: an empty key would let anyone in; give a real key or none")
        for f in fields(self):
            if f.name in ("api_key", "cors_origins"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < (0 if f.name == "max_wait_ms" else 1):
                raise UsageError(f"serve setting {f.name} must be a positive number, not {value!r}")
