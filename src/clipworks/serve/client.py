"""``Client(url)``: the clipworks HTTP service from Python, shaped like the in-process APIs.

``search`` returns the server's page (a dict: ``hits``, ``total``, ``offset``, ``k``, ``has_more``), ``classify``
its predictions, ``embed_text``/``embed_image`` numpy float32 vectors (L2-normalised, as ``Encoder`` returns).
Images go as a path, raw bytes or a PIL image. Any 4xx/5xx answer, or a server that cannot be reached, raises
``ClientError`` with the HTTP status and the server's ``detail`` message, so callers handle one error type.

httpx is imported when a ``Client`` is made, not when ``clipworks`` is imported.
"""

from __future__ import annotations

import io
import json
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self, Union

import numpy as np

from ..errors import ClipworksError, InputTypeError, MissingFileError, require

ImageLike = Union[str, Path, bytes, bytearray, "PIL.Image.Image"]  # noqa: F821


class ClientError(ClipworksError, RuntimeError):
    """The server refused a request (``status`` 4xx/5xx, ``detail`` its message) or could not be reached
    (``status`` None)."""

    def __init__(self, status: int | None, detail: str, method: str = "", url: str = "") -> None:
        self.status, self.detail, self.method, self.url = status, detail, method, url
        where = f"{method} {url}: " if method else ""
        super().__init__(f"{where}{status} {detail}" if status is not None else f"{where}{detail}")


def _detail(response: Any) -> str:
    """The server's message: FastAPI's ``{"detail": str}``, or its validation list made one line."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # [{"loc": ["body", "k"], "msg": "..."}]
        parts = []
        for d in detail:
            if isinstance(d, Mapping):
                loc = ".".join(str(x) for x in d.get("loc", ()) if x not in ("body", "query", "path"))
                parts.append(f"{loc}: {d.get('msg', '')}" if loc else str(d.get("msg", "")))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if detail is not None:
        return str(detail)
    return (response.text or response.reason_phrase or "").strip()[:500]


def _image_file(image: ImageLike) -> tuple[str, bytes, str]:
    """``(filename, bytes, content type)`` for a multipart ``file`` field."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingFileError(f"image {path} does not exist") from None
        except IsADirectoryError:
            raise MissingFileError(f"image {path} is a folder, not a file") from None
        return path.name, data, mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "image", bytes(image), "application/octet-stream"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the server sees the pixels the caller has
        return "image.png", buffer.getvalue(), "image/png"
    raise InputTypeError(f"image: expected a file path, bytes or a PIL image, got {type(image).__name__}")


class Client:
    """A connection to ``clipworks serve`` at ``url`` (e.g. ``http://127.0.0.1:8000``).

    ``api_key`` is sent as ``Authorization: Bearer KEY`` (needed for ``add`` and ``delete``); ``timeout`` is in
    seconds per request. Use as a context manager, or call ``close()``, to release the connection pool."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30) -> None:
        httpx = require("httpx", "serve", "clipworks.Client")
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- the service ---------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "model": …, "items": n}``."""
        return self._request("GET", "/healthz").json()

    def search(self, q: str | None = None, image: ImageLike | None = None, k: int = 10, offset: int = 0,
               filters: Mapping[str, Any] | None = None, like: int | None = None) -> dict[str, Any]:
        """One page of hits for a text query ``q`` (the query syntax of ``clipworks search``), an ``image``, or
        ``like`` = the id of an indexed item ("more like this"); ``filters`` as in ``Filters.from_mapping``
        (``{"folder": "2024", "after": "2024-05-01", "tag": ["cat"]}``)."""
        given = [name for name, v in (("q", q), ("image", image), ("like", like)) if v is not None]
        if len(given) != 1:
            raise InputTypeError("search: give exactly one of q (text), image or like (an item id)"
                                 + (f"; got {', '.join(given)}" if given else ""))
        body: dict[str, Any] = {"k": k, "offset": offset}
        if filters:
            body["filters"] = dict(filters)
        if image is not None:
            form = {key: json.dumps(value) if isinstance(value, Mapping) else str(value) for key, value in body.items()}
            return self._request("POST", "/search", data=form, files={"file": _image_file(image)}).json()
        if like is not None:
            body["id"] = like
        else:
            body["q"] = q
        return self._request("POST", "/search", json=body).json()

    def item(self, id: int) -> dict[str, Any]:
        """The metadata of indexed item ``id``, shaped like a hit."""
        return self._request("GET", f"/items/{int(id)}").json()

    def thumbnail(self, id: int) -> bytes:
        """The JPEG thumbnail of indexed item ``id``."""
        return self._request("GET", f"/thumb/{int(id)}").content

    def image(self, id: int) -> bytes:
        """The original file of indexed item ``id``."""
        return self._request("GET", f"/image/{int(id)}").content

    def classify(self, image: ImageLike, labels: Sequence[str], templates: str | Sequence[str] | None = None,
                 k: int = 5) -> dict[str, Any]:
        """Zero-shot: ``{"predictions": [{"label", "probability"}, …] (best first, at most k), "sigmoid": bool}``.
        ``templates``: a template-set name (``"openai-imagenet"``) or a list of ``"a photo of {}."`` strings."""
        if isinstance(labels, str):
            raise InputTypeError("classify: labels is a list of strings, not one string")
        form = {"labels": json.dumps(list(labels)), "k": str(k)}
        if templates is not None:
            form["templates"] = templates if isinstance(templates, str) else json.dumps(list(templates))
        return self._request("POST", "/classify", data=form, files={"file": _image_file(image)}).json()

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """``float32 [N, D]`` for a list of texts; ``[D]`` for one string."""
        one = isinstance(texts, str)
        body = {"texts": [texts] if one else list(texts)}
        vectors = np.asarray(self._request("POST", "/embed/text", json=body).json()["embeddings"], dtype=np.float32)
        return vectors[0] if one else vectors

    def embed_image(self, image: ImageLike) -> np.ndarray:
        """``float32 [D]``."""
        answer = self._request("POST", "/embed/image", files={"file": _image_file(image)}).json()
        return np.asarray(answer["embedding"], dtype=np.float32)

    def add(self, folder: str | None = None) -> dict[str, Any]:
        """Index new and changed files under the root (or its sub-folder ``folder``); the AddReport as a dict.
        Needs the API key."""
        return self._request("POST", "/index/add", json={"folder": folder} if folder is not None else {}).json()

    def delete(self, id: int) -> dict[str, Any]:
        """Remove indexed item ``id``. Needs the API key."""
        response = self._request("DELETE", f"/index/items/{int(id)}")
        return response.json() if response.content else {}

    # -- transport -----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except self._httpx.TimeoutException as e:
            raise ClientError(None, f"no answer from {self.url} within the timeout ({type(e).__name__})",
                              method, path) from e
        except self._httpx.TransportError as e:
            raise ClientError(None, f"cannot reach {self.url}: {e}", method, path) from e
        if response.status_code >= 400:
            raise ClientError(response.status_code, _detail(response), method, path)
        return response
