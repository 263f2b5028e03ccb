"""What a client may send, parsed and bounded: request bodies, uploads, texts, labels, templates, folders.

Every check raises ``HTTPException`` with a 4xx and a message that starts with the field it is about, so a client
(or the web page) can point at it. Nothing here reads a server file: templates are a built-in set or given inline,
folders are relative to the indexed root without ``..``.
"""

import json
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from ..zeroshot.templates import TEMPLATE_SETS, check_templates
from .security import decode_image, read_upload, validation_message
from .settings import ServeSettings

MAX_TEMPLATES = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedTextRequest(_Strict):
    texts: list[StrictStr]


class SearchRequest(_Strict):
    q: StrictStr | None = None
    id: StrictInt | None = None
    k: StrictInt = 10
    offset: StrictInt = 0
    filters: dict[str, Any] | None = None


class AddRequest(_Strict):
    folder: StrictStr | None = None


def check_texts(texts: list[str], field: str, s: ServeSettings) -> None:
    if not texts:
        raise HTTPException(422, f"{field}: give at least one text")
    if len(texts) > s.max_texts:
        raise HTTPException(422, f"{field}: {len(texts)} texts is over the limit of {s.max_texts} per request")
    for i, t in enumerate(texts):
        check_text(t, f"{field}.{i}", s)


def check_text(text: str, field: str, s: ServeSettings) -> None:
    if not text.strip():
        raise HTTPException(422, f"{field}: empty text")
    if len(text) > s.max_text_chars:
        raise HTTPException(422, f"{field}: {len(text)} characters is over the limit of {s.max_text_chars}")


async def uploaded_image(upload: Any, field: str, s: ServeSettings) -> Image.Image:
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, f"{field}: expected an uploaded image file (multipart/form-data field {field!r})")
    data = await read_upload(upload, field, s.max_upload_bytes)
    return await run_in_threadpool(decode_image, data, field, s.max_pixels)


def parse_json_field(raw: str | bytes, field: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPException(422, f"{field}: not valid JSON ({e.__class__.__name__} at position "
                                 f"{getattr(e, 'pos', getattr(e, 'start', '?'))})") from None


def form_int(value: Any, field: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise HTTPException(422, f"{field}: {str(value)[:40]!r} is not an integer") from None


def validated(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise HTTPException(422, f"body: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise HTTPException(422, validation_message(RequestValidationError(e.errors()))) from None


def parse_labels(labels: str, s: ServeSettings) -> list[str]:
    text = labels.strip()
    if text.startswith("["):
        names = parse_json_field(text, "labels")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HTTPException(422, "labels: a JSON list of label strings was expected")
    else:
        names = text.split(",")
    names = [n.strip() for n in names]
    if len(names) < 1 or not all(names):
        raise HTTPException(422, "labels: give one or more non-empty labels, comma-separated or as a JSON list")
    if len(names) > s.max_labels:
        raise HTTPException(422, f"labels: {len(names)} labels is over the limit of {s.max_labels}")
    if len(set(names)) != len(names):
        raise HTTPException(422, "labels: a label is given twice")
    check_texts(names, "labels", s)
    return names


def parse_templates(templates: str | None, s: ServeSettings) -> tuple[str, ...]:
    """A built-in set name, a JSON list of templates, or one template with ``{}`` — never a file on the server."""
    if templates is None or not templates.strip():
        return TEMPLATE_SETS["simple"]
    text = templates.strip()
    if text in TEMPLATE_SETS:
        return TEMPLATE_SETS[text]
    if text.startswith("["):
        temps = parse_json_field(text, "templates")
        if not isinstance(temps, list) or not all(isinstance(t, str) for t in temps):
            raise HTTPException(422, "templates: a JSON list of template strings was expected")
    elif "{}" in text:
        temps = [text]
    else:
        raise HTTPException(422, f"templates: {text[:40]!r} is not a built-in set ({', '.join(TEMPLATE_SETS)}), a "
                                 "JSON list, nor a template with '{}' where the label goes")
    if len(temps) > MAX_TEMPLATES:
        raise HTTPException(422, f"templates: {len(temps)} templates is over the limit of {MAX_TEMPLATES}")
    check_texts(temps, "templates", s)
    return check_templates(temps)


def relative_folder(folder: str) -> str:
    """A client's folder: relative to the indexed root, no '..', no absolute path."""
    text = folder.replace("\\", "/").strip()
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise HTTPException(422, "folder: give a folder relative to the indexed root, not an absolute path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HTTPException(422, "folder: '..' is not allowed (folders are relative to the indexed root)")
    return "/".join(parts)
