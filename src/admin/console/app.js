// agentgate console: every action goes through the admin API (/admin/v1/…) with the admin
// token kept in sessionStorage; the playground calls the fronts as any browser client would.
"use strict";

const TOKEN_KEY = "agentgate.adminToken";
const PAGES = ["agents", "keys", "accounts", "playground"];
const COLORS = ["#0b5cad", "#d4761c", "#1a7f37", "#a3319e", "#b3261e", "#4a6b8a", "#8a6d00", "#00838f"];

const $ = (sel, root = document) => root.querySelector(sel);
const state = { agents: [], fronts: [], conversation: null, busy: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

const fmt = (n) => (Math.round(n * 1000) / 1000).toLocaleString("en-US");

// ---------------------------------------------------------------------------- admin API --

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `the admin listener did not answer (${e.message})`);
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!response.ok) {
    if (response.status === 401) {
      signOut("The admin token was refused; sign in again.");
    }
    const message = json && json.error ? json.error.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return json;
}

/** Labels each body cell with its column's heading (shown on narrow screens). */
function labelCells(table) {
  const headings = [...table.tHead.rows[0].cells].map((c) => c.textContent);
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, i) => { cell.dataset.label = headings[i] || ""; });
  }
}

function pageError(page, error) {
  const target = $(`#page-${page} [data-error]`);
  if (target) target.textContent = error ? String(error.message || error) : "";
}

// ------------------------------------------------------------------------ sign in/out --

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("GET", "/admin/v1/agents");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#sign-in-error").textContent = e.status === 401
      ? "Wrong admin token."
      : `Cannot sign in: ${e.message}`;
    $("#token").focus();
    return;
  }
  $("#sign-in-error").textContent = "";
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  route();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#nav").hidden = true;
  for (const p of PAGES) $(`#page-${p}`).hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
  $("#token").value = "";
  $("#token").focus();
}

// ------------------------------------------------------------------------------ pages --

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "agents";
  for (const p of PAGES) $(`#page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · agentgate console`;
  ({ agents: loadAgents, keys: loadKeys, accounts: loadAccounts, playground: loadPlayground })[page]();
}

async function loadAgents() {
  pageError("agents");
  try {
    const { agents } = await api("GET", "/admin/v1/agents");
    state.agents = agents;
    const body = $("#agents-table tbody");
    body.replaceChildren(...agents.map((a) => {
      const price = [`${fmt(a.credits_per_message)} / message`];
      if (a.max_usage_credits) price.push(`+ usage ≤ ${fmt(a.max_usage_credits)}`);
      if (a.credits_per_1k_output_chars) price.push(`${fmt(a.credits_per_1k_output_chars)} / 1k chars`);
      if (a.credits_per_1k_input_tokens) price.push(`${fmt(a.credits_per_1k_input_tokens)} / 1k input tokens`);
      if (a.credits_per_1k_output_tokens) price.push(`${fmt(a.credits_per_1k_output_tokens)} / 1k output tokens`);
      const health = !a.enabled ? "disabled" : a.up ? "up" : "down";
      return el("tr", {},
        el("td", { text: a.name }),
        el("td", { class: "mono", text: a.id }),
        el("td", { text: a.upstream_api }),
        el("td", { text: price.join(" ") }),
        el("td", { class: health === "up" ? "up" : "down", text: health }),
        el("td", { class: "num", text: String(a.open_streams) }),
        el("td", { class: "num", text: String(a.requests_last_hour) }));
    }));
    labelCells($("#agents-table"));
  } catch (e) {
    pageError("agents", e);
  }
}

