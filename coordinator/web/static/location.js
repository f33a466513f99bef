// One location: live pictures, record and stop, codes and remarks, the event log.
import { api, boot, dialog, el, fmtDuration, fmtTime, live, may, me, statusBadge,
         throttle, toast, typing } from "./app.js";

const roomId = boot.room_id;
const $ = (id) => document.getElementById(id);
let loc = null;          // the location as the API reports it
let session = null;      // its running session, if any
let group = [];          // every session of that session's group
let codesLists = [];
let annotations = [];
const events = [];       // live events about this room, newest last
const cams = new Map();  // camera name -> {img, busy}

const enc = encodeURIComponent;
const mayStop = () => session && (session.started_by === me.username || me.role === "technician");

async function load() {
  let list;
  try {
    list = (await api("GET", "/locations")).locations;
  } catch (x) {
    toast(`Not loaded: ${x.message}`, "error");
    return;
  }
  loc = list.find((l) => l.room_id === roomId) || null;
  if (!loc) {
    $("room-name").textContent = "Unknown location";
    return;
  }
  const names = Object.fromEntries(list.map((l) => [l.room_id, l.name]));
  if (loc.session_id && (!session || session.id !== loc.session_id)) {
    session = await api("GET", `/sessions/${enc(loc.session_id)}`).catch(() => null);
    const all = (await api("GET", "/sessions?limit=200").catch(() => ({ sessions: [] }))).sessions;
    group = session ? all.filter((s) => s.group_id && s.group_id === session.group_id) : [];
    if (session && !group.length) group = [session];
    group.names = names;
    await loadAnnotations();
  } else if (!loc.session_id) {
    session = null;
    group = [];
  }
  render();
}

async function loadAnnotations() {
  if (!session) { annotations = []; return; }
  annotations = await api("GET", `/sessions/${enc(session.id)}/annotations.json`).catch(() => []);
  renderLog();
}

function render() {
  document.title = `${loc.name} · roomrec`;
  $("room-name").textContent = loc.name;
  $("room-status").replaceWith(Object.assign(statusBadge(loc), { id: "room-status" }));
  const recording = loc.status === "recording";
  $("record").hidden = !(may("record") && (loc.status === "idle" || loc.status === "locked"));
  $("record").disabled = loc.status === "locked" && loc.locked_by !== me.username;
  $("stop").hidden = !(recording && session && mayStop());
  $("rec-indicator").hidden = !recording;
  const lockBtn = $("lock");
  lockBtn.hidden = !(may("record") && (loc.status === "idle" ||
                     (loc.status === "locked" && loc.locked_by === me.username)));
  lockBtn.textContent = loc.status === "locked" ? "Unlock" : "Lock";
  const line = $("session-line");
  if (session && recording) {
    const others = group.filter((s) => s.id !== session.id).length;
    const rooms = session.locations.map((l) => (group.names || {})[l.room_id] || l.room_id)
      .sort((a, b) => a.localeCompare(b));
    line.textContent = `${session.kind === "composite" ? "Composite session" : "Session"} ` +
      `${session.proposal ? `“${session.proposal}” ` : ""}started by ${session.started_by || "the room's button"}` +
      (rooms.length > 1 ? ` · locations: ${rooms.join(", ")}` : "") +
      (others ? ` · with ${others} separate session${others > 1 ? "s" : ""} of the same start` : "");
    line.hidden = false;
  } else {
    line.hidden = true;
  }
  const canAnnotate = may("record") && !!session && recording;
  $("codes-panel").hidden = !canAnnotate;
  $("remark-panel").hidden = !canAnnotate;
  if (canAnnotate) renderCodes();
  renderCameras();
  tick();
}

