"""The web page end to end: a real server on 127.0.0.1 driven by Debian's Chromium through Playwright.

Random weights carry no meaning, so every "expected" result is the Python API's ``search()`` on the same index
for the same query; the page must show exactly that ranking. A screenshot of the page with results is saved in
the test's ``tmp_path`` and copied to ``test-artifacts/serve-browser-results.png`` (CI keeps that folder).
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from served import LIBRARY, served_library

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
K = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint, one_thread):
    """``(base URL, reference index)``: the server holds one handle of the index, the test reads another."""
    with served_library(tmp_path_factory.mktemp("served"), tiny_checkpoint) as (url, reference, _):
        yield url, reference


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, served):
    url, _ = served
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.requests = []  # every URL the page asks for: nothing may come from outside the server
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.goto(url + "/")
    yield tab
    assert not tab.errors, f"JavaScript errors on the page: {tab.errors}"
    outside = [u for u in tab.requests if not u.startswith((url + "/", "blob:", "data:"))]
    assert not outside, f"the page fetched from outside the server: {outside}"
    context.close()


def _search(ref, query, k=K, offset=0, filters=None):
    from clipworks.search import search

    return search(ref, query, k=k, offset=offset, filters=filters)


def _shown(page) -> list[str]:
    return page.get_by_test_id("result").evaluate_all("els => els.map(e => e.dataset.path)")


def _type_query(page, text: str, k: int = K) -> None:
    page.get_by_test_id("page-size").fill(str(k))
    page.get_by_test_id("query").fill(text)
    page.get_by_test_id("query").press("Enter")


def _wait_for(page, expected_paths: list[str]) -> None:
    """Until the grid shows exactly these paths in this order (the page fetches asynchronously)."""
    expect(page.get_by_test_id("result")).to_have_count(len(expected_paths))
    expect(page.get_by_test_id("result").first).to_have_attribute("data-path", expected_paths[0])
    assert _shown(page) == expected_paths


def test_typing_a_query_shows_the_python_api_ranking_with_thumbnails_and_scores(page, served, tmp_path):
    _, ref = served
    expected = _search(ref, "a red square")
    _type_query(page, "a red square")
    _wait_for(page, [h.path for h in expected.hits])
    expect(page.get_by_test_id("status")).to_contain_text(f"Results 1–{K} of {len(LIBRARY)}")
    scores = page.get_by_test_id("result-score").all_text_contents()
    assert scores == [f"{h.score:.3f}" for h in expected.hits]
    # the thumbnails really loaded (served by id) and carry alt text
    page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete)")
    widths = page.locator(".result img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths
    assert page.locator(".result img").first.get_attribute("alt").startswith(expected.hits[0].path)
    assert all(re.search(r"/thumb/\d+$", u) for u in page.requests if "/thumb/" in u)
    # the query is kept in the address, so reloading shows the same results
    assert "q=a+red+square" in page.url
    shot = tmp_path / "serve-browser-results.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)


def test_uploading_a_query_image_finds_it_first(page, served):
    _, ref = served
    root = Path(ref.root)
    rel = "pets/horse.png"
    expected = _search(ref, root / rel)
    assert expected.hits[0].path == rel
    page.get_by_test_id("page-size").fill(str(K))
    page.get_by_test_id("image-input").set_input_files(str(root / rel))
    _wait_for(page, [h.path for h in expected.hits])
    expect(page.get_by_test_id("query-image")).to_be_visible()
    expect(page.get_by_test_id("status")).to_contain_text("horse.png")


def test_dropping_an_image_on_the_page_searches_by_it(page, served):
    _, ref = served
    rel = "trips/rocket.jpg"
    path = Path(ref.root) / rel
    expected = _search(ref, path, k=24)  # the page's default page size
    assert expected.hits[0].path == rel
    payload = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            for (const type of ["dragenter", "dragover", "drop"]) {
                document.body.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }
        }""",
        [payload, path.name],
    )
    _wait_for(page, [h.path for h in expected.hits])
    expect(page.locator("#drop-overlay")).to_be_hidden()


def test_more_like_this_ranks_the_item_itself_first(page, served):
    _, ref = served
    first = _search(ref, "a photo of a cat")
    _wait = [h.path for h in first.hits]
    _type_query(page, "a photo of a cat")
    _wait_for(page, _wait)
    chosen = first.hits[2]
    expected = _search(ref, ref.vectors([chosen.id])[0])
    assert expected.hits[0].id == chosen.id
    page.get_by_test_id("more-like-this").nth(2).click()
    _wait_for(page, [h.path for h in expected.hits])
    expect(page.get_by_test_id("status")).to_contain_text(f"like {chosen.path}")


def test_paging_shows_the_next_page_and_back(page, served):
    _, ref = served
    pages = [_search(ref, "stripes", offset=o) for o in (0, K, 2 * K)]
    _type_query(page, "stripes")
    _wait_for(page, [h.path for h in pages[0].hits])
    expect(page.get_by_test_id("prev-page")).to_be_disabled()
    page.get_by_test_id("next-page").click()
    _wait_for(page, [h.path for h in pages[1].hits])
    expect(page.get_by_test_id("page-info")).to_have_text(f"{K + 1}–{2 * K} of {len(LIBRARY)}")
    page.get_by_test_id("next-page").click()
    _wait_for(page, [h.path for h in pages[2].hits])
    expect(page.get_by_test_id("next-page")).to_be_disabled()  # 12 items, 3 pages of 4
    page.get_by_test_id("prev-page").click()
    _wait_for(page, [h.path for h in pages[1].hits])


