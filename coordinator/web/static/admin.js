// Administration: users and roles, locations (pair, rename, cameras), codes lists, naming.
import { api, dialog, el, live, may, throttle, toast } from "./app.js";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const ROLES = ["technician", "administrator", "trainer", "trainee"];
const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

async function guarded(what, fn) {
  try { return await fn(); } catch (x) { toast(`${what}: ${x.message}`, "error"); return null; }
}

// --- users ---
async function loadUsers() {
  if (!may("manage_users")) { $("users").closest("section").hidden = true; return; }
  const out = await guarded("Users", () => api("GET", "/users"));
  if (!out) return;
  $("users").tBodies[0].replaceChildren(...out.users.map((u) => {
    const role = el("select", { "aria-label": `Role of ${u.username}` },
      ...ROLES.map((r) => el("option", { value: r, selected: r === u.role }, cap(r))));
    role.addEventListener("change", () => guarded("Role", async () => {
      await api("PATCH", `/users/${u.id}`, { role: role.value });
      toast(`${u.username} is now ${cap(role.value)}`);
    }).then(loadUsers));
    const active = el("input", { type: "checkbox", checked: u.active, "aria-label": `${u.username} may log in` });
    active.addEventListener("change", () => guarded("Active", () =>
      api("PATCH", `/users/${u.id}`, { active: active.checked })).then(loadUsers));
    const pw = el("button", { type: "button", class: "quiet" }, "Set password");
    pw.addEventListener("click", () => {
      const input = el("input", { id: "pw", type: "password", minlength: 8, required: true, autocomplete: "new-password" });
      dialog({ title: `New password for ${u.username}`, body: [el("label", { for: "pw" }, "Password"), input],
               okText: "Set", onOk: () => api("PATCH", `/users/${u.id}`, { password: input.value }) })
        .then((done) => done && toast("Password changed"));
    });
    return el("tr", {}, el("td", {}, u.username), el("td", {}, u.display_name), el("td", {}, role),
              el("td", {}, active), el("td", {}, pw));
  }));
}

$("new-user").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const ok = await guarded("New user", () => api("POST", "/users", {
    username: f.username.value, display_name: f.display_name.value, role: f.role.value,
    password: f.password.value }));
  if (ok) { f.reset(); toast(`Added ${ok.username}`); loadUsers(); }
});

// --- locations ---
async function loadLocations() {
  const [locs, found] = await Promise.all([
    guarded("Locations", () => api("GET", "/locations")),
    guarded("Discovered rooms", () => api("GET", "/locations/discovered"))]);
  if (locs) {
    $("admin-locations").tBodies[0].replaceChildren(...locs.locations.map((l) => el("tr", {},
      el("td", {}, l.name), el("td", {}, el("code", {}, l.room_id)), el("td", {}, `${l.host}:${l.port}`),
      el("td", {}, (l.camera_list || []).map((c) => `${c.name} (${c.state})`).join(", ") || "—"),
      el("td", {}, el("button", { type: "button", class: "quiet", onclick: () => renameLocation(l) }, "Rename"),
        l.flagged ? el("button", { type: "button", class: "quiet", onclick: () => pair({ room_id: l.room_id }, l.name) }, "Pair again") : null))));
  }
  if (found) {
    $("discovered").replaceChildren(...(found.rooms.length ? found.rooms.map((d) => el("li", {},
      `${d.name} (${d.host}:${d.port}) `,
      el("button", { type: "button", onclick: () => pair({ room_id: d.room_id }, d.name) }, "Pair")))
      : [el("li", { class: "muted" }, "No unpaired rooms found.")]));
  }
}

function renameLocation(l) {
  const input = el("input", { id: "loc-name", value: l.name, maxlength: 100, required: true });
  dialog({ title: "Rename location", body: [el("label", { for: "loc-name" }, "Name"), input], okText: "Rename",
           onOk: () => api("PATCH", `/locations/${enc(l.room_id)}`, { name: input.value.trim() }) })
    .then(loadLocations);
}