async function loadKeys() {
  pageError("keys");
  const account = $("#keys-account").value.trim();
  try {
    const { keys } = await api("GET", `/admin/v1/keys${account ? `?account=${encodeURIComponent(account)}` : ""}`);
    keys.sort((a, b) => a.account.localeCompare(b.account) || b.created_at.localeCompare(a.created_at));
    $("#keys-table tbody").replaceChildren(...keys.map((k) => {
      const action = el("td");
      if (!k.revoked_at) {
        const button = el("button", { type: "button", class: "danger", text: "Revoke" });
        button.setAttribute("aria-label", `Revoke key ${k.public_id}`);
        button.addEventListener("click", () => revokeKey(k.public_id, button));
        action.append(button);
      }
      return el("tr", { "data-key": k.public_id },
        el("td", { class: "mono", text: k.public_id }),
        el("td", { text: k.account }),
        el("td", { text: k.kind }),
        el("td", { text: k.scopes.join(", ") }),
        el("td", { text: k.agents ? k.agents.join(", ") : "all" }),
        el("td", { text: k.created_at.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") }),
        el("td", { class: k.revoked_at ? "down" : "up", text: k.revoked_at ? "revoked" : "active" }),
        action);
    }));
    labelCells($("#keys-table"));
  } catch (e) {
    pageError("keys", e);
  }
}

async function revokeKey(id, button) {
  if (!confirm(`Revoke key ${id}? Clients using it are refused at once.`)) return;
  button.disabled = true;
  try {
    await api("POST", `/admin/v1/keys/${encodeURIComponent(id)}/revoke`);
    await loadKeys();
    $("#keys-account").focus();
  } catch (e) {
    pageError("keys", e);
    button.disabled = false;
  }
}

async function createKey(event) {
  event.preventDefault();
  pageError("keys");
  const form = event.target;
  const kind = form.kind.value;
  const body = { account: form.account.value.trim(), kind };
  if (kind === "agent") {
    body.scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((c) => c.value);
  }
  try {
    const created = await api("POST", "/admin/v1/keys", body);
    $("#new-key-value").value = created.key;
    $("#new-key-copied").textContent = "";
    $("#new-key").hidden = false;
    $("#new-key-value").focus();
    $("#new-key-value").select();
    $("#keys-account").value = created.account;
    await loadKeys();
  } catch (e) {
    pageError("keys", e);
  }
}

async function copyKey() {
  const value = $("#new-key-value").value;
  try {
    await navigator.clipboard.writeText(value);
    $("#new-key-copied").textContent = "Copied.";
  } catch {
    $("#new-key-value").select();
    $("#new-key-copied").textContent = "Selected: press Ctrl+C to copy.";
  }
}

async function loadAccounts() {
  pageError("accounts");
  try {
    const { accounts } = await api("GET", "/admin/v1/accounts");
    $("#accounts-table tbody").replaceChildren(...accounts.map((a) => el("tr", { "data-account": a.account },
      el("th", { scope: "row", text: a.account }),
      el("td", { class: "num", "data-balance": "", text: fmt(a.balance) }),
      el("td", { class: "num", text: fmt(a.granted) }),
      el("td", { class: "num", text: fmt(a.charged) }),
      el("td", { class: "num", text: fmt(a.pending) }))));
    labelCells($("#accounts-table"));
    const select = $("#chart-account");
    const current = select.value || (accounts.some((a) => a.account === "demo") ? "demo" : accounts[0]?.account);
    select.replaceChildren(...accounts.map((a) => el("option", { value: a.account, text: a.account })));
    if (current) select.value = current;
    if (!state.agents.length) state.agents = (await api("GET", "/admin/v1/agents")).agents;
    if (select.value) await drawChart();
  } catch (e) {
    pageError("accounts", e);
  }
}

async function grant(event) {
  event.preventDefault();
  pageError("accounts");
  const form = event.target;
  const account = form.account.value.trim();
  const body = { credits: Number(form.credits.value) };
  if (form.memo.value.trim()) body.memo = form.memo.value.trim();
  try {
    const r = await api("POST", `/admin/v1/accounts/${encodeURIComponent(account)}/credits`, body);
    $("#grant-result").textContent = `Granted ${fmt(r.granted)} credits to ${r.account}: balance ${fmt(r.balance)}.`;
    form.credits.value = "";
    form.memo.value = "";
    $("#chart-account").value = account;
    await loadAccounts();
  } catch (e) {
    pageError("accounts", e);
  }
}

// ------------------------------------------------------------------------------ chart --

async function drawChart(event) {
  if (event) event.preventDefault();
  const account = $("#chart-account").value;
  const hours = Number($("#chart-window").value);
  if (!account) return;
  const data = await api("GET", `/admin/v1/usage/hourly?account=${encodeURIComponent(account)}&hours=${hours}`);
  const start = Date.parse(data.since);
  const names = new Map(state.agents.map((a) => [a.id, a.name]));
  const agents = [...new Set(data.buckets.map((b) => b.agent))].sort();
  const color = (agent) => COLORS[agents.indexOf(agent) % COLORS.length];
  const slots = Array.from({ length: hours }, () => ({}));
  for (const b of data.buckets) {
    const i = Math.floor((Date.parse(b.hour) - start) / 3600000);
    if (i >= 0 && i < hours) slots[i][b.agent] = b;
  }
  const total = (key) => data.buckets.reduce((s, b) => s + b[key], 0);
  const figure = $("#chart");
  const caption = el("figcaption", {
    id: "chart-caption",
    text: `${account}: ${fmt(total("credits"))} credits charged and ${total("requests")} requests in the last ${hours === 24 ? "24 hours" : "7 days"}, per hour and agent.`,
  });
  const charts = [["credits", "Credits charged per hour"], ["requests", "Requests per hour"]]
    .map(([key, title]) => barChart(slots, agents, key, title, start, color));
  const legend = el("ul", { class: "legend", "aria-label": "Agents" }, ...agents.map((a) =>
    el("li", {}, el("span", { class: `swatch swatch-${agents.indexOf(a) % COLORS.length}` }), names.get(a) || a)));
  for (const [i, swatch] of [...legend.querySelectorAll(".swatch")].entries()) {
    swatch.style.background = color(agents[i]);
  }
  figure.replaceChildren(caption, ...charts, agents.length ? legend : el("p", { text: "No requests in this window." }));
}

/** A stacked bar chart of `key` per hour slot and agent, drawn as SVG. */
function barChart(slots, agents, key, title, start, color) {
  const W = 720, H = 200, left = 44, right = 8, top = 22, bottom = 26;
  const sums = slots.map((s) => agents.reduce((t, a) => t + (s[a] ? s[a][key] : 0), 0));
  const max = Math.max(...sums, key === "requests" ? 1 : 0.001);
  const scale = (H - top - bottom) / max;
  const step = (W - left - right) / slots.length;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "data-chart": key });
  root.setAttribute("aria-label", `${title}: at most ${fmt(max)} in one hour`);
  const t = svg("text", { x: left, y: 14 });
  t.textContent = title;
  root.append(t);
  root.append(svg("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
  for (const frac of [0.5, 1]) {
    const y = H - bottom - frac * max * scale;
    root.append(svg("line", { class: "axis", x1: left, y1: y, x2: W - right, y2: y, "stroke-dasharray": "3 3" }));
    const label = svg("text", { x: left - 4, y: y + 4, "text-anchor": "end" });
    label.textContent = fmt(frac * max);
    root.append(label);
  }
  const every = slots.length > 24 ? 24 : 6;
  slots.forEach((slot, i) => {
    let y = H - bottom;
    for (const agent of agents) {
      const v = slot[agent] ? slot[agent][key] : 0;
      if (!v) continue;
      const h = Math.max(v * scale, 1);
      y -= h;
      const bar = svg("rect", { x: left + i * step + step * 0.1, y, width: Math.max(step * 0.8, 1), height: h, fill: color(agent) });
      const tip = svg("title");
      tip.textContent = `${new Date(start + i * 3600000).toISOString().slice(0, 13)}:00 UTC · ${agent}: ${fmt(v)}`;
      bar.append(tip);
      root.append(bar);
    }
    if (i % every === 0) {
      const d = new Date(start + i * 3600000);
      const label = svg("text", { x: left + i * step, y: H - 8 });
      label.textContent = slots.length > 24
        ? d.toISOString().slice(5, 10)
        : `${String(d.getUTCHours()).padStart(2, "0")}:00`;
      root.append(label);
    }
  });
  return root;
}

// ------------------------------------------------------------------------- playground --

/** How each front takes a streamed chat (SPEC §1, §7, §9, §10): its path, its body (`a`: the
 * agent, `c`: the conversation to continue, if any). */
const FRONT_APIS = {
  pharen: { path: (a) => `/api/agents/${a}/chat/`, body: (m, c) => ({ message: m, ...(c && { conversation_uuid: c }) }) },
  chatbase: { path: (a) => `/api/v2/agents/${a}/chat`, body: (m, c) => ({ message: m, stream: true, ...(c && { conversationId: c }) }) },
  agents: { path: (a) => `/api/agents/${a}/chat/stream`, body: (m, c) => ({ message: m, ...(c && { conversation_id: c }) }) },
  guayaba: { path: (a) => `/api/v1/agents/${a}/chat`, body: (m, c) => ({ message: m, stream: true, ...(c && { sessionKey: c }) }) },
  "ag-ui": {
    path: (a) => `/api/agents/${a}/run`,
    body: (m, c) => ({
      threadId: c || crypto.randomUUID(), runId: crypto.randomUUID(),
      messages: [{ id: crypto.randomUUID(), role: "user", content: m }],
      tools: [], context: [], state: {}, forwardedProps: {},
    }),
  },
  // The agent is the body's `model`; the conversation comes back in `x-conversation-id`.
  openai: {
    path: () => "/v1/chat/completions",
    body: (m, c, a) => ({
      model: a, stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: m }], ...(c && { metadata: { conversation_id: c } }),
    }),
  },
};

