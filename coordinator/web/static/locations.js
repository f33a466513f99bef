// Locations: the rooms with their live status; select some and record them.
import { api, el, live, may, statusBadge, fmtRunway, throttle, toast } from "./app.js";

const tbody = document.querySelector("#locations tbody");
const bar = document.getElementById("record-bar");
const count = document.getElementById("selected-count");
const separate = document.getElementById("record-separate");
const composite = document.getElementById("record-composite");
const codesSelect = document.getElementById("codes-list");
const selected = new Set();
let sort = "name";
let rows = [];
let starting = false;

const selectable = (loc) => loc.status === "idle" || loc.status === "locked";

function updateBar() {
  for (const id of [...selected]) {
    const loc = rows.find((r) => r.room_id === id);
    if (!loc || !selectable(loc)) selected.delete(id);
  }
  const n = selected.size;
  count.textContent = n ? `${n} selected` : "Select locations to record them";
  separate.disabled = starting || n < 1;
  separate.textContent = n > 1 ? `Record ${n} separately` : "Record";
  composite.disabled = starting || n < 2;
}

function render() {
  document.getElementById("empty").hidden = rows.length > 0;
  tbody.replaceChildren(...rows.map((loc) => {
    const can = may("record") && selectable(loc);
    const box = el("input", {
      type: "checkbox", "aria-label": `Select ${loc.name}`, disabled: !can,
      checked: selected.has(loc.room_id),
      onchange: (e) => { e.target.checked ? selected.add(loc.room_id) : selected.delete(loc.room_id); updateBar(); },
    });
    return el("tr", { "data-room": loc.room_id, class: loc.status },
      el("td", { class: "check" }, box),
      el("td", {}, el("a", { href: `/locations/${encodeURIComponent(loc.room_id)}` }, loc.name)),
      el("td", { class: "status" }, statusBadge(loc)),
      el("td", {}, loc.cameras ? `${loc.cameras_online} of ${loc.cameras}` : "—"),
      el("td", {}, fmtRunway(loc.runway_minutes)));
  }));
  for (const th of document.querySelectorAll("#locations th[aria-sort]")) {
    th.setAttribute("aria-sort", th.querySelector("button").dataset.sort === sort ? "ascending" : "none");
  }
  updateBar();
}

async function load() {
  try {
    rows = (await api("GET", `/locations?sort=${sort}`)).locations;
    render();
  } catch (x) {
    toast(`Locations could not be loaded: ${x.message}`, "error");
  }
}

async function start(kind) {
  const ids = rows.filter((r) => selected.has(r.room_id)).map((r) => r.room_id);
  if (!ids.length) return;
  starting = true;
  updateBar();
  try {
    const body = { room_ids: ids, kind: ids.length === 1 ? "single" : kind };
    if (codesSelect.value) body.codes_list_id = Number(codesSelect.value);
    const out = await api("POST", "/sessions", body);
    selected.clear();
    const failed = out.sessions.flatMap((s) => s.locations.filter((l) => l.failure));
    if (failed.length) toast(`Some rooms did not start: ${failed.map((l) => l.failure).join("; ")}`, "error");
    location.href = `/locations/${encodeURIComponent(ids[0])}`;
  } catch (x) {
    toast(`Not started: ${x.message}`, "error");
    await load();
  } finally {
    starting = false;
    updateBar();
  }
}

for (const b of document.querySelectorAll("#locations button.sort")) {
  b.addEventListener("click", () => { sort = b.dataset.sort; load(); });
}
separate.addEventListener("click", () => start("separate"));
composite.addEventListener("click", () => start("composite"));

if (may("record")) {
  bar.hidden = false;
  api("GET", "/codes-lists").then((out) => {
    for (const cl of out.lists) codesSelect.append(el("option", { value: cl.id }, cl.name));
  }).catch(() => {});
}

const refresh = throttle(load, 300);
live(() => refresh());
setInterval(refresh, 5000);  // cameras and disk runway change without events
load();
