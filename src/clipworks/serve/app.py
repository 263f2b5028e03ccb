"""``create_app``: the HTTP service over one model and (optionally) one index — FastAPI routes of the issue-10 contract.

The model is loaded once (the index's own model when an index is given) and every embedding goes through the
micro-batchers (``batcher.py``); searches read consistent snapshots of the index while writes run (``live.py``);
every input is bounded and every error is a ``{"detail": …}`` 4xx that names the field and no server path
(``security.py``). Route handlers stay thin: the work is the library's (``search``, ``ZeroShotClassifier``).
"""


import contextlib
import glob
import io
import mimetypes
import os
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from PIL import Image, ImageOps

from ..encoding import EncoderLike as Encoder
from ..errors import UsageError
from ..image.decode import ImageError, load_image, to_rgb
from ..modelref import ModelRef
from ..search.filters import Filters
from ..search.index import Index
from ..search.retrieve import Page, search
from ..zeroshot.classifier import ZeroShotClassifier
from .batcher import MicroBatcher
from .inputs import (
    AddRequest,
    EmbedTextRequest,
    SearchRequest,
    check_text,
    check_texts,
    form_int,
    parse_json_field,
    parse_labels,
    parse_templates,
    relative_folder,
    uploaded_image,
    validated,
)
from .live import LiveIndex
from .metrics import Metrics
from .security import (
    BodyLimit,
    check_api_key,
    install_error_handlers,
    known_paths,
    scrub,
)
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
MAX_ID = 2**63 - 1
_FORM_SLACK = 64 * 1024  # multipart boundaries and small form fields beside the one file
_THUMB_CACHE = 2048
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
ItemId = Annotated[int, PathParam(ge=0, le=MAX_ID, description="An indexed item's id.")]


def public_model(ref: ModelRef) -> str:
    """``ref.describe()`` with a checkpoint path shortened to its name (a server path is nobody's business)."""
    strip = {k: Path(v).name for k in ("model", "pretrained") if (v := getattr(ref, k)) and os.path.isabs(v)}
    return replace(ref, **strip).describe()


def hit_json(hit: Any) -> dict[str, Any]:
    item = hit.item
    return {"id": item.id, "rank": hit.rank, "score": hit.score, "path": item.path, "caption": item.caption,
            "tags": list(item.tags), "size": item.size, "mtime": item.mtime}


def page_json(page: Page) -> dict[str, Any]:
    return {"hits": [hit_json(h) for h in page.hits], "total": page.total, "offset": page.offset, "k": page.k,
            "has_more": page.has_more, "query": page.query if not page.query.startswith("<vector") else None,
            "filters": page.filters, "note": page.note}


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the ``fastapi-offline`` wheel (the ``serve`` extra), so ``/docs`` works offline;
    without it FastAPI's default page loads them from a CDN."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    static = Path(fastapi_offline.__file__).parent / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def _offline_docs(app: FastAPI, assets: Path) -> None:
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/static/docs", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="clipworks API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="clipworks API",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png", with_google_fonts=False)


class Service:
    """What the routes share: the model, the index, the batchers, the metrics, a few caches."""

    def __init__(self, index: Index | None, encoder: Encoder, settings: ServeSettings) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model_name = public_model(encoder.ref)
        self.live = LiveIndex.of(index, encoder) if index is not None else None
        self.metrics = Metrics(index_size=(lambda: len(self.live)) if self.live is not None else None)
        self.text = MicroBatcher(encoder.encode_text, settings.max_batch, settings.max_wait_ms, "text",
                                 on_batch=lambda n: self.metrics.batch("text", n))
        self.image = MicroBatcher(encoder.encode_pixels, settings.max_batch, settings.max_wait_ms, "image",
                                  on_batch=lambda n: self.metrics.batch("image", n))
        self.thumbs: OrderedDict[int, bytes] = OrderedDict()
        self.cache_lock = threading.Lock()
        self.classifiers: OrderedDict[tuple, ZeroShotClassifier] = OrderedDict()
        root = self.live.root if self.live else None
        self.paths = known_paths((root, "root"), (self.live.path if self.live else None, "index"),
                                 (Path.home(), "home"), (Path.cwd(), "cwd"))

    async def embed_image(self, image: Image.Image) -> np.ndarray:
        """One image's embedding: preprocessed in a request thread (in parallel, while the model runs), then batched
        with other requests' images into one model call."""
        pixels = await run_in_threadpool(self.encoder.pixels, image)
        return (await self.image.submit([pixels]))[0]

    def need_index(self) -> LiveIndex:
        if self.live is None:
            raise HTTPException(404, "no index is served: start the server with --index IDX")
        return self.live

    async def aclose(self) -> None:
        await self.text.aclose()
        await self.image.aclose()
        if self.live is not None:
            self.live.close()