function frontUrl(front) {
  const i = front.listen.lastIndexOf(":");
  let host = front.listen.slice(0, i);
  const port = front.listen.slice(i + 1);
  if (host === "0.0.0.0" || host === "[::]") host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${front.tls ? "https" : "http"}://${host}:${port}${front.prefix}`;
}

async function loadPlayground() {
  pageError("playground");
  try {
    const [{ fronts }, { agents }] = await Promise.all([api("GET", "/admin/v1/fronts"), api("GET", "/admin/v1/agents")]);
    state.fronts = fronts.filter((f) => FRONT_APIS[f.api]);
    state.agents = agents;
    const frontSelect = $("#pg-front");
    const keepFront = frontSelect.value;
    frontSelect.replaceChildren(...state.fronts.map((f, i) =>
      el("option", { value: String(i), text: `${f.api} (${f.prefix || "/"}, ${f.format})` })));
    if (keepFront && Number(keepFront) < state.fronts.length) frontSelect.value = keepFront;
    const agentSelect = $("#pg-agent");
    const keepAgent = agentSelect.value;
    agentSelect.replaceChildren(...agents.map((a) => el("option", { value: a.id, text: `${a.name} (${a.upstream_api})` })));
    if (keepAgent) agentSelect.value = keepAgent;
  } catch (e) {
    pageError("playground", e);
  }
}

