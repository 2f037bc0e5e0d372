// The barista board. Plain JavaScript, no build step.
//
// Sign-in: the staff token is kept in sessionStorage (gone when the tab closes) and sent as an
// Authorization header on every call. Live updates are server-sent events read with fetch rather
// than EventSource, because EventSource cannot send that header and a token in a URL would end up
// in logs and the browser history.
"use strict";

const TOKEN_KEY = "orderpipe.token";
const STORE_KEY = "orderpipe.store";
const LATE_AFTER_SECONDS = 5 * 60;

const STEPS = {
  pending: { step: "start_preparing", label: "Start preparing" },
  preparing: { step: "mark_ready", label: "Mark ready" },
  ready: { step: "complete", label: "Complete" },
};

const state = {
  token: null,
  store: null,
  board: null,
  // Server time minus this tablet's time, so ages are right even when the tablet's clock is not.
  clockOffsetMs: 0,
  // Errors shown on cards, by order id, until the next try on that card.
  cardErrors: new Map(),
  busy: new Set(),
  stream: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${state.token}` },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- sign-in ---------------------------------------------------------------------------------

function showSignIn(message) {
  stopStream();
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("store-title").hidden = true;
  $("connection").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("store").value = sessionStorage.getItem(STORE_KEY) || "";
  $("token").focus();
}

async function signIn(token, store) {
  state.token = token;
  const me = await api("/api/me");
  if (!me.store_id) {
    throw new Error(`a ${me.role} token has no store board: use a barista or store manager token`);
  }
  state.store = store || me.store_id;
  // Checks access and that the store exists before showing anything.
  const snapshot = await api(`/api/stores/${encodeURIComponent(state.store)}/board`);
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(STORE_KEY, state.store);
  $("who").textContent = `${me.subject} (${me.role.replace("_", " ")})`;
  openBoard(snapshot);
}

function openBoard(snapshot) {
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  $("who").hidden = false;
  $("store-title").hidden = false;
  $("store-title").textContent = `Store ${state.store}`;
  $("connection").hidden = false;
  applyBoard(snapshot);
  $("board").focus();
  startStream();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.board = null;
  showSignIn("");
}

// ---- live stream -----------------------------------------------------------------------------

function setConnection(live, text) {
  const node = $("connection");
  node.className = `connection ${live ? "live" : "down"}`;
  node.textContent = text;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  let delay = 500;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`/api/stores/${encodeURIComponent(state.store)}/events`, {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        const body = await response.json().catch(() => ({}));
        showSignIn(body.message || `HTTP ${response.status}`);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setConnection(true, "Live");
      delay = 500;
      await readEvents(response.body, onEvent);
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setConnection(false, "Reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// Parses a text/event-stream body: events are separated by a blank line; `event:` names them
// and `data:` lines carry the payload.
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) handle(name, data.join("\n"));
    }
  }
}

function onEvent(name, data) {
  if (name === "board") {
    $("board-error").hidden = true;
    applyBoard(JSON.parse(data));
  } else if (name === "unavailable") {
    const banner = $("board-error");
    banner.textContent = `${JSON.parse(data).message}; showing the last board.`;
    banner.hidden = false;
  } else if (name === "expired") {
    // The server ends the stream when the token expires: sign in again.
    showSignIn(JSON.parse(data).message);
  }
}

// ---- rendering -------------------------------------------------------------------------------

function applyBoard(snapshot) {
  state.clockOffsetMs = Date.parse(snapshot.generated_at) - Date.now();
  state.board = snapshot.board;
  render();
}

function render() {
  const board = state.board;
  if (!board) return;
  const focused = document.activeElement;
  const focusedOrder = focused && focused.closest ? focused.closest("[data-order-id]") : null;
  const focusedId = focusedOrder ? focusedOrder.dataset.orderId : null;

  const metrics = board.metrics;
  $("metric-orders-today").textContent = metrics.orders_today;
  $("metric-active").textContent = metrics.active;
  $("metric-completed").textContent = metrics.completed;
  $("metric-average-prep").textContent =
    metrics.average_prep_ms === null ? "–" : formatPrep(metrics.average_prep_ms);

  const warnings = board.stock_warnings;
  $("stock-warnings").hidden = warnings.length === 0;
  $("stock-list").replaceChildren(
    ...warnings.map((w) =>
      el("li", { "data-sku": w.sku }, el("strong", {}, w.sku), `: ${w.available} left (threshold ${w.threshold})`,
        w.reorder_suggested ? `, reorder ${w.reorder_suggested}` : ""),
    ),
  );

  // Purchase orders awaiting their delivery: what ReceiveDelivery closes, by reorder number.
  const reorders = board.open_reorders;
  $("open-reorders").hidden = reorders.length === 0;
  $("reorder-list").replaceChildren(
    ...reorders.map((r) =>
      el("li", { "data-sku": r.sku, "data-reorder": r.reorder_number },
        el("strong", {}, r.sku), `: reorder #${r.reorder_number}, ${r.quantity} ordered`,
        r.since ? ` since ${formatSince(r.since)}` : "", ` (${r.available} available now)`),
    ),
  );

  for (const column of ["pending", "preparing", "ready"]) {
    const orders = board.orders[column];
    $(`count-${column}`).textContent = orders.length;
    const cards = orders.map((order) => card(order, column));
    $(`column-${column}`).replaceChildren(
      ...(cards.length ? cards : [el("li", { class: "empty" }, "Nothing here")]),
    );
  }
  // Orders that left the board take their errors with them.
  const open = new Set(["pending", "preparing", "ready"].flatMap((c) => board.orders[c].map((o) => o.order_id)));
  for (const id of state.cardErrors.keys()) if (!open.has(id)) state.cardErrors.delete(id);

  // Keep keyboard users where they were: on the same order's button, wherever it moved.
  if (focusedId) {
    const button = document.querySelector(`[data-order-id="${CSS.escape(focusedId)}"] button.advance`);
    if (button) button.focus();
    else $("board").focus();
  }
  tick();
}

