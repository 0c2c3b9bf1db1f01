"""The web inbox's page: one static HTML document, its script and its style.

Nothing from a message is ever put into HTML here: the page is the same for everyone, and
its script builds every element with ``textContent`` from the JSON API (no
``innerHTML``), so a subject such as ``<script>`` shows as text. The script and style are
separate files because the page's Content-Security-Policy forbids inline code.
"""

from __future__ import annotations

__all__ = ["PAGE_HTML", "PAGE_JS", "PAGE_CSS"]

#: The page (``GET /``).
PAGE_HTML = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastsmtp inbox</title>
<link rel="stylesheet" href="/inbox.css">
<script src="/inbox.js" defer></script>
</head>
<body>
<header class="bar">
  <h1>fastsmtp inbox</h1>
  <span id="count" class="muted"></span>
  <span id="live" class="live off" title="live updates">connecting</span>
  <span class="spacer"></span>
  <button id="clear" type="button" class="danger">Delete all</button>
</header>
<main>
  <section id="list-pane">
    <table id="list">
      <thead><tr><th>From</th><th>To</th><th>Subject</th><th>Received</th><th class="num">Size</th></tr></thead>
      <tbody id="rows"></tbody>
    </table>
    <p id="empty" class="empty" hidden>No messages yet. Send one to the SMTP port.</p>
  </section>
  <section id="view" hidden>
    <div class="view-head">
      <h2 id="v-subject"></h2>
      <button id="delete" type="button" class="danger">Delete</button>
    </div>
    <dl id="v-meta"></dl>
    <ul id="v-attachments" class="attachments" hidden></ul>
    <nav class="tabs" id="tabs">
      <button type="button" data-tab="text">Text</button>
      <button type="button" data-tab="html">HTML</button>
      <button type="button" data-tab="headers">Headers</button>
      <button type="button" data-tab="raw">Raw</button>
    </nav>
    <div id="v-body" class="body"></div>
  </section>
</main>
</body>
</html>
"""

#: The page's script (``GET /inbox.js``).
PAGE_JS = r"""
"use strict";
// Every element is built with textContent: message data never goes through HTML parsing.
const byId = (id) => document.getElementById(id);
let current = null;   // the open message (its JSON), or null
let tab = "text";
let loading = null;   // the list fetch in progress, so bursts of events coalesce
let again = false;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// "Name <address>": the name, then the address in small muted type (the cell's title
// holds the whole header).
function person(header) {
  const td = el("td", null, "from");
  td.title = header;
  const m = /^\s*"?(.*?)"?\s*<([^<>]*)>\s*$/.exec(header);
  if (m && m[1]) td.append(el("span", m[1], "name"), el("span", m[2], "addr"));
  else td.textContent = header;
  return td;
}

function size(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " kB";
  return (n / 1024 / 1024).toFixed(1) + " MB";
}

