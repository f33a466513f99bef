// Shared by every page: the API, live events, dialogs, formatting and DOM building.
// Text from the server is always set as text, never parsed as HTML.

export const API = "/api/v1";
export const boot = JSON.parse(document.getElementById("boot").textContent);
export const me = boot.user || null;
export const may = (permission) => !!me && me.permissions.includes(permission);

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  if (r.status === 401 && !path.startsWith("/login")) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, { detail: "log in first" });
  }
  const text = await r.text();
  let data = null;
  if (text && (r.headers.get("Content-Type") || "").includes("json")) data = JSON.parse(text);
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// el("td", {class: "x", onclick: f}, "text", child)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const t = el("div", { class: `toast ${kind}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

export function pad(n) { return String(n).padStart(2, "0"); }

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${pad(m)}:${pad(r)}` : `${m}:${pad(r)}`;
}

export function fmtDateTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtTime(iso) {
  const d = new Date(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtRunway(minutes) {
  if (minutes === null || minutes === undefined) return "—";
  if (minutes >= 120) return `${Math.floor(minutes / 60)} h`;
  if (minutes >= 60) return `${Math.floor(minutes / 60)} h ${Math.floor(minutes % 60)} min`;
  return `${Math.floor(minutes)} min`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// The status of a location, in words and as a badge.
export function statusText(loc) {
  switch (loc.status) {
    case "recording": return loc.recording_by ? `Recording by ${loc.recording_by}` : "Recording";
    case "locked": return loc.locked_by ? `Locked by ${loc.locked_by}` : "Locked";
    case "offline": return "Offline";
    case "error": return loc.flagged ? `Error: ${loc.flagged}` : "Error";
    default: return "Idle";
  }
}

export function statusBadge(loc) {
  return el("span", { class: `badge ${loc.status}`, "data-status": loc.status },
            statusText(loc));
}

// One modal dialog at a time. fields: nodes placed in the body. onOk may throw to keep
// the dialog open with its message (e.g. a name the rules refuse).
export function dialog({ title, body = [], okText = "OK", cancelText = "Cancel",
                         danger = false, onOk = null }) {
  const d = document.getElementById("dialog");
  const ok = document.getElementById("dialog-ok");
  const cancel = document.getElementById("dialog-cancel");
  const err = document.getElementById("dialog-error");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-body").replaceChildren(...[body].flat().filter((n) => n));
  ok.textContent = okText;
  ok.className = danger ? "danger" : "primary";
  cancel.textContent = cancelText;
  err.hidden = true;
  return new Promise((resolve) => {
    let busy = false;
    const finish = (value) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", onCancel);
      d.removeEventListener("cancel", onCancel);
      d.close();
      resolve(value);
    };
    const form = document.getElementById("dialog-form");
    const submit = async (e) => {
      e.preventDefault();
      if (busy) return;
      busy = true;
      ok.disabled = true;
      try {
        const value = onOk ? await onOk() : true;
        finish(value === undefined ? true : value);
      } catch (x) {
        err.textContent = x.message;
        err.hidden = false;
      } finally {
        busy = false;
        ok.disabled = false;
      }
    };
    const onCancel = (e) => { if (e) e.preventDefault(); finish(false); };
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", onCancel);
    d.addEventListener("cancel", onCancel);
    d.showModal();
    const first = d.querySelector("#dialog-body input, #dialog-body select, #dialog-body textarea");
    (first || cancel).focus();
  });
}

// Live events from the coordinator (server-sent events); reconnects by itself.
export function live(onEvent) {
  const badge = document.getElementById("live");
  const set = (state, text) => {
    if (badge) { badge.hidden = false; badge.dataset.state = state; badge.textContent = text; }
  };
  const src = new EventSource(API + "/events");
  src.onopen = () => { set("open", "live"); onEvent({ type: "reconnected", data: {} }); };
  src.onerror = () => set("lost", "reconnecting…");
  for (const type of ["location", "session", "group_started", "group_stopped", "annotation",
                      "gathering"]) {
    src.addEventListener(type, (e) => onEvent(JSON.parse(e.data)));
  }
  return src;
}

// Call fn at most once per `ms`, and once more after the last call.
export function throttle(fn, ms) {
  let timer = null, again = false;
  return function run() {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (again) { again = false; run(); } }, ms);
  };
}

// Typing into a field must never score a code or press a shortcut.
export function typing(e) {
  const t = e.target;
  return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
}

const logout = document.getElementById("logout");
if (logout) {
  logout.addEventListener("click", async () => {
    try { await api("POST", "/logout"); } finally { location.href = "/login"; }
  });
}
