"""The HTTP service (FastAPI on uvicorn), its web page (``static/``) and a Python client.

``create_app`` needs the ``serve`` extra (fastapi, uvicorn); ``Client`` needs only httpx. Both import lazily, so
``from clipworks.serve import Client`` works where the server's dependencies are not installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ClientError", "ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "ClientError"):
        from . import client

        return getattr(client, name)
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeSettings":
        from .settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'clipworks.serve' has no attribute {name!r}")
