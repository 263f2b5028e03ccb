"""``clipworks serve``: the HTTP service (search, classify, embed) on uvicorn — a thin wrapper over ``clipworks.serve``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from ..cpu import set_threads
from ..errors import UsageError, require
from .common import BackendArg, DeviceArg, PrecisionArg, ThreadsArg, err, load_encoder, open_index, user_errors

LOOPBACK = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    index_dir: Annotated[Path | None, typer.Option("--index", "-i", metavar="IDX", help="Index folder to search "
                                                   "(from `clipworks index build`); its model is served.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to serve (with --index: optional, must "
                                              "be the index's model).")] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Pretrained tag of --model or a checkpoint "
                                                   "file.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; the default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CLIPWORKS_API_KEY", help="Key the index-"
                                                "changing routes require (Authorization: Bearer KEY); without one "
                                                "they are off. Prefer the CLIPWORKS_API_KEY variable: a key on the "
                                                "command line is visible to other users.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most items per model call of the micro-batcher.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to batch with.")] = 5.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest upload accepted, in MB.")] = 20.0,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow browser pages from this "
                                                          "origin (repeatable); CORS is off without it.")] = None,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve search, zero-shot classification and embeddings over HTTP (API docs at /docs, a search page at /)."""
    with user_errors():
        set_threads(threads)
        require("uvicorn", "serve", "clipworks serve")
        from ..serve import ServeSettings, create_app

        if index_dir is None and model is None:
            raise UsageError("give --index IDX (its model is served), or --model to serve embeddings and "
                             "classification without an index")
        if model is None and pretrained is not None:
            raise UsageError("--pretrained needs --model")
        settings = ServeSettings(api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                 max_upload_bytes=int(max_upload_mb * 1_000_000), cors_origins=tuple(cors_origin or ()))
        index = None
        if index_dir is not None:
            index = open_index(index_dir, model, pretrained, backend, precision, device)
            with err.status(f"loading {index.ref.describe()}"):
                encoder = index.encoder
        else:
            encoder = load_encoder(model, pretrained, device, backend=backend, precision=precision)  # type: ignore[arg-type]
        if not _is_loopback(host):
            err.print(f"[yellow]warning:[/yellow] binding {host} exposes the service to the network"
                      + ("" if api_key else "; the index-changing routes are off without --api-key"), highlight=False)
        app = create_app(index, encoder, settings=settings)
    import uvicorn

    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        if index is not None:
            index.close()