function when(iso) {
  const d = new Date(iso);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function openId() {
  const m = /^#\/messages\/(\d+)$/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

async function refresh() {
  if (loading) { again = true; return loading; }
  loading = (async () => {
    do {
      again = false;
      const response = await fetch("/api/messages", {cache: "no-store"});
      render(await response.json());
    } while (again);
  })();
  try { await loading; } finally { loading = null; }
}

function render(data) {
  const rows = byId("rows");
  const open = openId();
  rows.replaceChildren(...data.messages.map((m) => {
    const tr = el("tr");
    tr.dataset.id = m.id;
    if (m.id === open) tr.classList.add("selected");
    tr.append(
      person(m.from || m.mail_from),
      el("td", m.to || m.rcpt_tos.join(", "), "to"),
      el("td", m.subject || "(no subject)", m.subject ? "subject" : "subject muted"),
      el("td", when(m.received), "time"),
      el("td", size(m.size), "num"),
    );
    tr.title = "MAIL FROM " + m.mail_from + "  RCPT TO " + m.rcpt_tos.join(", ");
    tr.addEventListener("click", () => { location.hash = "#/messages/" + m.id; });
    return tr;
  }));
  byId("empty").hidden = data.messages.length > 0;
  byId("list").hidden = data.messages.length === 0;
  byId("count").textContent = data.total + (data.total === 1 ? " message" : " messages") +
    (data.total >= data.max_messages ? " (keeps the newest " + data.max_messages + ")" : "");
  byId("clear").disabled = data.messages.length === 0;
  if (current && !data.messages.some((m) => m.id === current.id)) close();
  document.dispatchEvent(new CustomEvent("inbox:rendered", {detail: data.messages.length}));
}

function close() {
  current = null;
  byId("view").hidden = true;
  document.body.classList.remove("viewing");
  if (openId() !== null) history.replaceState(null, "", location.pathname);
  for (const tr of byId("rows").children) tr.classList.remove("selected");
}

async function show(id) {
  const response = await fetch("/api/messages/" + id, {cache: "no-store"});
  if (!response.ok) { close(); return; }
  current = await response.json();
  for (const tr of byId("rows").children) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  byId("v-subject").textContent = current.subject || "(no subject)";
  const meta = byId("v-meta");
  const pairs = [
    ["From", current.from], ["To", current.to], ["Cc", current.cc], ["Date", current.date],
    ["Received", new Date(current.received).toLocaleString()],
    ["Envelope", "MAIL FROM <" + current.mail_from + ">  RCPT TO " +
      current.rcpt_tos.map((r) => "<" + r + ">").join(", ")],
    ["Size", size(current.size)],
  ];
  meta.replaceChildren();
  for (const [name, value] of pairs) {
    if (!value) continue;
    meta.append(el("dt", name), el("dd", value));
  }
  const attachments = byId("v-attachments");
  attachments.replaceChildren(...current.attachments.map((a) =>
    el("li", (a.filename || "(unnamed)") + "  " + a.content_type + "  " + size(a.size))));
  attachments.hidden = current.attachments.length === 0;
  byId("view").hidden = false;
  document.body.classList.add("viewing");
  if (tab === "html" && current.html === null) tab = "text";
  if (tab === "text" && current.text === null && current.html !== null) tab = "html";
  showTab();
  document.dispatchEvent(new CustomEvent("inbox:opened", {detail: id}));
}

async function showTab() {
  for (const b of byId("tabs").children) {
    b.classList.toggle("active", b.dataset.tab === tab);
    if (b.dataset.tab === "html") b.disabled = current.html === null;
    if (b.dataset.tab === "text") b.disabled = current.text === null;
  }
  const body = byId("v-body");
  body.replaceChildren();
  if (tab === "text") {
    body.append(el("pre", current.text === null ? "(no text part)" : current.text, "text"));
  } else if (tab === "html") {
    // The HTML part comes from its own route, served with "CSP: sandbox", in an
    // iframe sandbox without allow-scripts or allow-same-origin: it cannot run script
    // nor reach this page.
    const frame = el("iframe");
    frame.setAttribute("sandbox", "");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.title = "HTML part";
    frame.src = "/api/messages/" + current.id + "/html";
    body.append(frame);
  } else if (tab === "headers") {
    const table = el("table", null, "headers");
    for (const [name, value] of current.headers) {
      const tr = el("tr");
      tr.append(el("th", name), el("td", value));
      table.append(tr);
    }
    body.append(table);
  } else {
    const id = current.id;
    const pre = el("pre", "loading...", "raw");
    body.append(pre);
    const response = await fetch("/api/messages/" + id + "/raw", {cache: "no-store"});
    if (current && current.id === id) pre.textContent = await response.text();
  }
  document.dispatchEvent(new CustomEvent("inbox:tab", {detail: tab}));
}

function route() {
  const id = openId();
  if (id === null) close(); else show(id);
}

function live() {
  const badge = byId("live");
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { badge.textContent = "live"; badge.className = "live on"; });
  events.addEventListener("error", () => { badge.textContent = "reconnecting"; badge.className = "live off"; });
  events.addEventListener("change", () => { refresh(); });
}

byId("tabs").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || button.disabled || !current) return;
  tab = button.dataset.tab;
  showTab();
});
byId("delete").addEventListener("click", async () => {
  if (!current) return;
  await fetch("/api/messages/" + current.id, {method: "DELETE"});
  close();
  refresh();
});
byId("clear").addEventListener("click", async () => {
  await fetch("/api/messages", {method: "DELETE"});
  close();
  refresh();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") close();
});
window.addEventListener("hashchange", route);
refresh().then(route);
live();
"""

#: The page's style (``GET /inbox.css``).
PAGE_CSS = """\
:root {
  --fg: #1d2330; --muted: #6b7385; --line: #e3e6ec; --bg: #f6f7f9; --accent: #2f6fde;
  --sel: #e8f0fe; --danger: #c2312f;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
  color: var(--fg); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; height: 100vh; display: flex; flex-direction: column; }
