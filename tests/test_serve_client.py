"""``clipworks.Client`` against a real server on 127.0.0.1: every answer equals the in-process Python API on the
same index and model (search, classify, embeddings), and every refusal is a ``ClientError`` with the status and
the server's message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from served import API_KEY, LIBRARY, generated, served_library

ATOL = 1e-5  # the server batches requests together; a batch of other sizes may round the last digit differently


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint, one_thread):
    """``(base URL, reference index, encoder)``."""
    with served_library(tmp_path_factory.mktemp("served"), tiny_checkpoint) as out:
        yield out


@pytest.fixture()
def client(served):
    import clipworks

    with clipworks.Client(served[0]) as c:
        yield c


def _same_page(answer: dict, page) -> None:
    """The server's page is the Python API's page: ids, paths, ranks, scores and the counts."""
    assert [h["id"] for h in answer["hits"]] == [h.id for h in page.hits]
    assert [h["path"] for h in answer["hits"]] == [h.path for h in page.hits]
    assert [h["rank"] for h in answer["hits"]] == [h.rank for h in page.hits]
    np.testing.assert_allclose([h["score"] for h in answer["hits"]], [h.score for h in page.hits], atol=ATOL)
    assert (answer["total"], answer["offset"], answer["k"], answer["has_more"]) == (
        page.total, page.offset, page.k, page.has_more)


def test_importing_clipworks_does_not_import_httpx():
    code = "import sys, clipworks; assert 'httpx' not in sys.modules; clipworks.Client('http://127.0.0.1:9').close(); assert 'httpx' in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_health_names_the_model_and_counts_the_items(client, served):
    _, ref, _ = served
    health = client.health()
    assert health["status"] == "ok"
    assert health["items"] == len(ref) == len(LIBRARY)
    assert ref.ref.weights.removeprefix("sha256:")[:12] in health["model"]  # the checkpoint's hash, named
    assert str(Path(ref.ref.model).parent) not in health["model"]  # but not where it lies on the server


def test_text_search_equals_the_python_api_on_every_page_and_with_filters(client, served):
    from clipworks.search import search

    _, ref, _ = served
    for offset in (0, 5, 10):
        _same_page(client.search("a red square", k=5, offset=offset), search(ref, "a red square", k=5, offset=offset))
    filters = {"folder": "pets", "after": "2023-04-01"}
    _same_page(client.search("a photo", k=10, filters=filters), search(ref, "a photo", k=10, filters=filters))
    answer = client.search("a photo", k=3)
    assert all(not Path(h["path"]).is_absolute() for h in answer["hits"])


def test_image_search_from_a_path_bytes_or_pil_equals_the_python_api(client, served):
    from clipworks.search import search

    _, ref, _ = served
    path = Path(ref.root) / "pets/horse.png"
    expected = search(ref, path, k=4)
    assert expected.hits[0].path == "pets/horse.png"
    for image in (path, str(path), path.read_bytes(), Image.open(path)):
        _same_page(client.search(image=image, k=4), expected)
    page2 = client.search(image=path, k=4, offset=4, filters={"before": "2023-10-01"})
    _same_page(page2, search(ref, path, k=4, offset=4, filters={"before": "2023-10-01"}))


def test_more_like_this_equals_searching_by_the_items_vector(client, served):
    from clipworks.search import search

    _, ref, _ = served
    item = search(ref, "stripes", k=1).hits[0]
    answer = client.search(like=item.id, k=5)
    _same_page(answer, search(ref, ref.vectors([item.id])[0], k=5))
    assert answer["hits"][0]["id"] == item.id
    assert client.item(item.id)["path"] == item.path


def test_embeddings_equal_the_encoders(client, served):
    _, ref, encoder = served
    texts = ["a photo of a cat", "a red square", "Привет, мир"]
    vectors = client.embed_text(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, encoder.embed_dim)
    np.testing.assert_allclose(vectors, encoder.encode_text(texts), atol=ATOL)
    np.testing.assert_allclose(client.embed_text("a red square"), encoder.encode_text(["a red square"])[0], atol=ATOL)
    path = Path(ref.root) / "trips/astronaut.jpg"
    image = client.embed_image(path)
    assert image.shape == (encoder.embed_dim,)
    np.testing.assert_allclose(image, encoder.encode_files([path]).features[0], atol=ATOL)
    np.testing.assert_allclose(client.embed_image(generated("red")), encoder.encode_images([generated("red")])[0],
                               atol=ATOL)


def test_classify_equals_the_python_api(client, served):
    from clipworks.zeroshot import classify

    _, ref, encoder = served
    path = Path(ref.root) / "pets/chelsea.jpg"
    labels = ["cat", "horse", "rocket", "coffee", "a page of text"]
    for templates in (None, "openai-imagenet", ["a photo of a {}.", "art of {}"]):
        answer = client.classify(path, labels, templates=templates, k=3)
        expected = classify(encoder, [path], labels, templates, k=3)[0]
        assert [p["label"] for p in answer["predictions"]] == list(expected.labels)
        np.testing.assert_allclose([p["probability"] for p in answer["predictions"]], expected.probabilities,
                                   atol=ATOL)
        assert answer["sigmoid"] is encoder.uses_sigmoid


def test_refusals_are_client_errors_with_the_status_and_the_servers_message(client, served):
    import clipworks
    from clipworks.errors import ClipworksError, InputTypeError, MissingFileError

    with pytest.raises(clipworks.ClientError) as caught:
        client.search("a cat", k=0)
    assert 400 <= caught.value.status < 500 and "k" in caught.value.detail
    assert isinstance(caught.value, ClipworksError)
    with pytest.raises(clipworks.ClientError) as caught:
        client.embed_image(b"this is not an image")
    assert caught.value.status in (415, 422) and caught.value.detail
    with pytest.raises(clipworks.ClientError) as caught:
        client.item(10**9)
    assert caught.value.status == 404
    with pytest.raises(clipworks.ClientError) as caught:
        client.search("a cat", filters={"colour": "red"})
    assert 400 <= caught.value.status < 500 and "colour" in caught.value.detail
    with pytest.raises(InputTypeError, match="exactly one"):
        client.search("a cat", like=1)
    with pytest.raises(MissingFileError, match="nope.jpg"):
        client.embed_image("nope.jpg")
    with pytest.raises(clipworks.ClientError) as caught:
        clipworks.Client("http://127.0.0.1:9", timeout=2).health()  # the discard port: nothing listens
    assert caught.value.status is None and "cannot reach" in str(caught.value)


def test_add_and_delete_need_the_key_and_change_what_search_finds(served, tmp_path):
    import clipworks

    url, ref, _ = served
    new = Path(ref.root) / "shapes/new-stripes.png"
    generated("stripes", size=80).rotate(90).save(new)
    with clipworks.Client(url) as anonymous, clipworks.Client(url, api_key="wrong") as wrong:
        for c in (anonymous, wrong):
            with pytest.raises(clipworks.ClientError) as caught:
                c.add()
            assert caught.value.status in (401, 403)
            with pytest.raises(clipworks.ClientError) as caught:
                c.delete(1)
            assert caught.value.status in (401, 403)
        assert anonymous.health()["items"] == len(LIBRARY)
    try:
        with clipworks.Client(url, api_key=API_KEY) as admin:
            report = admin.add()
            assert report["added"] == 1
            assert admin.health()["items"] == len(LIBRARY) + 1
            top = admin.search(image=new, k=1)["hits"][0]
            assert top["path"] == "shapes/new-stripes.png"
            admin.delete(top["id"])
            assert admin.health()["items"] == len(LIBRARY)
            assert all(h["path"] != "shapes/new-stripes.png" for h in admin.search(image=new, k=20)["hits"])
            with pytest.raises(clipworks.ClientError) as caught:
                admin.item(top["id"])
            assert caught.value.status == 404
    finally:
        new.unlink(missing_ok=True)
        shutil.rmtree(tmp_path, ignore_errors=True)
