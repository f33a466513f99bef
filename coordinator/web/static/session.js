// One session: every camera in a grid, played in step by one clock.
//
// The manifests give each segment's first-frame wall-clock time; the player keeps one
// session clock (seconds since the earliest first frame) and places every video on it:
// video position = the segment's own start offset + (session time - segment start).
// While playing, small drifts are pulled in with the playback rate and large ones are
// seeked away; a camera that is still loading holds every camera, so they stay in step.
import { api, boot, el, fmtBytes, fmtDateTime, fmtDuration, fmtTime, toast, typing } from "./app.js";

const sid = boot.session_id;
const enc = encodeURIComponent;
const $ = (id) => document.getElementById(id);
const JUMP_BEFORE_S = 3;  // clicking an event starts playback this much before it
const TICK_MS = 40;

let origin = 0;        // epoch seconds of session time 0
let duration = 0;
let tracks = [];
let t = 0;             // session time, seconds
let playing = false;
let anchorT = 0, anchorWall = 0;

const parseUtc = (iso) => Date.parse(iso) / 1000;

function segmentAt(tr, time) {
  return tr.segments.find((s) => time >= s.start && time < s.end) || null;
}

function makeTrack(track, roomName) {
  const segments = track.segments
    .filter((s) => s.complete && s.first_frame_utc && s.duration_s)
    .map((s) => ({ ...s, start: parseUtc(s.first_frame_utc) - origin,
                   end: parseUtc(s.first_frame_utc) - origin + s.duration_s, offset: null }));
  const video = el("video", { muted: true, playsinline: true, preload: "auto",
                              "data-room": track.room_id, "data-camera": track.camera });
  video.muted = true;
  const sound = el("button", { type: "button", class: "quiet small", "aria-pressed": "false" }, "Sound");
  sound.addEventListener("click", () => {
    video.muted = !video.muted;
    sound.setAttribute("aria-pressed", String(!video.muted));
  });
  const note = el("span", { class: "tile-note" });
  const tile = el("figure", { class: "tile" }, video,
    el("figcaption", {}, `${roomName} · ${track.camera}`, note, sound));
  if (!track.available) note.textContent = ` · ${track.reason || "not available"}`;
  const tr = { ...track, segments, video, tile, note, seg: null, loading: false };
  video.addEventListener("loadeddata", () => {
    tr.loading = false;
    // Where this file's pictures begin on the video's own timeline.
    if (tr.seg && tr.seg.offset === null) {
      tr.seg.offset = video.buffered.length ? video.buffered.start(0) : 0;
    }
  });
  video.addEventListener("error", () => { tr.loading = false; tr.failed = true; note.textContent = " · cannot be played"; });
  return tr;
}

function load(tr, seg) {
  tr.seg = seg;
  tr.failed = false;
  if (!seg) {
    tr.video.removeAttribute("src");
    tr.video.load();
    tr.tile.classList.add("gap");
    return;
  }
  tr.tile.classList.remove("gap");
  tr.loading = true;
  tr.video.src = seg.url;
}

function tick() {
  if (playing) t = anchorT + (performance.now() - anchorWall) / 1000;
  if (t >= duration) {
    t = duration;
    if (playing) setPlaying(false);
  }
  const active = [];
  for (const tr of tracks) {
    const seg = segmentAt(tr, t);
    if (seg !== tr.seg) load(tr, seg);
    if (seg && !tr.failed) active.push(tr);
  }
  const ready = (tr) => !tr.loading && tr.seg.offset !== null && tr.video.readyState >= 3 && !tr.video.seeking;
  const stalled = playing && active.some((tr) => !ready(tr));
  if (stalled) {  // hold every camera until the slow one has its pictures
    anchorT = t;
    anchorWall = performance.now();
  }
  for (const tr of tracks) {
    if (!active.includes(tr)) { if (!tr.video.paused) tr.video.pause(); continue; }
    if (tr.loading || tr.seg.offset === null) continue;
    const v = tr.video;
    const expected = tr.seg.offset + (t - tr.seg.start);
    const drift = v.currentTime - expected;
    if (playing && !stalled) {
      if (Math.abs(drift) > 0.3) v.currentTime = expected;
      else v.playbackRate = 1 - Math.max(-0.1, Math.min(0.1, drift * 0.5));
      if (v.paused && v.readyState >= 3) v.play().catch(() => {});
    } else {
      if (!v.paused) v.pause();
      if (!v.seeking && Math.abs(drift) > 0.01) v.currentTime = expected;
    }
  }
  showTime(stalled);
}

function showTime(stalled) {
  $("clock").textContent = fmtDuration(t);
  $("clock").title = origin ? fmtTime(new Date((origin + t) * 1000).toISOString()) : "";
  if (document.activeElement !== $("seek")) $("seek").value = String(t);
  const grid = $("videos");
  grid.dataset.time = t.toFixed(3);
  grid.dataset.state = playing ? (stalled ? "buffering" : "playing") : "paused";
  grid.dataset.settled = String(!playing && tracks.every((tr) => !tr.seg || tr.failed ||
    (!tr.loading && !tr.video.seeking && tr.video.readyState >= 2 &&
     Math.abs(tr.video.currentTime - (tr.seg.offset + t - tr.seg.start)) <= 0.011)));
}

