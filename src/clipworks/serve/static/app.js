// The clipworks search page: plain DOM, no framework, no build step, nothing fetched from outside this server.
// Every piece of data from the server is put in the page with textContent or as an attribute, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form");
  const queryInput = $("q");
  const imageInput = $("image-input");
  const statusLine = $("status");
  const results = $("results");
  const prev = $("prev");
  const next = $("next");
  const pageInfo = $("page-info");
  const dialog = $("detail");
  const overlay = $("drop-overlay");

  // What the current results answer: {kind: "text"|"image"|"like", q, file, id, label}, the page offset and size.
  let query = null;
  let offset = 0;
  let lastPage = null;
  let detailItem = null;
  let queryImageUrl = null;
  let requestSerial = 0;

  function pageSize() {
    const k = parseInt($("k").value, 10);
    return Number.isFinite(k) && k > 0 ? Math.min(k, 200) : 24;
  }

  function filters() {
    const out = {};
    const folder = $("folder").value.trim();
    if (folder) out.folder = folder;
    if ($("after").value) out.after = $("after").value;
    if ($("before").value) out.before = $("before").value;
    return out;
  }

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
    statusLine.setAttribute("role", isError ? "alert" : "status");
  }

  // The server's {"detail": …} (a string, or FastAPI's list of {loc, msg}) as one line.
  async function errorMessage(response) {
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch (e) {
      detail = null;
    }
    if (Array.isArray(detail)) {
      detail = detail.map((d) => {
        const loc = (d.loc || []).filter((x) => !["body", "query", "path"].includes(x)).join(".");
        return loc ? `${loc}: ${d.msg}` : String(d.msg);
      }).join("; ");
    }
    return `${response.status} ${detail || response.statusText || "error"}`;
  }

  function searchRequest(q, at) {
    const k = pageSize();
    const f = filters();
    if (q.kind === "text") {
      const params = new URLSearchParams({ q: q.q, k: String(k), offset: String(at) });
      for (const [key, value] of Object.entries(f)) params.set(key, value);
      return fetch(`search?${params}`, { headers: { Accept: "application/json" } });
    }
    if (q.kind === "image") {
      const body = new FormData();
      body.append("file", q.file, q.file.name || "image");
      body.append("k", String(k));
      body.append("offset", String(at));
      if (Object.keys(f).length) body.append("filters", JSON.stringify(f));
      return fetch("search", { method: "POST", body, headers: { Accept: "application/json" } });
    }
    const body = { id: q.id, k, offset: at };
    if (Object.keys(f).length) body.filters = f;
    return fetch("search", {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json" },
    });
  }

  async function run(q, at) {
    const serial = ++requestSerial;
    query = q;
    setStatus("Searching…");
    results.setAttribute("aria-busy", "true");
    let page;
    try {
      const response = await searchRequest(q, at);
      if (serial !== requestSerial) return; // a newer search was started meanwhile
      if (!response.ok) {
        setStatus(await errorMessage(response), true);
        results.removeAttribute("aria-busy");
        return;
      }
      page = await response.json();
    } catch (e) {
      if (serial === requestSerial) setStatus(`The server did not answer: ${e.message}`, true);
      results.removeAttribute("aria-busy");
      return;
    }
    if (serial !== requestSerial) return;
    offset = page.offset;
    lastPage = page;
    render(page);
    if (q.kind === "text") {
      const url = new URL(window.location.href);
      url.searchParams.set("q", q.q);
      history.replaceState(null, "", url);
    }
  }

  function formatScore(score) {
    return typeof score === "number" ? score.toFixed(3) : "–";
  }

  function formatDate(mtime) {
    return typeof mtime === "number" ? new Date(mtime * 1000).toLocaleString() : "";
  }

  function formatSize(size) {
    if (typeof size !== "number") return "";
    const units = ["B", "kB", "MB", "GB"];
    let n = size;
    let u = 0;
    while (n >= 1000 && u < units.length - 1) { n /= 1000; u++; }
    return u ? `${n.toFixed(1)} ${units[u]} (${size} bytes)` : `${size} bytes`;
  }

  function baseName(path) {
    const parts = String(path).split("/");
    return parts[parts.length - 1];
  }

  function render(page) {
    results.replaceChildren();
    results.removeAttribute("aria-busy");
    const hits = page.hits || [];
    for (const hit of hits) results.appendChild(card(hit));
    const first = page.offset + 1;
    const last = page.offset + hits.length;
    if (hits.length) {
      setStatus(`Results ${first}–${last} of ${page.total} for ${query.label}`);
      pageInfo.textContent = `${first}–${last} of ${page.total}`;
    } else {
      setStatus(page.total ? `No results past ${page.offset} of ${page.total} for ${query.label}`
        : `No results for ${query.label}`);
      pageInfo.textContent = "";
    }
    prev.disabled = page.offset <= 0;
    next.disabled = !page.has_more;
  }

  function card(hit) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.testid = "result";
    li.dataset.id = String(hit.id);
    li.dataset.path = hit.path;
    li.dataset.rank = String(hit.rank);

    const open = document.createElement("button");
    open.type = "button";
    open.className = "thumb";
    open.dataset.testid = "result-open";
    open.setAttribute("aria-label", `Open ${hit.path}`);
    const img = document.createElement("img");
    img.src = `thumb/${encodeURIComponent(hit.id)}`;
    img.alt = hit.caption ? `${hit.path}: ${hit.caption}` : hit.path;
    img.loading = "lazy";
    img.decoding = "async";
    open.appendChild(img);
    open.addEventListener("click", () => openDetail(hit));

    const name = document.createElement("span");
    name.className = "name";
    name.dataset.testid = "result-path";
    name.textContent = baseName(hit.path);
    name.title = hit.path;

    const score = document.createElement("span");
    score.className = "score";
    score.dataset.testid = "result-score";
    score.textContent = formatScore(hit.score);
    score.title = `rank ${hit.rank}, cosine similarity ${hit.score}`;

    const like = document.createElement("button");
    like.type = "button";
    like.className = "like";
    like.dataset.testid = "more-like-this";
    like.textContent = "More like this";
    like.setAttribute("aria-label", `More like ${hit.path}`);
    like.addEventListener("click", () => moreLike(hit));

    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(name, score);
    li.append(open, meta, like);
    return li;
  }

  function moreLike(hit) {
    if (dialog.open) dialog.close();
    run({ kind: "like", id: hit.id, label: `images like ${hit.path}` }, 0);
  }

  function addMeta(list, term, value) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }

  function showMeta(item, score) {
    const meta = $("detail-meta");
    meta.replaceChildren();
    addMeta(meta, "Path", item.path);
    if (score !== undefined) addMeta(meta, "Score", formatScore(score));
    addMeta(meta, "Caption", item.caption);
    addMeta(meta, "Tags", (item.tags || []).join(", "));
    addMeta(meta, "Size", formatSize(item.size));
    addMeta(meta, "Modified", formatDate(item.mtime));
    addMeta(meta, "Id", String(item.id));
  }

  async function openDetail(hit) {
    detailItem = hit;
    $("detail-title").textContent = hit.path;
    const src = `image/${encodeURIComponent(hit.id)}`;
    $("detail-image").src = src;
    $("detail-image").alt = hit.caption ? `${hit.path}: ${hit.caption}` : hit.path;
    $("detail-link").href = src;
    showMeta(hit, hit.score);
    if (!dialog.open) dialog.showModal();
    try { // the full record (the hit may be older than the item's current metadata)
      const response = await fetch(`items/${encodeURIComponent(hit.id)}`, { headers: { Accept: "application/json" } });
      if (detailItem !== hit) return;
      if (response.ok) {
        showMeta(await response.json(), hit.score);
      } else {
        addMeta($("detail-meta"), "Error", await errorMessage(response));
      }
    } catch (e) {
      // keep what the hit already showed
    }
  }

  function setQueryImage(file) {
    if (queryImageUrl) URL.revokeObjectURL(queryImageUrl);
    queryImageUrl = file ? URL.createObjectURL(file) : null;
    $("query-image").hidden = !file;
    $("query-image-preview").src = queryImageUrl || "";
    $("query-image-preview").alt = file ? `Query image ${file.name}` : "";
    $("query-image-name").textContent = file ? file.name : "";
  }

  function searchImage(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      setStatus(`${file.name} is not an image (${file.type})`, true);
      return;
    }
    setQueryImage(file);
    run({ kind: "image", file, label: `the image ${file.name || "dropped"}` }, 0);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = queryInput.value.trim();
    if (q) {
      run({ kind: "text", q, label: `“${q}”` }, 0);
    } else if (query && query.kind !== "text") {
      run(query, 0); // filters or page size changed: the same image or item again
    } else {
      setStatus("Type what to look for, or choose an image.", true);
      queryInput.focus();
    }
  });
  for (const id of ["folder", "after", "before", "k"]) {
    $(id).addEventListener("change", () => { if (query) run(query, 0); });
  }
  imageInput.addEventListener("change", () => searchImage(imageInput.files[0]));
  $("clear-image").addEventListener("click", () => {
    setQueryImage(null);
    imageInput.value = "";
    imageInput.focus();
  });
  prev.addEventListener("click", () => {
    if (query) run(query, Math.max(0, offset - pageSize()));
  });
  next.addEventListener("click", () => {
    if (query && lastPage && lastPage.has_more) run(query, offset + (lastPage.hits || []).length);
  });
  $("detail-close").addEventListener("click", () => dialog.close());
  $("detail-like").addEventListener("click", () => { if (detailItem) moreLike(detailItem); });
  dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); });

  // Drag and drop anywhere on the page; dragenter/dragleave counting keeps the overlay steady over children.
  let dragDepth = 0;
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth++;
    overlay.hidden = false;
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) overlay.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer) return;
    event.preventDefault();
    dragDepth = 0;
    overlay.hidden = true;
    const file = Array.from(event.dataTransfer.files || [])[0];
    if (file) searchImage(file);
  });

  fetch("healthz", { headers: { Accept: "application/json" } })
    .then((r) => (r.ok ? r.json() : null))
    .then((h) => {
      if (h) $("health").textContent = `${h.items} images · ${h.model}`;
    })
    .catch(() => {});

  const initial = new URLSearchParams(window.location.search).get("q");
  if (initial) {
    queryInput.value = initial;
    run({ kind: "text", q: initial, label: `“${initial}”` }, 0);
  }
})();