function card(order, column) {
  const next = STEPS[column];
  const error = state.cardErrors.get(order.order_id) || "";
  const paid = order.payment_status === "captured";
  const title = `#${order.order_id.slice(0, 8)}`;
  const button = el(
    "button",
    {
      type: "button",
      class: "advance",
      "data-step": next.step,
      disabled: state.busy.has(order.order_id),
      "aria-label": `${next.label}: order ${title}`,
    },
    next.label,
  );
  button.addEventListener("click", () => advance(order.order_id, next.step));
  return el(
    "li",
    { class: "card", "data-order-id": order.order_id, "data-column": column, "data-status": order.status },
    el(
      "header",
      {},
      el("h3", {}, title),
      el("span", { class: "age", "data-since": order.placed_at, title: "time since the order was placed" }, ""),
    ),
    el(
      "p",
      { class: "customer" },
      `for ${order.customer_id}`,
      column === "pending" ? " · " : null,
      column === "pending"
        ? el("span", { class: `badge ${paid ? "paid" : "unpaid"}` }, paid ? "paid" : "awaiting payment")
        : null,
    ),
    el(
      "ul",
      { class: "items" },
      ...order.items.map((item) =>
        el(
          "li",
          {},
          el("strong", {}, `${item.quantity} × `),
          item.name || item.sku,
          ...item.customisations.map((c) => el("span", { class: "custom" }, c)),
        ),
      ),
    ),
    order.note ? el("p", { class: "note" }, `“${order.note}”`) : null,
    button,
    el("p", { class: "error", role: "alert" }, error),
  );
}

async function advance(orderId, step) {
  state.busy.add(orderId);
  state.cardErrors.delete(orderId);
  render();
  try {
    await api(`/api/orders/${encodeURIComponent(orderId)}/advance`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ step }),
    });
  } catch (error) {
    if (error.status === 401) {
      showSignIn(error.message);
      return;
    }
    state.cardErrors.set(orderId, error.message);
  } finally {
    state.busy.delete(orderId);
  }
  // The card moves when the live stream brings the changed view; until then it stays put.
  render();
}

// ---- age timers ------------------------------------------------------------------------------

function formatDuration(totalSeconds) {
  const seconds = Math.max(0, Math.floor(totalSeconds));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = String(seconds % 60).padStart(2, "0");
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

// Under a minute in seconds with a tenth, so fast preparations do not all read 0:00.
/** The local time of day (HH:MM) of an RFC 3339 time: when a reorder was opened. */
function formatSince(rfc3339) {
  const at = new Date(rfc3339);
  return Number.isNaN(at.getTime()) ? rfc3339 : at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function formatPrep(milliseconds) {
  return milliseconds < 60000 ? `${(milliseconds / 1000).toFixed(1)} s` : formatDuration(milliseconds / 1000);
}

function tick() {
  const now = Date.now() + state.clockOffsetMs;
  for (const node of document.querySelectorAll(".age[data-since]")) {
    const age = (now - Date.parse(node.dataset.since)) / 1000;
    node.textContent = formatDuration(age);
    node.classList.toggle("late", age > LATE_AFTER_SECONDS);
  }
}

// ---- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || $("sign-in-form").querySelector("button");
    button.disabled = true;
    $("sign-in-error").textContent = "";
    try {
      await signIn($("token").value.trim(), $("store").value.trim());
      $("token").value = "";
    } catch (error) {
      state.token = null;
      $("sign-in-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  setInterval(tick, 1000);

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    signIn(token, sessionStorage.getItem(STORE_KEY)).catch((error) => showSignIn(error.message));
  } else {
    showSignIn("");
  }
});