function setPlaying(on) {
  playing = on && duration > 0;
  if (playing && t >= duration) t = 0;
  anchorT = t;
  anchorWall = performance.now();
  $("play").textContent = playing ? "Pause" : "Play";
  $("play").setAttribute("aria-label", playing ? "Pause" : "Play");
}

function seek(to) {
  t = Math.max(0, Math.min(duration, to));
  anchorT = t;
  anchorWall = performance.now();
}

function renderTimeline(annotations) {
  const line = $("timeline");
  const marks = annotations.map((a) => {
    const at = parseUtc(a.wall_utc) - origin;
    const label = a.kind === "score" ? `${a.label || a.code}` : `Remark: ${a.text}`;
    return { at, label, a };
  }).filter((m) => m.at >= 0 && duration > 0);
  line.replaceChildren(...marks.map((m) => el("button", {
    type: "button", class: `mark ${m.a.kind}`, style: { left: `${(100 * Math.min(m.at, duration)) / duration}%` },
    title: `${fmtDuration(m.at)} ${m.label}`, "aria-label": `${fmtDuration(m.at)}: ${m.label}`,
    onclick: () => seek(m.at - JUMP_BEFORE_S),
  })));
  $("events").replaceChildren(...(marks.length ? marks.map((m) => el("li", { class: m.a.kind },
    el("button", { type: "button", class: "link", onclick: () => seek(m.at - JUMP_BEFORE_S) }, fmtDuration(m.at)),
    ` ${m.label}`, m.a.user ? el("span", { class: "muted" }, ` · ${m.a.user}`) : null))
    : [el("li", { class: "muted" }, "No scores or remarks.")]));
}

function renderDownloads(session, media) {
  const items = [];
  for (const tr of media.tracks) {
    for (const s of tr.segments.filter((x) => x.complete)) {
      const room = (session.room_names || {})[tr.room_id] || tr.room_id;
      items.push(el("li", {}, el("a", { href: `${s.url}?download=1`, download: "" },
        `${room} · ${tr.camera} · part ${s.part}`), el("span", { class: "muted" }, ` ${fmtBytes(s.size)}`)));
    }
  }
  items.push(el("li", {}, "Scores and remarks: ",
    el("a", { href: `/api/v1/sessions/${enc(sid)}/annotations.csv` }, "CSV"), " · ",
    el("a", { href: `/api/v1/sessions/${enc(sid)}/annotations.json`, download: `${sid}-annotations.json` }, "JSON")));
  $("downloads").replaceChildren(...items);
}

async function main() {
  let session, media;
  try {
    [session, media] = await Promise.all([api("GET", `/sessions/${enc(sid)}`),
                                          api("GET", `/sessions/${enc(sid)}/media`)]);
  } catch (x) {
    $("session-name").textContent = x.status === 404 ? "No such session" : "Not loaded";
    toast(x.message, "error");
    return;
  }
  document.title = `${session.name_display} · roomrec`;
  $("session-name").textContent = session.name_display;
  const rooms = session.locations.map((l) => (session.room_names || {})[l.room_id] || l.room_id)
    .sort((a, b) => a.localeCompare(b));
  const files = session.gathering === "verified" ? "verified on central storage"
    : session.gathering === "gathering" && session.total_bytes
      ? `gathering: ${Math.floor((100 * (session.gathered_bytes || 0)) / session.total_bytes)} %`
      : "on the rooms";
  $("session-meta").textContent = `${fmtDateTime(session.start_at_utc)} · ${fmtDuration(session.duration_s)} · ` +
    `${rooms.join(", ")} · ${session.started_by_display || session.started_by || "room button"} · files ${files}`;
  origin = media.origin_utc ? parseUtc(media.origin_utc) : parseUtc(session.start_at_utc);
  duration = media.duration_s || 0;
  tracks = media.tracks.map((tr) => makeTrack(tr, (session.room_names || {})[tr.room_id] || tr.room_id));
  const grid = $("videos");
  grid.style.setProperty("--cols", String(Math.min(4, Math.ceil(Math.sqrt(tracks.length || 1)))));
  grid.replaceChildren(...tracks.map((tr) => tr.tile));
  const running = ["starting", "recording", "partial", "stopping"].includes(session.state);
  const note = $("media-note");
  if (running) { note.textContent = "This session is still recording: its finished parts can be played."; note.hidden = false; }
  else if (!tracks.length) { note.textContent = "No camera files were found for this session."; note.hidden = false; }
  $("seek").max = String(duration);
  $("total").textContent = fmtDuration(duration);
  $("play").disabled = $("seek").disabled = duration <= 0;
  renderDownloads(session, media);
  const annotations = await api("GET", `/sessions/${enc(sid)}/annotations.json`).catch(() => []);
  renderTimeline(annotations);
  setInterval(tick, TICK_MS);
  tick();
}

$("play").addEventListener("click", () => setPlaying(!playing));
$("seek").addEventListener("input", (e) => seek(Number(e.target.value)));
document.addEventListener("keydown", (e) => {
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " " && e.target.tagName === "BUTTON") return;  // the button itself acts
  if (e.key === " " || e.key === "k") { e.preventDefault(); setPlaying(!playing); }
  else if (e.key === "ArrowLeft") { e.preventDefault(); seek(t - 5); }
  else if (e.key === "ArrowRight") { e.preventDefault(); seek(t + 5); }
});
main();