def create_app(index: Index | None = None, encoder: Encoder | None = None, *,
               settings: ServeSettings | None = None) -> FastAPI:
    """The service. ``encoder`` defaults to the index's own model; one of the two is needed."""
    settings = settings or ServeSettings()
    if encoder is None:
        if index is None:
            raise UsageError("create_app needs an index (its model is served) or an encoder")
        encoder = index.encoder
    elif index is not None:
        index.check_encoder(encoder)
    svc = Service(index, encoder, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await svc.aclose()

    docs_assets = _swagger_assets()
    app = FastAPI(title="clipworks", version="1", lifespan=lifespan,
                  description="Search, zero-shot classification and embeddings with one CLIP model.",
                  **({"docs_url": None, "redoc_url": None} if docs_assets else {}))
    app.state.service = svc
    if docs_assets:
        _offline_docs(app, docs_assets)
    install_error_handlers(app, svc.paths)
    # Middleware, innermost first: the body limit, CORS (so a 413 still carries its headers), then the metrics.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + _FORM_SLACK)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST",
                           "DELETE"], allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(_Observe, metrics=svc.metrics)
    s = settings

    # -- health, metrics, the page -------------------------------------------------------------------------------
    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": svc.model_name, "dim": encoder.embed_dim,
                "items": len(svc.live) if svc.live is not None else 0}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> Response:
        if (STATIC / "index.html").is_file():
            return FileResponse(STATIC / "index.html", media_type="text/html")
        return HTMLResponse("<!doctype html><title>clipworks</title><p>clipworks is serving; the API is at "
                            "<a href='/docs'>/docs</a>.")

    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- embeddings ------------------------------------------------------------------------------------------------
    @app.post("/embed/text", tags=["embed"])
    async def embed_text(body: EmbedTextRequest) -> dict[str, Any]:
        check_texts(body.texts, "texts", s)
        rows = await svc.text.submit(body.texts)
        return {"embeddings": rows.tolist(), "dim": int(rows.shape[1]), "model": svc.model_name}

    @app.post("/embed/image", tags=["embed"])
    async def embed_image(file: Annotated[UploadFile, File(description="An image (JPEG, PNG, WebP, …).")]
                          ) -> dict[str, Any]:
        image = await uploaded_image(file, "file", s)
        row = await svc.embed_image(image)
        return {"embedding": row.tolist(), "dim": int(row.shape[0]), "model": svc.model_name}

    # -- zero-shot classification ------------------------------------------------------------------------------------
    @app.post("/classify", tags=["classify"])
    async def classify(file: Annotated[UploadFile, File()], labels: Annotated[str, Form(max_length=200_000)],
                       templates: Annotated[str | None, Form(max_length=100_000)] = None,
                       k: Annotated[int, Form(ge=1, le=1000)] = 5) -> dict[str, Any]:
        names = parse_labels(labels, s)
        temps = parse_templates(templates, s)
        image = await uploaded_image(file, "file", s)
        classifier = await run_in_threadpool(svc_classifier, svc, names, temps)
        row = (await svc.embed_image(image))[None]
        probs, idx = classifier.topk(row, min(k, len(names)))
        return {"predictions": [{"label": names[j], "probability": float(p)} for j, p in zip(idx[0], probs[0])],
                "sigmoid": classifier.uses_sigmoid, "model": svc.model_name}

    # -- search ------------------------------------------------------------------------------------------------------
    @app.get("/search", tags=["search"])
    async def search_get(
        q: Annotated[str | None, Query(max_length=s.max_text_chars, description="Text to search for.")] = None,
        id: Annotated[int | None, Query(ge=0, le=MAX_ID, description="More like this indexed item.")] = None,
        k: Annotated[int, Query(ge=1, le=s.max_k)] = 10,
        offset: Annotated[int, Query(ge=0, le=s.max_offset)] = 0,
        folder: Annotated[str | None, Query(max_length=1000)] = None,
        after: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[str | None, Query(max_length=64)] = None,
        tag: Annotated[list[str] | None, Query(max_length=50)] = None,
        min_size: Annotated[str | None, Query(max_length=32)] = None,
        max_size: Annotated[str | None, Query(max_length=32)] = None,
    ) -> dict[str, Any]:
        filters = {"folder": folder, "after": after, "before": before, "tag": tag, "min_size": min_size,
                   "max_size": max_size}
        return await run_search(svc, q, id, None, k, offset, {f: v for f, v in filters.items() if v})

    @app.post("/search", tags=["search"], openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": SearchRequest.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "k": {"type": "integer"}, "offset": {"type": "integer"},
            "filters": {"type": "string", "description": "JSON object of filters"}}}}}}})
    async def search_post(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=20)
            except HTTPException:
                raise
            except Exception as e:  # noqa: BLE001 (python-multipart's errors: a malformed or truncated body)
                raise HTTPException(422, f"body: malformed multipart/form-data ({type(e).__name__})") from None
            image = await uploaded_image(form.get("file"), "file", s)
            fields = {key: form.get(key) for key in ("q", "k", "offset", "filters") if form.get(key) is not None}
            if "filters" in fields:
                fields["filters"] = parse_json_field(fields["filters"], "filters")
            direct = {key: form.get(key) for key in ("folder", "after", "before", "min_size", "max_size")
                      if form.get(key)}
            if form.getlist("tag"):
                direct["tag"] = [str(t) for t in form.getlist("tag")]
            if direct:  # filters as plain form fields, as in GET /search
                if not isinstance(fields.get("filters", {}), dict):
                    raise HTTPException(422, "filters: expected a JSON object")
                fields["filters"] = {**fields.get("filters", {}), **{k: str(v) if k != "tag" else v
                                                                    for k, v in direct.items()}}
            for key in ("k", "offset"):
                if key in fields:
                    fields[key] = form_int(fields[key], key)
            body = validated(SearchRequest, fields)
            if body.id is not None:
                raise HTTPException(422, "id: give a query image or an item id, not both")
            return await run_search(svc, body.q, None, image, body.k, body.offset, body.filters)
        if kind not in ("application/json", ""):
            raise HTTPException(415, f"content-type {kind!r}: POST /search takes application/json or "
                                     "multipart/form-data")
        raw = await request.body()
        body = validated(SearchRequest, parse_json_field(raw, "body"))
        return await run_search(svc, body.q, body.id, None, body.k, body.offset, body.filters)

    # -- items -------------------------------------------------------------------------------------------------------
    @app.get("/items/{item_id}", tags=["items"])
    def item(item_id: ItemId) -> dict[str, Any]:
        with svc.need_index().reader() as snap:
            found = lookup(snap, item_id)
            out = {"id": found.id, "path": found.path, "caption": found.caption, "tags": list(found.tags),
                   "size": found.size, "mtime": found.mtime, "rank": None, "score": None}
        return out

    @app.get("/thumb/{item_id}", tags=["items"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumb(item_id: ItemId) -> Response:
        with svc.cache_lock:
            data = svc.thumbs.get(item_id)
        if data is None:
            with svc.need_index().reader() as snap:
                file = item_file(snap, lookup(snap, item_id))
            data = thumbnail(file, item_id, s.thumb_size)
            with svc.cache_lock:
                svc.thumbs[item_id] = data
                while len(svc.thumbs) > _THUMB_CACHE:
                    svc.thumbs.popitem(last=False)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/image/{item_id}", tags=["items"], response_class=FileResponse)
    def image(item_id: ItemId) -> FileResponse:
        with svc.need_index().reader() as snap:
            found = lookup(snap, item_id)
            file = item_file(snap, found)
        media = mimetypes.guess_type(found.path)[0] or "application/octet-stream"
        if not media.startswith("image/"):
            media = "application/octet-stream"
        return FileResponse(file, media_type=media, content_disposition_type="inline",
                            filename=posixpath.basename(found.path))

    # -- writes ------------------------------------------------------------------------------------------------------
    @app.post("/index/add", tags=["index"])
    async def index_add(request: Request) -> dict[str, Any]:
        check_api_key(request, s.api_key)
        live = svc.need_index()
        raw = await request.body()
        body = validated(AddRequest, parse_json_field(raw, "body")) if raw.strip() else AddRequest()
        folder = live.root if body.folder is None else live.root / relative_folder(body.folder)
        report = await run_in_threadpool(live.write, lambda w: w.add(folder))
        with svc.cache_lock:
            svc.thumbs.clear()
        failures = [{"path": relative(f, live.root), "error": scrub(str(e), svc.paths)} for f, e in report.failures]
        return {"added": report.added, "updated": report.updated, "moved": report.moved,
                "unchanged": report.unchanged, "removed": report.removed, "excluded": report.excluded,
                "embedded": report.embedded, "reused": report.reused, "failed": report.failed,
                "failures": failures, "warnings": [scrub(w, svc.paths) for w in report.warnings],
                "seconds": report.seconds, "items": len(live)}

    @app.delete("/index/items/{item_id}", tags=["index"])
    async def index_delete(request: Request, item_id: ItemId) -> dict[str, Any]:
        check_api_key(request, s.api_key)
        live = svc.need_index()
        with live.reader() as snap:
            found = lookup(snap, item_id)
        removed = await run_in_threadpool(live.write, lambda w: w.remove(glob.escape(found.path), exclude=True))
        with svc.cache_lock:
            svc.thumbs.pop(item_id, None)
        return {"removed": removed, "id": item_id, "path": found.path, "items": len(live)}

    return app


# -- helpers of the routes ------------------------------------------------------------------------------------------
class _Observe:
    """ASGI middleware: request counts and latency by route template (``unmatched`` when no route matched)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def observe_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "unmatched")
            self.metrics.request(name, scope.get("method", ""), status, time.perf_counter() - start)


def svc_classifier(svc: Service, names: list[str], temps: tuple[str, ...]) -> ZeroShotClassifier:
    key = (tuple(names), temps)
    with svc.cache_lock:
        found = svc.classifiers.get(key)
    if found is None:
        found = ZeroShotClassifier.build(svc.encoder, names, list(temps))
        with svc.cache_lock:
            svc.classifiers[key] = found
            while len(svc.classifiers) > 32:
                svc.classifiers.popitem(last=False)
    return found


def relative(path: Path, root: Path) -> str:
    for base in (root, root.resolve()):
        with contextlib.suppress(ValueError):
            return Path(path).relative_to(base).as_posix()
    return Path(path).name


def lookup(index: Index, item_id: int) -> Any:
    try:
        return index.items([item_id])[0]
    except KeyError:
        raise HTTPException(404, f"id: no indexed item has id {item_id}") from None


def item_file(index: Index, item: Any) -> Path:
    """The item's file under the root — from the index's own record, never from the client."""
    rel = posixpath.normpath(item.path)
    if rel.startswith(("/", "../")) or rel in ("..", "."):
        raise HTTPException(404, f"item {item.id}: its recorded path is not under the indexed folder")
    file = Path(index.root) / rel
    if not file.is_file():
        raise HTTPException(404, f"item {item.id}: its file is no longer in the indexed folder")
    return file


def thumbnail(file: Path, item_id: int, size: int) -> bytes:
    try:
        image = load_image(file)
    except ImageError:
        raise HTTPException(404, f"item {item_id}: its file can no longer be read as an image") from None
    image = to_rgb(ImageOps.exif_transpose(image))
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


async def run_search(svc: Service, q: str | None, item_id: int | None, image: Image.Image | None, k: int,
                     offset: int, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    s = svc.settings
    live = svc.need_index()
    given = [name for name, v in (("q", q), ("id", item_id), ("file", image)) if v is not None]
    if len(given) != 1:
        raise HTTPException(422, "q: give exactly one of q (text), id (more like this) or file (a query image)"
                            + (f"; got {', '.join(given)}" if given else ""))
    if not 1 <= k <= s.max_k:
        raise HTTPException(422, f"k: must be between 1 and {s.max_k}, not {k}")
    if not 0 <= offset <= s.max_offset:
        raise HTTPException(422, f"offset: must be between 0 and {s.max_offset}, not {offset}")
    filters = dict(filters or {})
    if isinstance(filters.get("folder"), str):
        filters["folder"] = relative_folder(filters["folder"]) or None
    if q is not None:
        check_text(q, "q", s)
        vector = (await svc.text.submit([q]))[0]
    elif image is not None:
        vector = await svc.embed_image(image)
    else:
        if not 0 <= item_id <= MAX_ID:  # type: ignore[operator]
            raise HTTPException(422, f"id: {item_id} is not an item id")
        vector = None

    def run() -> dict[str, Any]:
        with live.reader() as index:
            query = vector
            if query is None:
                lookup(index, item_id)  # type: ignore[arg-type]
                query = index.vectors([item_id])[0]  # type: ignore[list-item]
            chosen = Filters.from_mapping(filters, root=Path(index.root))
            out = page_json(search(index, np.asarray(query, np.float32), k=k, offset=offset, filters=chosen))
            if item_id is not None:
                out["query"] = f"more like item {item_id}"
            elif q is not None:
                out["query"] = q
            return out

    return await run_in_threadpool(run)