function pair(target, name) {
  const code = el("input", { id: "pair-code", autocomplete: "off" });
  dialog({
    title: `Pair ${name}`,
    body: [el("label", { for: "pair-code" }, "Enrollment code"), code,
           el("p", { class: "muted small" }, "Without a code, press the room's record button within the pairing window.")],
    okText: "Pair",
    onOk: () => api("POST", "/locations/pair", { ...target, code: code.value || null }),
  }).then((done) => { if (done) toast(`Paired ${name}`); loadLocations(); });
}

$("pair-address").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const ok = await guarded("Pair", () => api("POST", "/locations/pair", {
    host: f.host.value, port: Number(f.port.value), code: f.code.value || null }));
  if (ok) { f.reset(); toast(`Paired ${ok.name}`); loadLocations(); }
});

// --- codes lists ---
async function loadCodes() {
  const out = await guarded("Codes lists", () => api("GET", "/codes-lists"));
  if (!out) return;
  $("codes-lists").replaceChildren(...(out.lists.length ? out.lists.map((cl) => el("div", { class: "codes-list" },
    el("h3", {}, cl.name),
    el("p", {}, ...cl.codes.map((c) => el("span", { class: "code-chip", style: { borderColor: c.color } },
      el("kbd", {}, c.key.toUpperCase()), ` ${c.label}`))),
    el("button", { type: "button", class: "quiet", onclick: () => editCodes(cl) }, "Edit"),
    el("button", { type: "button", class: "quiet danger-text", onclick: () => deleteCodes(cl) }, "Delete")))
    : [el("p", { class: "muted" }, "No codes lists yet.")]));
}

function codesText(cl) {
  return cl ? cl.codes.map((c) => `${c.key} ${c.label}${c.color !== "#3366cc" ? ` ${c.color}` : ""}`).join("\n") : "";
}

function parseCodes(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line, i) => {
    const m = line.match(/^(\S)\s+(.+?)(?:\s+(#[0-9a-fA-F]{6}))?$/);
    if (!m) throw new Error(`line ${i + 1}: write a key, a space and a label, e.g. "a Airway check"`);
    const code = { key: m[1].toLowerCase(), label: m[2] };
    if (m[3]) code.color = m[3].toLowerCase();
    return code;
  });
}

function editCodes(cl) {
  const name = el("input", { id: "cl-name", value: cl ? cl.name : "", maxlength: 100, required: true });
  const codes = el("textarea", { id: "cl-codes", rows: 8 });
  codes.value = codesText(cl);
  dialog({
    title: cl ? `Edit ${cl.name}` : "New codes list",
    body: [el("label", { for: "cl-name" }, "Name"), name,
           el("label", { for: "cl-codes" }, "Codes: one per line, key then label (then a colour like #cc3333)"), codes],
    okText: "Save",
    onOk: () => {
      const body = { name: name.value.trim(), codes: parseCodes(codes.value) };
      return cl ? api("PUT", `/codes-lists/${cl.id}`, body) : api("POST", "/codes-lists", body);
    },
  }).then(loadCodes);
}

function deleteCodes(cl) {
  dialog({ title: `Delete the codes list ${cl.name}?`, body: el("p", {}, "Sessions keep the scores already made."),
           okText: "Delete", danger: true, onOk: () => api("DELETE", `/codes-lists/${cl.id}`) }).then(loadCodes);
}
$("new-codes-list").addEventListener("click", () => editCodes(null));

// --- naming ---
async function loadNaming() {
  const n = await guarded("Naming", () => api("GET", "/settings/naming"));
  if (!n) return;
  const f = $("naming");
  f.default_name.value = n.default_name || "";
  f.edit_before_save.checked = n.edit_before_save;
}
$("naming").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const ok = await guarded("Naming", () => api("PUT", "/settings/naming", {
    default_name: f.default_name.value.trim() || null, edit_before_save: f.edit_before_save.checked }));
  if (ok) toast("Naming saved");
});

const refreshLocations = throttle(loadLocations, 1000);
live((e) => { if (e.type === "location") refreshLocations(); });
loadUsers();
loadLocations();
loadCodes();
loadNaming();
