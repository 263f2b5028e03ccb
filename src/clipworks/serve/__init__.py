"""The HTTP service (``clipworks serve``): search, zero-shot classification and embeddings over FastAPI/uvicorn.

FastAPI is an optional dependency (extra ``serve``); ``create_app`` imports it when called, naming the extra when
it is missing. ``ServeSettings`` needs nothing beyond the library. ``Client`` (``client.py``, httpx) is imported
on first use, so the client works where the server's dependencies are not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..encoder import Encoder
    from ..search.index import Index


def create_app(index: Index | None = None, encoder: Encoder | None = None, *,
               settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app of the service (see ``serve/app.py``)."""
    import importlib.util

    from ..errors import require

    require("fastapi", "serve", "the HTTP service")
    if not any(importlib.util.find_spec(m) for m in ("python_multipart", "multipart")):
        require("python_multipart", "serve", "the HTTP service's uploads")
    from .app import create_app as _create_app

    return _create_app(index, encoder, settings=settings)


def __getattr__(name: str) -> Any:
    if name in ("Client", "ClientError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'clipworks.serve' has no attribute {name!r}")


__all__ = ["Client", "ClientError", "ServeSettings", "create_app"]


