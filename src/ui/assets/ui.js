// Hark web UI: the invoke panel, live logs, confirmations and optional screenshots.
// Plain JavaScript, no libraries; the pages work without it except the invoke panel's
// inline rendering and the live logs.
"use strict";

function $(sel, root) { return (root || document).querySelector(sel); }

// The page's CSRF token: the gateway answers a script's request for a UI page only with it
// (Fetch Metadata tells it the request came from a script, not a navigation).
function csrfHeaders() {
  const input = $('input[name="csrf"]');
  return input ? { "X-CSRF-Token": input.value } : {};
}

function setupInvoke() {
  const form = $("#invoke-form");
  if (!form) return;
  const kinds = form.querySelectorAll('input[name="kind"]');
  const showKind = () => {
    const kind = form.querySelector('input[name="kind"]:checked').value;
    form.querySelectorAll("[data-kind]").forEach((el) => {
      el.hidden = !el.dataset.kind.split(" ").includes(kind);
    });
  };
  kinds.forEach((k) => k.addEventListener("change", showKind));
  showKind();

  const status = $("#r-status"), time = $("#r-time"), type = $("#r-type");
  const text = $("#r-text"), image = $("#r-image"), empty = $("#r-empty");
  const button = $("#invoke-button");
  let lastUrl = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    button.textContent = "Invoking…";
    const started = performance.now();
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRF-Token": form.dataset.csrf },
        credentials: "same-origin",
      });
      const blob = await response.blob();
      const ms = performance.now() - started;
      const contentType = response.headers.get("content-type") || "";
      status.textContent = response.status + " " + (response.statusText || "");
      status.className = "pill " + (response.ok ? "ok" : "bad");
      time.textContent = ms.toFixed(0) + " ms round trip";
      type.textContent = (contentType || "no content type") + " · " + blob.size + " bytes";
      empty.hidden = true;
      if (lastUrl) { URL.revokeObjectURL(lastUrl); lastUrl = null; }
      if (contentType.startsWith("image/")) {
        lastUrl = URL.createObjectURL(blob);
        image.src = lastUrl;
        image.hidden = false;
        text.hidden = true;
      } else {
        let body = await blob.text();
        const looksJson = contentType.includes("json") || /^\s*[\[{]/.test(body);
        if (looksJson) {
          try { body = JSON.stringify(JSON.parse(body), null, 2); } catch (_) { /* not JSON after all */ }
        }
        text.textContent = body === "" ? "(empty body)" : body;
        text.hidden = false;
        image.hidden = true;
        image.removeAttribute("src");
      }
      refreshRecent();
    } catch (err) {
      status.textContent = "network error";
      status.className = "pill bad";
      text.textContent = String(err);
      text.hidden = false;
      empty.hidden = true;
    } finally {
      button.disabled = false;
      button.textContent = "Invoke";
    }
  });
}

// Re-reads the page and swaps in the recent activations and the invocation count.
async function refreshRecent() {
  try {
    const response = await fetch(location.pathname, { credentials: "same-origin", headers: csrfHeaders() });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ["recent", "invocations"]) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.innerHTML = fresh.innerHTML;
    }
  } catch (_) { /* the next invoke tries again */ }
}

// The function's log lines, then each new one as the gateway pushes it (server-sent
// events). The browser reconnects on its own after a drop, resuming after the last line.
function setupLogs() {
  const pre = $("#logs");
  if (!pre) return;
  const live = $("#logs-live");
  const csrf = $('input[name="csrf"]');
  const kept = 1000;
  let lines = [], source = null;
  const show = () => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = lines.length ? lines.join("\n") : "(no log lines yet)";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  const open = () => {
    // An EventSource cannot send headers: the CSRF token goes in the query.
    const url = pre.dataset.src + (csrf ? "?csrf=" + encodeURIComponent(csrf.value) : "");
    lines = [];
    source = new EventSource(url);
    source.onopen = show;
    source.onmessage = (event) => {
      const l = JSON.parse(event.data);
      lines.push(l.time + "  " + l.instance + "  " + l.text);
      if (lines.length > kept) lines.splice(0, lines.length - kept);
      show();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) pre.textContent = "logs unavailable";
    };
  };
  const close = () => { if (source) source.close(); source = null; };
  if (live) live.addEventListener("change", () => (live.checked ? open() : close()));
  open();
}

function setupConfirm() {
  document.querySelectorAll("form[data-confirm-zero]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      const replicas = form.querySelector('input[name="replicas"]');
      if (replicas && replicas.value === "0" && !window.confirm(form.dataset.confirmZero)) {
        event.preventDefault();
      }
    });
  });
}

// An activation's browser screenshot, shown only when the gateway has one.
function setupScreenshot() {
  const figure = $("#screenshot");
  if (!figure) return;
  const img = new Image();
  img.alt = "Screenshot of the browser when the call failed";
  img.addEventListener("load", () => { figure.prepend(img); figure.hidden = false; });
  img.src = figure.dataset.src;
}

document.addEventListener("DOMContentLoaded", () => {
  setupInvoke();
  setupLogs();
  setupConfirm();
  setupScreenshot();
});