async function createPlaygroundKey(event) {
  event.preventDefault();
  pageError("playground");
  const account = $("#pg-key-account").value.trim();
  try {
    const created = await api("POST", "/admin/v1/keys", { account, kind: "agent", scopes: ["agents:run", "agents:stream"] });
    $("#pg-key").value = created.key;
    $("#pg-status").textContent = `Using a new key of account ${created.account} (${created.public_id}).`;
  } catch (e) {
    pageError("playground", e);
  }
}

function newChat() {
  state.conversation = null;
  $("#pg-transcript").replaceChildren();
  delete $("#pg-transcript").dataset.conversation;
  $("#pg-raw").textContent = "";
  $("#pg-status").textContent = "New chat.";
  pageError("playground");
  $("#pg-message").focus();
}

/** The account of the key in use: from the admin API's key list, by the key's public id. */
async function keyAccount(key) {
  const m = /^agk_([A-Za-z0-9]+)_/.exec(key);
  if (!m) return null;
  const { keys } = await api("GET", "/admin/v1/keys");
  const found = keys.find((k) => k.public_id === m[1]);
  return found ? found.account : null;
}

/** Reads server-sent events from a fetch body, calling `onEvent({event, data})` for each. */
async function readEvents(body, onRaw, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const text = decoder.decode(value, { stream: true });
    onRaw(text);
    buffer += text.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: null, data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") event.event = value;
        else if (field === "data") event.data.push(value);
      }
      if (event.data.length) onEvent({ event: event.event, data: event.data.join("\n") });
    }
  }
}

/** Folds one event of `format` into `answer` ({text, credits, conversation, error}). */
function applyEvent(format, answer, { data }) {
  if (data === "[DONE]") return;
  let v;
  try { v = JSON.parse(data); } catch { return; }
  if (format === "ui-message") {
    if (v.type === "text-delta") answer.text += v.delta || "";
    else if (v.type === "error") answer.error = v.errorText;
    else if (v.type === "finish") {
      const meta = v.messageMetadata || {};
      if (meta.usage) answer.credits = meta.usage.credits;
      answer.conversation = meta.conversationId || meta.conversation_id || answer.conversation;
    }
  } else if (format === "session-delta") {
    if (v.type === "session") answer.conversation = v.sessionKey;
    else if (v.type === "delta") answer.text = v.text || "";
    else if (v.type === "error") answer.error = v.message;
    else if (v.type === "done" && v.usage) answer.credits = v.usage.credits;
  } else if (format === "ag-ui") {
    if (v.type === "RUN_STARTED") answer.conversation = v.threadId;
    else if (v.type === "TEXT_MESSAGE_CONTENT") answer.text += v.delta || "";
    else if (v.type === "RUN_ERROR") answer.error = v.message;
    else if (v.type === "RUN_FINISHED" && v.result && v.result.usage) answer.credits = v.result.usage.credits;
  } else if (format === "openai-chat") {
    if (v.error) answer.error = v.error.message;
    for (const choice of v.choices || []) answer.text += (choice.delta && choice.delta.content) || "";
    if (v.usage) answer.credits = v.usage.credits;
  } else if (format === "text-done") {
    if (v.type === "text") answer.text += v.content || "";
    else if (v.type === "error") answer.error = v.content;
    else if (v.type === "done") {
      if (v.usage) answer.credits = v.usage.credits;
      answer.conversation = v.conversation_id || answer.conversation;
    }
  }
}

