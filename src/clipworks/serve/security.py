"""What a service that faces a network needs: the API key, bounded bodies, safe image decoding, errors that leak
nothing.

- The key is compared with ``hmac.compare_digest`` (constant time); it may come as ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY``. Missing → 401, wrong → 403; with no key configured the writing routes are off (403).
- Bodies are bounded twice: ``BodyLimit`` refuses a declared ``Content-Length`` over the limit before reading, and
  counts the bytes of a streamed body as they arrive (413 as soon as it passes the limit); an upload is then
  read in chunks against ``max_upload_bytes``.
- Images are decoded only in a few raster formats (no EPS/PDF: those call out to other programs), with the pixel
  count checked from the header before any pixel is decoded, and PIL's ``DecompressionBombWarning`` as an error.
- Error bodies are ``{"detail": "..."}``: validation errors name the field; any message has the server's paths
  replaced (``<index>``, ``<root>``, ``<path>``); an unexpected exception is logged and answered "internal error".
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BusyError, ClipworksError, MissingFileError

log = logging.getLogger("clipworks.serve")

#: Formats an upload may be in (PIL names); everything else is refused before decoding.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
_CHUNK = 1 << 16
_ABSOLUTE = re.compile(r"(?<![\w.:/<])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\<>]+[/\\])+[^\s'\",;:)<>]*")


# -- the API key -------------------------------------------------------------------------------------------------
def check_api_key(request: Request, api_key: str | None) -> None:
    """Let the request through only with the configured key (constant-time comparison)."""
    if api_key is None:
        raise HTTPException(403, "this server was started without an API key, so changing the index is off "
                                 "(start it with --api-key KEY)")
    given = request.headers.get("x-api-key") or None
    auth = request.headers.get("authorization")
    if given is None and auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
    if not given:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), api_key.encode("utf-8", "surrogatepass")):
        raise HTTPException(403, "wrong API key")


# -- bounded bodies ----------------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, declared or streamed, without reading past it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "content-length: not a number")
            if declared > self.limit:
                return await _send_error(send, 413, f"request body of {declared} bytes is over the limit of "
                                                    f"{self.limit} bytes")
        seen = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body is over the limit of {self.limit} bytes")
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except HTTPException as e:  # raised while a body was being read outside a route's handlers
            if started:
                raise
            await _send_error(send, e.status_code, str(e.detail))


async def _send_error(send: Any, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


async def read_upload(upload: Any, field: str, max_bytes: int) -> bytes:
    """An uploaded file's bytes, read in chunks and refused (413) as soon as they pass ``max_bytes``."""
    if upload is None or not hasattr(upload, "read"):
        raise HTTPException(422, f"{field}: expected an uploaded file (multipart/form-data field {field!r})")
    parts, total = [], 0
    while chunk := await upload.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise HTTPException(413, f"{field}: upload is over the limit of {max_bytes} bytes")
        parts.append(chunk)
    if total == 0:
        raise HTTPException(422, f"{field}: the uploaded file is empty")
    return b"".join(parts)


# -- safe decoding -----------------------------------------------------------------------------------------------
def decode_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes into an RGB-able PIL image, or refuse: 415 not an image (or a refused format), 413
    too many pixels, 422 a damaged image. Messages name the field, never a path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise HTTPException(413, f"{field}: image of {width}×{height} = {width * height} pixels is over "
                                         f"the limit of {max_pixels} pixels")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # the first frame of an animation
            image.load()
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise HTTPException(415, f"{field}: not an image in a supported format "
                                 f"({', '.join(f.lower() for f in UPLOAD_FORMATS)})") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise HTTPException(413, f"{field}: image refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise HTTPException(422, f"{field}: the image cannot be decoded ({type(e).__name__}: "
                                 f"{scrub(str(e), ())})") from None
    except Exception as e:  # noqa: BLE001 (a decoder bug on a hostile file is the file's fault, not a 500)
        log.warning("decoder error on an upload: %r", e)
        raise HTTPException(422, f"{field}: the image cannot be decoded ({type(e).__name__})") from None
    return image


# -- errors that leak nothing ------------------------------------------------------------------------------------
def scrub(message: str, paths: Iterable[tuple[str, str]]) -> str:
    """``message`` with each known ``(path, name)`` replaced by ``<name>`` and any other absolute path by
    ``<path>``."""
    for path, name in sorted(paths, key=lambda p: -len(p[0])):
        if path and len(path) > 1:
            message = message.replace(path, f"<{name}>")
    return _ABSOLUTE.sub("<path>", message)


def known_paths(*named: tuple[Path | None, str]) -> list[tuple[str, str]]:
    out = []
    for path, name in named:
        if path is None:
            continue
        for p in {str(path), str(Path(path).absolute()), str(Path(path).resolve())}:
            out.append((p, name))
    return out


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's error list as one line naming each field: ``query.k: Input should be less than or equal to 1000``."""
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body" or len(err.get("loc", ())) == 1)
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: Any, paths: list[tuple[str, str]]) -> None:
    """Every error becomes ``{"detail": str}`` with a 4xx (or 500 "internal error"), scrubbed of paths."""

    def reply(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": scrub(detail, paths)}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return reply(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, validation_message(exc))

    @app.exception_handler(ClipworksError)
    async def user_error(request: Request, exc: ClipworksError) -> JSONResponse:
        status = 404 if isinstance(exc, MissingFileError) else 409 if isinstance(exc, BusyError) else 422
        return reply(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return reply(500, "internal error (the server log has the details)")