function renderCameras() {
  const list = loc.camera_list || [];
  const box = $("cameras");
  if (!list.length) {
    box.replaceChildren(el("p", { class: "muted" }, loc.online ? "No cameras reported." : "The room is offline."));
    cams.clear();
    return;
  }
  for (const cam of list) {
    let c = cams.get(cam.name);
    if (!c) {
      const img = el("img", { alt: `${cam.name}: latest picture`, "data-camera": cam.name });
      const label = el("figcaption", {}, cam.name, el("span", { class: "cam-state" }));
      c = { img, figure: el("figure", { class: "camera" }, img, label), busy: false, label };
      img.addEventListener("load", () => { c.busy = false; c.figure.classList.remove("nopic"); });
      img.addEventListener("error", () => { c.busy = false; c.figure.classList.add("nopic"); });
      cams.set(cam.name, c);
    }
    c.label.querySelector(".cam-state").textContent = cam.state === "online" ? "" : ` · ${cam.state}`;
  }
  box.replaceChildren(...list.map((cam) => cams.get(cam.name).figure));
}

// About once a second, a fresh picture of each camera, never two requests at once. The
// picture is fetched first and shown when whole, so the old one stays until then.
function refreshPictures() {
  if (!loc || !loc.online || document.hidden) return;
  for (const [name, c] of cams) {
    if (c.busy) continue;
    c.busy = true;
    fetch(`/api/v1/locations/${enc(roomId)}/cameras/${enc(name)}/snapshot`, { cache: "no-store" })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((blob) => {
        const old = c.url;
        c.url = URL.createObjectURL(blob);
        c.img.src = c.url;
        if (old) URL.revokeObjectURL(old);
      })
      .catch(() => { c.busy = false; c.figure.classList.add("nopic"); });
  }
}

function tick() {
  if (session && loc && loc.status === "recording") {
    const s = (Date.now() - Date.parse(session.start_at_utc)) / 1000;
    $("rec-duration").textContent = s < 0 ? `starts in ${Math.ceil(-s)} s` : fmtDuration(s);
  }
}

function renderCodes() {
  const select = $("codes-list");
  if (select.options.length !== codesLists.length + 1) {
    select.replaceChildren(el("option", { value: "" }, "none"),
      ...codesLists.map((cl) => el("option", { value: cl.id }, cl.name)));
  }
  select.value = session.codes_list_id ?? "";
  select.disabled = annotations.some((a) => a.kind === "score");
  const cl = codesLists.find((x) => x.id === session.codes_list_id);
  $("codes").replaceChildren(...(cl ? cl.codes : []).map((code) =>
    el("button", { type: "button", class: "code", "data-key": code.key,
                   style: { borderColor: code.color }, title: `Key ${code.key.toUpperCase()}`,
                   onclick: () => score(code.key) },
       el("kbd", {}, code.key.toUpperCase()), " ", code.label)));
}

async function score(key) {
  if (!session) return;
  const btn = document.querySelector(`#codes button[data-key="${CSS.escape(key)}"]`);
  btn?.classList.add("hit");
  setTimeout(() => btn?.classList.remove("hit"), 400);
  try {
    await api("POST", `/sessions/${enc(session.id)}/scores`, { key });
    await loadAnnotations();
    renderCodes();
  } catch (x) {
    toast(`Not scored: ${x.message}`, "error");
  }
}

function renderLog() {
  const items = [
    ...annotations.map((a) => ({
      at: a.wall_utc, text: a.kind === "score" ? `${a.label || a.code} (${(a.code || "").toUpperCase()}) scored by ${a.user}`
        : `Remark by ${a.user}: ${a.text}`, kind: a.kind })),
    ...events.map((e) => ({ at: e.at_utc, text: describe(e), kind: "event" })),
  ].sort((x, y) => Date.parse(y.at) - Date.parse(x.at)).slice(0, 100);
  $("log").replaceChildren(...items.map((i) =>
    el("li", { class: i.kind }, el("time", {}, fmtTime(i.at)), " ", i.text)));
}

function describe(e) {
  const d = e.data || {};
  if (e.type === "location") return `Status: ${d.status}${d.by ? ` (${d.by})` : ""}`;
  if (e.type === "group_started") return `Recording started by ${d.by}`;
  if (e.type === "group_stopped") return `Recording stopped by ${d.by}`;
  if (e.type === "session") return d.failed ? `Failed: ${d.failed}` : `Session ${d.state || "changed"}`;
  return e.type;
}