.bar { display: flex; align-items: center; gap: 12px; padding: 10px 16px;
  background: #fff; border-bottom: 1px solid var(--line); }
.bar h1 { font-size: 16px; margin: 0; }
.spacer { flex: 1; }
.muted { color: var(--muted); }
.live { font-size: 12px; padding: 2px 8px; border-radius: 10px; }
.live.on { background: #e3f5e8; color: #17693a; }
.live.off { background: #fbeee0; color: #8a5310; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:disabled { opacity: .5; cursor: default; }
button.danger { color: var(--danger); }
main { flex: 1; display: flex; flex-direction: column; min-height: 0; }
#list-pane { flex: 1; overflow: auto; background: #fff; min-height: 120px; }
body.viewing #list-pane { flex: 0 1 auto; max-height: 38%; border-bottom: 1px solid var(--line); }
#list { width: 100%; border-collapse: collapse; table-layout: fixed; }
#list th { position: sticky; top: 0; background: #fafbfc; text-align: left; font-weight: 600;
  color: var(--muted); font-size: 12px; padding: 6px 12px; border-bottom: 1px solid var(--line); }
#list th:nth-child(1) { width: 28%; }
#list th:nth-child(2) { width: 20%; }
#list th:nth-child(4) { width: 11%; }
#list th:nth-child(5) { width: 7%; }
#list th.num { text-align: right; }
#list td.from .addr { color: var(--muted); font-size: 12px; margin-left: 6px; }
#list td { padding: 7px 12px; border-bottom: 1px solid var(--line); white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
#list tbody tr { cursor: pointer; }
#list tbody tr:hover { background: #f3f5f8; }
#list tbody tr.selected { background: var(--sel); }
#list td.subject { font-weight: 500; }
#list td.time { color: var(--muted); }
.num { text-align: right; }
#list td.num { color: var(--muted); }
.empty { color: var(--muted); text-align: center; padding: 48px 0; }
#view { flex: 1; overflow: auto; padding: 14px 20px; min-height: 0; display: flex;
  flex-direction: column; }
#view[hidden] { display: none; }
.view-head { display: flex; align-items: flex-start; gap: 12px; }
.view-head h2 { flex: 1; margin: 0 0 8px; font-size: 18px; overflow-wrap: anywhere; }
#v-meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 10px; }
#v-meta dt { color: var(--muted); }
#v-meta dd { margin: 0; overflow-wrap: anywhere; }
.attachments { margin: 0 0 10px; padding-left: 18px; color: var(--muted); }
.tabs { display: flex; gap: 4px; border-bottom: 1px solid var(--line); }
.tabs button { border: 1px solid transparent; border-bottom: none; border-radius: 6px 6px 0 0;
  background: transparent; margin-bottom: -1px; }
.tabs button.active { background: #fff; border-color: var(--line); color: var(--accent); }
.body { flex: 1; background: #fff; border: 1px solid var(--line); border-top: none;
  min-height: 200px; display: flex; }
.body pre { margin: 0; padding: 12px; white-space: pre-wrap; overflow-wrap: anywhere;
  font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; flex: 1; }
.body iframe { border: 0; width: 100%; flex: 1; min-height: 300px; background: #fff; }
table.headers { border-collapse: collapse; margin: 8px; align-self: flex-start; }
table.headers th { text-align: left; vertical-align: top; padding: 3px 12px 3px 4px;
  color: var(--muted); font-weight: 500; white-space: nowrap; }
table.headers td { padding: 3px 4px; overflow-wrap: anywhere;
  font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
"""
