// The agent's status page: members (polled), keys (listed, then kept live by
// Server-Sent Events from /v1/watch). No framework, no CDN.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) =>
  token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
const api = (path) => fetch(withToken(path)).then((r) => (r.ok ? r.json() : Promise.reject(r.status)));
const $ = (sel) => document.querySelector(sel);
const keys = new Map(); // key -> entry
let source = null;

function text(entry) {
  if (entry.int !== undefined) return String(entry.int);
  if (entry.value === undefined) return "";
  const raw = atob(entry.value);
  return /^[\x20-\x7e]*$/.test(raw) ? raw : "base64:" + entry.value;
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = value;
  if (cls) td.className = cls;
}

async function loadMembers() {
  try {
    const members = await api("/v1/members");
    const body = $("#members tbody");
    body.replaceChildren();
    for (const m of members) {
      const row = body.insertRow();
      row.dataset.node = m.node_id;
      row.dataset.status = m.status;
      cell(row, m.node_id);
      cell(row, m.addr || "");
      cell(row, m.status, m.status);
      cell(row, m.phi === null ? "" : m.phi.toFixed(2));
      cell(row, Object.entries(m.meta).map(([k, v]) => k + "=" + v).join(", "));
    }
    const alive = members.filter((m) => m.status === "alive").length;
    $("#member-count").textContent = `${alive} alive of ${members.length}`;
  } catch (e) {
    $("#member-count").textContent = "(agent unreachable)";
  }
}

function renderKeys() {
  const prefix = $("#prefix").value;
  const body = $("#keys tbody");
  body.replaceChildren();
  const shown = [...keys.values()].filter((e) => e.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : 1));
  for (const e of shown.slice(0, 500)) {
    const row = body.insertRow();
    row.dataset.key = e.key;
    cell(row, e.key);
    cell(row, text(e));
    cell(row, String(e.version));
    cell(row, e.origin);
  }
  $("#key-count").textContent = `${shown.length} shown`;
}

async function loadKeys() {
  const prefix = $("#prefix").value;
  const entries = await api("/v1/kv?prefix=" + encodeURIComponent(prefix));
  keys.clear();
  for (const e of entries) keys.set(e.key, e);
  renderKeys();
  if (source) source.close();
  source = new EventSource(withToken("/v1/watch?prefix=" + encodeURIComponent(prefix)));
  source.onopen = () => $("#live").classList.add("on");
  source.onerror = () => $("#live").classList.remove("on");
  source.addEventListener("change", (ev) => {
    const ch = JSON.parse(ev.data);
    if (ch.kind === "set") keys.set(ch.key, ch);
    else if (ch.kind !== "lagged") keys.delete(ch.key);
    renderKeys();
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()} ${ch.kind} ${ch.key} ${text(ch)}`;
    $("#changes").prepend(li);
    while ($("#changes").children.length > 50) $("#changes").lastChild.remove();
  });
}

async function init() {
  try {
    const me = await api("/v1/agent");
    $("#self").textContent = `${me.node_id} (${me.addr}), HTTP ${me.http}`;
    document.title = `fastgossip: ${me.node_id}`;
  } catch (e) {
    $("#self").textContent = "agent unreachable";
  }
  let timer = null;
  $("#prefix").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(loadKeys, 200);
  });
  await loadKeys();
  await loadMembers();
  setInterval(loadMembers, 1000);
}

init();
