// Sessions: every recording, newest first; search, sort, rename and delete.
import { api, dialog, el, fmtBytes, fmtDateTime, fmtDuration, live, may, me, throttle,
         toast } from "./app.js";

const tbody = document.querySelector("#sessions tbody");
const search = document.getElementById("search");
let rows = [];
let sort = { key: "start", dir: -1 };

const running = (s) => ["starting", "recording", "partial", "stopping"].includes(s.state);
const duration = (s) => s.duration_s ?? (running(s) ? (Date.now() - Date.parse(s.start_at_utc)) / 1000 : null);
const roomsOf = (s) => s.locations.map((l) => (s.room_names || {})[l.room_id] || l.room_id)
  .sort((a, b) => a.localeCompare(b));
const mayRename = (s) => !running(s) && (s.started_by === me.username || ["technician", "administrator"].includes(me.role));

const sortKeys = {
  name: (s) => s.name_display.toLocaleLowerCase(),
  start: (s) => Date.parse(s.start_at_utc),
  duration: (s) => duration(s) ?? 0,
  owner: (s) => (s.started_by_display || s.started_by || "").toLocaleLowerCase(),
};

function files(s) {
  if (running(s)) return el("span", { class: "badge recording" }, "Recording");
  if (s.gathering === "verified") return el("span", { class: "badge ok" }, "Verified on central storage");
  if (s.gathering === "gathering") {
    const pct = s.total_bytes ? Math.floor(100 * (s.gathered_bytes || 0) / s.total_bytes) : 0;
    return el("span", {}, "Gathering ",
      el("progress", { max: 100, value: pct, "aria-label": `Gathering: ${pct} %` }),
      ` ${pct} % of ${fmtBytes(s.total_bytes)}`);
  }
  return el("span", { class: "badge pending" }, "On the rooms");
}

function render() {
  const q = search.value.trim().toLocaleLowerCase();
  const shown = rows.filter((s) => !q || [s.name_display, s.started_by_display, s.started_by,
    ...roomsOf(s)].some((t) => (t || "").toLocaleLowerCase().includes(q)));
  const key = sortKeys[sort.key];
  shown.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * sort.dir);
  document.getElementById("empty").hidden = shown.length > 0;
  tbody.replaceChildren(...shown.map((s) => el("tr", { "data-session": s.id },
    el("td", {}, el("a", { href: `/sessions/${encodeURIComponent(s.id)}` }, s.name_display),
       s.kind === "composite" ? el("span", { class: "tag" }, "composite") : null,
       s.state === "partial" || s.partial_reason ? el("span", { class: "tag warn", title: s.partial_reason || "" }, "partial") : null),
    el("td", {}, fmtDateTime(s.start_at_utc)),
    el("td", { class: "num" }, fmtDuration(duration(s))),
    el("td", {}, roomsOf(s).join(", ")),
    el("td", {}, s.started_by_display || s.started_by || "room button"),
    el("td", {}, files(s)),
    el("td", { class: "actions" },
      mayRename(s) ? el("button", { type: "button", class: "quiet", onclick: () => rename(s) }, "Rename") : null,
      may("delete_sessions") && !running(s)
        ? el("button", { type: "button", class: "quiet danger-text", onclick: () => remove(s) }, "Delete") : null))));
  for (const th of document.querySelectorAll("#sessions th[aria-sort]")) {
    const k = th.querySelector("button").dataset.sort;
    th.setAttribute("aria-sort", k === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

async function load() {
  try {
    rows = (await api("GET", "/sessions")).sessions;
    render();
  } catch (x) {
    toast(`Sessions could not be loaded: ${x.message}`, "error");
  }
}

async function rename(s) {
  const input = el("input", { id: "new-name", value: s.name || s.name_display, maxlength: 200, required: true });
  await dialog({
    title: "Rename session", body: [el("label", { for: "new-name" }, "Name"), input], okText: "Rename",
    onOk: async () => { await api("PATCH", `/sessions/${encodeURIComponent(s.id)}`, { name: input.value }); await load(); },
  });
}

async function remove(s) {
  await dialog({
    title: "Delete this session?",
    body: [el("p", {}, `“${s.name_display}” (${fmtDateTime(s.start_at_utc)}, ${roomsOf(s).join(", ")}) `
             + "disappears from the sessions with its scores and remarks."),
           el("p", { class: "muted small" }, "Its recording files are not deleted by this.")],
    okText: "Delete", danger: true,
    onOk: async () => { await api("DELETE", `/sessions/${encodeURIComponent(s.id)}`); toast("Deleted"); await load(); },
  });
}

for (const b of document.querySelectorAll("#sessions button.sort")) {
  b.addEventListener("click", () => {
    const k = b.dataset.sort;
    sort = { key: k, dir: sort.key === k ? -sort.dir : (k === "start" || k === "duration" ? -1 : 1) };
    render();
  });
}
search.addEventListener("input", render);
const refresh = throttle(load, 500);
live((e) => { if (e.type !== "location") refresh(); });
setInterval(() => { if (rows.some(running)) render(); }, 1000);
load();