async function send(event) {
  event.preventDefault();
  if (state.busy) return;
  pageError("playground");
  const front = state.fronts[Number($("#pg-front").value)];
  const agent = $("#pg-agent").value;
  const key = $("#pg-key").value.trim();
  const message = $("#pg-message").value.trim();
  if (!front || !agent || !message) return;
  if (front.require_key && !key) {
    pageError("playground", "Paste a key, or create a playground key, first.");
    $("#pg-key").focus();
    return;
  }
  const spec = FRONT_APIS[front.api];
  const transcript = $("#pg-transcript");
  transcript.append(el("li", { class: "user" }, el("span", { class: "who", text: "You" }), message));
  const text = el("span", { class: "answer-text" });
  const item = el("li", { class: "assistant", "aria-busy": "true" }, el("span", { class: "who", text: front.format }), text);
  transcript.append(item);
  const raw = $("#pg-raw");
  raw.textContent = "";
  $("#pg-message").value = "";
  $("#pg-status").textContent = "Streaming…";
  state.busy = true;
  $("#pg-send-button").disabled = true;
  const answer = { text: "", credits: null, conversation: state.conversation, error: null };
  try {
    const headers = { "content-type": "application/json", accept: "text/event-stream" };
    if (key) headers.authorization = `Bearer ${key}`;
    const response = await fetch(`${frontUrl(front)}${spec.path(encodeURIComponent(agent))}`, {
      method: "POST", headers, body: JSON.stringify(spec.body(message, state.conversation, agent)),
    });
    answer.conversation = response.headers.get("x-conversation-id") || answer.conversation;
    if (!response.ok) {
      const body = await response.text();
      raw.textContent = body;
      let reason = `${response.status}`;
      try { reason = `${response.status}: ${JSON.parse(body).error.message}`; } catch { /* not JSON */ }
      throw new Error(`The front refused the chat (${reason}).`);
    }
    await readEvents(response.body, (chunk) => {
      raw.textContent += chunk;
      raw.scrollTop = raw.scrollHeight;
    }, (ev) => {
      applyEvent(front.format, answer, ev);
      text.textContent = answer.text;
    });
    state.conversation = answer.conversation;
    transcript.dataset.conversation = state.conversation || "";
    if (answer.error) pageError("playground", `The stream ended with an error: ${answer.error}`);
    const account = key ? await keyAccount(key) : null;
    let balance = "";
    if (account) {
      const b = await api("GET", `/admin/v1/accounts/${encodeURIComponent(account)}/credits`);
      balance = ` · balance of ${account}: ${fmt(b.balance)}`;
    }
    const charge = answer.credits == null ? "charge not reported" : `charged ${fmt(answer.credits)} credits`;
    $("#pg-status").textContent = `Done: ${charge}${balance}.`;
    $("#pg-status").dataset.done = "true";
  } catch (e) {
    pageError("playground", e);
    $("#pg-status").textContent = "";
  } finally {
    item.removeAttribute("aria-busy");
    state.busy = false;
    $("#pg-send-button").disabled = false;
  }
}

// ------------------------------------------------------------------------------ start --

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("#token").value.trim());
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  $("#agents-refresh").addEventListener("click", loadAgents);
  $("#keys-filter").addEventListener("submit", (e) => { e.preventDefault(); loadKeys(); });
  $("#key-create").addEventListener("submit", createKey);
  $("#new-key-copy").addEventListener("click", copyKey);
  $("#accounts-refresh").addEventListener("click", loadAccounts);
  $("#grant").addEventListener("submit", grant);
  $("#chart-form").addEventListener("submit", (e) => drawChart(e).catch((err) => pageError("accounts", err)));
  $("#pg-setup").addEventListener("submit", (e) => e.preventDefault());
  $("#pg-key-form").addEventListener("submit", createPlaygroundKey);
  $("#pg-send").addEventListener("submit", send);
  $("#pg-new").addEventListener("click", newChat);
  $("#pg-message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("#pg-send").requestSubmit();
  });
  if (sessionStorage.getItem(TOKEN_KEY)) {
    signIn(sessionStorage.getItem(TOKEN_KEY));
  } else {
    $("#token").focus();
  }
});