def test_folder_and_date_filters_narrow_the_results(page, served):
    _, ref = served
    expected = _search(ref, "a photo", k=10, filters={"folder": "pets"})
    assert 0 < len(expected.hits) < len(LIBRARY)
    page.get_by_test_id("filter-folder").fill("pets")
    _type_query(page, "a photo", k=10)
    _wait_for(page, [h.path for h in expected.hits])
    assert all(p.startswith("pets/") for p in _shown(page))
    # items 0..11 were modified in months 1..12 of 2023: after April 1 and before July 1 keeps months 4-6
    page.get_by_test_id("filter-folder").fill("")
    page.get_by_test_id("filter-after").fill("2023-04-01")
    page.get_by_test_id("filter-before").fill("2023-07-01")
    expected = _search(ref, "a photo", k=10, filters={"after": "2023-04-01", "before": "2023-07-01"})
    assert [h.path for h in expected.hits] and len(expected.hits) == 3
    page.get_by_test_id("search-button").click()
    _wait_for(page, [h.path for h in expected.hits])


def test_a_refused_request_shows_the_servers_message(page, served):
    page.get_by_test_id("filter-after").fill("2023-07-01")
    page.get_by_test_id("filter-before").fill("2023-04-01")
    _type_query(page, "anything")
    status = page.get_by_test_id("status")
    expect(status).to_have_attribute("role", "alert")
    expect(status).to_contain_text("after")
    expect(page.get_by_test_id("result")).to_have_count(0)


def test_opening_a_result_shows_the_full_image_and_its_metadata_from_the_keyboard(page, served):
    _, ref = served
    expected = _search(ref, "a horse")
    _type_query(page, "a horse")
    _wait_for(page, [h.path for h in expected.hits])
    top = expected.hits[0]
    page.get_by_test_id("result-open").first.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_test_id("detail")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("detail-title")).to_have_text(top.path)
    meta = page.get_by_test_id("detail-meta")
    expect(meta).to_contain_text(top.path)
    expect(meta).to_contain_text(f"{top.score:.3f}")
    expect(meta).to_contain_text(f"({top.item.size} bytes)")  # from the /items record
    page.wait_for_function("() => document.getElementById('detail-image').complete")
    width = page.get_by_test_id("detail-image").evaluate("img => img.naturalWidth")
    from PIL import Image

    assert width == Image.open(Path(ref.root) / top.path).width  # the full image, not the thumbnail
    assert any(u.endswith(f"/image/{top.id}") for u in page.requests)
    assert any(u.endswith(f"/items/{top.id}") for u in page.requests)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_file_names_are_shown_as_text_never_as_html(page, served):
    _, ref = served
    rel = "shapes/a&b <b>bold.png"
    page.get_by_test_id("page-size").fill("3")
    page.get_by_test_id("image-input").set_input_files(str(Path(ref.root) / rel))
    expect(page.get_by_test_id("result").first).to_have_attribute("data-path", rel)
    assert page.get_by_test_id("result-path").first.text_content() == "a&b <b>bold.png"
    assert page.locator("#results b").count() == 0  # the markup in the name did not become an element
    page.get_by_test_id("result-open").first.click()
    expect(page.get_by_test_id("detail-title")).to_have_text(rel)
    assert page.locator("#detail b").count() == 0


def test_the_api_docs_render_offline(page, served):
    """Swagger UI at /docs lists the routes with every asset from the server (the fixture checks no request left)."""
    url, _ = served
    page.goto(url + "/docs")
    expect(page.locator('.opblock-summary-path[data-path="/search"]').first).to_be_visible()
    expect(page.locator('.opblock-summary-path[data-path="/embed/image"]')).to_be_visible()
    assert any(u.endswith("/static/docs/swagger-ui-bundle.js") for u in page.requests)


def test_the_clipworks_serve_command_serves_the_page(browser, served, tmp_path):
    """The real command in its own process (port 0: uvicorn picks a free one and logs it), then one search."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    _, ref = served
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "clipworks", "serve", "--index", str(ref.path), "--port", "0",
                                "--log-level", "info"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env=env)
    log: list[str] = []
    try:
        url = None
        for line in process.stderr:  # uvicorn: "Uvicorn running on http://127.0.0.1:PORT (Press CTRL+C to quit)"
            log.append(line)
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(log)
        drain = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)
        drain.start()
        expected = _search(ref, "a red square")
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(url + "/")
        _type_query(tab, "a red square")
        _wait_for(tab, [h.path for h in expected.hits])
        context.close()
    finally:
        process.terminate()
        code = process.wait(timeout=20)
    drain.join(timeout=5)
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal so the exit status says why it stopped
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in "".join(log), "".join(log)
