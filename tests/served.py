"""A real clipworks server on 127.0.0.1 for end-to-end tests: a small photo library, its index, uvicorn in a
thread on a socket the test bound itself (port 0, so no race for a free port)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
from conftest import photo
from PIL import Image

API_KEY = "test-key-0123456789"

# Nine real photos in three folders, three generated images, and a name the page must escape. Distinct pictures
# give distinct embeddings even with random weights; the dates let the date filters split them.
LIBRARY = {
    "trips/astronaut.jpg": "astronaut",
    "trips/rocket.jpg": "rocket",
    "trips/hubble.png": "hubble_deep_field",
    "pets/chelsea.jpg": "chelsea",
    "pets/horse.png": "horse",
    "pets/coffee.jpg": "coffee",
    "misc/camera.png": "camera",
    "misc/page.png": "page",
    "misc/cells.jpg": "immunohistochemistry",
    "shapes/red.png": "red",
    "shapes/stripes.png": "stripes",
    "shapes/a&b <b>bold.png": "rings",
}


def generated(name: str, size: int = 96) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size] / size
    if name == "red":
        a = np.stack([np.full_like(x, 0.9), 0.1 * x, 0.1 * y], -1)
    elif name == "stripes":
        v = (np.sin(x * 40) > 0).astype(float)
        a = np.stack([v, v, 1 - v], -1)
    else:  # rings
        r = np.hypot(x - 0.5, y - 0.5)
        v = (np.sin(r * 60) > 0).astype(float)
        a = np.stack([v, 1 - v, 0.5 * v], -1)
    return Image.fromarray((a * 255).astype(np.uint8))


def make_library(root: Path) -> Path:
    for i, (rel, name) in enumerate(LIBRARY.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = generated(name) if rel.startswith("shapes/") else photo(name).resize((96 + 8 * i, 72))
        image.save(path)
        stamp = datetime(2023, 1 + i, 15, 12).timestamp()  # item i is in month i + 1 of 2023
        os.utime(path, (stamp, stamp))
    return root


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields the base URL; stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"


@contextmanager
def served_library(base: Path, checkpoint: Path) -> Iterator[tuple[str, object, object]]:
    """The library indexed with ``checkpoint`` and served on 127.0.0.1: yields ``(base URL, reference index,
    encoder)``. The server holds one writable handle of the index; the test reads another."""
    from clipworks.encoder import Encoder
    from clipworks.search import Index
    from clipworks.serve import ServeSettings, create_app

    root = make_library(base / "photos")
    encoder = Encoder.load(str(checkpoint))
    with Index.create(base / "idx", root, encoder) as built:
        report = built.add()
    assert report.added == len(LIBRARY) and not report.failures
    with Index.open(base / "idx", encoder=encoder, writable=True) as index, \
            Index.open(base / "idx", encoder=encoder) as reference, \
            running(create_app(index, encoder, settings=ServeSettings(api_key=API_KEY))) as url:
        yield url, reference, encoder