async function record() {
  $("record").disabled = true;
  try {
    await api("POST", "/sessions", { room_ids: [roomId], kind: "single" });
    session = null;
    await load();
  } catch (x) {
    toast(`Not started: ${x.message}`, "error");
  } finally {
    $("record").disabled = false;
  }
}

async function stop() {
  if (!session) return;
  const rooms = [...new Set(group.flatMap((s) => s.locations.map((l) => l.room_id)))];
  const names = rooms.map((r) => (group.names || {})[r] || r).sort((a, b) => a.localeCompare(b));
  const sure = await dialog({
    title: "Stop this session?",
    body: [el("p", {}, names.length > 1 ? `Recording stops in all ${names.length} locations of this session:` : "Recording stops in:"),
           el("ul", { class: "stop-list" }, ...names.map((n) => el("li", {}, n)))],
    okText: names.length > 1 ? `Stop all ${names.length}` : "Stop", cancelText: "Keep recording", danger: true,
  });
  if (!sure) return;
  const naming = await api("GET", "/settings/naming").catch(() => ({ default_name: null, edit_before_save: true }));
  const fixed = !!session.proposal && !naming.edit_before_save;
  const input = el("input", { id: "session-name", maxlength: 200, value: session.proposal || "",
                              required: !session.proposal, readonly: fixed, autocomplete: "off" });
  await dialog({
    title: "Save session",
    body: [el("label", { for: "session-name" }, "Session name"), input,
           fixed ? el("p", { class: "muted small" }, "Named by the default name.") : null],
    okText: "Save", cancelText: "Back",
    onOk: async () => {
      const name = input.value.trim();
      await api("POST", `/sessions/${enc(session.id)}/stop`, { name: name || null });
      toast(`Saved “${name || session.proposal}”`);
      session = null;
      await load();
    },
  });
}

$("record").addEventListener("click", record);
$("stop").addEventListener("click", stop);
$("lock").addEventListener("click", async () => {
  try {
    await api("POST", `/locations/${enc(roomId)}/${loc.status === "locked" ? "unlock" : "lock"}`);
    await load();
  } catch (x) { toast(x.message, "error"); }
});
$("codes-list").addEventListener("change", async (e) => {
  try {
    session = await api("PUT", `/sessions/${enc(session.id)}/codes-list`,
                        { codes_list_id: e.target.value ? Number(e.target.value) : null });
    renderCodes();
  } catch (x) { toast(x.message, "error"); renderCodes(); }
});
async function addRemark() {
  const text = $("remark").value.trim();
  if (!text || !session) return;
  try {
    await api("POST", `/sessions/${enc(session.id)}/remarks`, { text });
    $("remark").value = "";
    await loadAnnotations();
  } catch (x) { toast(`Not added: ${x.message}`, "error"); }
}
$("add-remark").addEventListener("click", addRemark);
$("remark").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); addRemark(); }
});
document.addEventListener("keydown", (e) => {
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey || document.getElementById("dialog").open) return;
  if ($("codes-panel").hidden || e.key.length !== 1) return;
  const key = e.key.toLowerCase();
  if (document.querySelector(`#codes button[data-key="${CSS.escape(key)}"]`)) {
    e.preventDefault();
    score(key);
  }
});

const refresh = throttle(load, 300);
live((e) => {
  const d = e.data || {};
  const mine = d.room_id === roomId || (session && (d.session_id === session.id || d.group_id === session.group_id));
  if (mine && e.type !== "annotation") {  // scores and remarks come from the list
    events.push(e);
    if (events.length > 200) events.shift();
    renderLog();
  }
  if (e.type === "annotation" && session && d.session_id === session.id) loadAnnotations();
  else if (e.type !== "gathering") refresh();
});
api("GET", "/codes-lists").then((out) => { codesLists = out.lists; if (session) render(); }).catch(() => {});
setInterval(refreshPictures, 1000);
setInterval(tick, 1000);
setInterval(refresh, 5000);
load().then(refreshPictures);
