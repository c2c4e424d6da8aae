"""The single HTML page of ``rave serve`` (no external assets: it works offline).

The server runs the network once per photo and sends a preview with its light map
(:func:`rave.server.store.encode_view`); the page computes ``I / L**S`` itself, so a
strength slider moves without any request. ``__RAVE_STRENGTH__`` is replaced by the
server's ``--strength``, ``__RAVE_MAX_UPLOAD__`` by its upload limit in bytes,
``__RAVE_SUFFIXES__`` by the suffixes rave reads (for the file chooser: ``image/*`` leaves
out HEIC or RAW on some systems),
``__RAVE_STRENGTH_MAX__`` by the sliders' end (2, or that strength
if larger: a range input would silently clamp it).
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rave: backlit photo enhancement</title>
<link rel="icon" href="data:,">  <!-- no /favicon.ico request, no 404 -->
<style>
  :root { --accent: #1d5fbf; --bad: #b3261e; --muted: #555; }
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 80rem;
         padding: 0.75rem; color: #1b1b1b; }
  h1 { font-size: 1.3rem; margin: 0.2rem 0 0.6rem; }
  .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden;
             clip: rect(0 0 0 0); white-space: nowrap; }
  #drop { border: 2px dashed #888; border-radius: 8px; padding: 1rem; text-align: center;
          cursor: pointer; }
  #drop:focus-visible, button:focus-visible, input:focus-visible, a:focus-visible,
  .thumb:focus-visible, canvas:focus-visible { outline: 3px solid var(--accent);
          outline-offset: 2px; }
  #drop.over { background: #e8efff; }
  #file:focus-visible + label { outline: 3px solid var(--accent); outline-offset: 2px; }
  #status { margin: 0.6rem 0; min-height: 1.4em; font-weight: 600; }
  .layout { display: grid; grid-template-columns: 15rem 1fr; gap: 0.8rem; }
  @media (max-width: 700px) { .layout { grid-template-columns: 1fr; } }
  #list { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column;
          gap: 0.4rem; max-height: 75vh; overflow-y: auto; }
  @media (max-width: 700px) { #list { flex-direction: row; overflow-x: auto;
          max-height: none; } #list li { min-width: 12rem; max-width: 12rem; }
    /* the full error of a failed photo is shown below when it is selected */
    #list .thumb .state { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
                    overflow: hidden; } }
  .thumb { display: flex; gap: 0.5rem; width: 100%; align-items: center; text-align: left;
           border: 1px solid #ccc; border-radius: 6px; background: #fff; padding: 0.3rem;
           font: inherit; cursor: pointer; }
  .thumb[aria-current="true"] { border-color: var(--accent); box-shadow: 0 0 0 1px var(--accent); }
  .thumb canvas { width: 56px; height: 42px; object-fit: contain; background: #eee;
                  flex: none; }
  .thumb .name { display: block; font-size: 0.85rem; overflow-wrap: anywhere; }
  .thumb .state { display: block; font-size: 0.8rem; color: var(--muted); }
  .thumb.failed .state { color: var(--bad); }
  .thumb progress { width: 100%; height: 0.5rem; }
  #list li { position: relative; }
  #list .thumb { padding-right: 2rem; }
  .remove { position: absolute; top: 0.2rem; right: 0.2rem; padding: 0 0.4rem;
            line-height: 1.4; font-size: 0.9rem; }
  .controls { display: flex; flex-wrap: wrap; gap: 0.5rem 1rem; align-items: center;
              margin: 0.4rem 0; }
  .controls label { display: flex; gap: 0.4rem; align-items: center; }
  input[type=range] { width: 11rem; max-width: 45vw; }
  button, .button { font: inherit; padding: 0.35rem 0.7rem; border-radius: 6px;
           border: 1px solid #888; background: #f4f4f4; color: inherit; cursor: pointer;
           text-decoration: none; display: inline-block; }
  .button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
  [aria-disabled="true"] { opacity: 0.5; pointer-events: none; }
  #stage { position: relative; background: #222; border-radius: 6px; min-height: 8rem;
           display: flex; justify-content: center; align-items: center; overflow: hidden;
           touch-action: none; }
  #view { max-width: 100%; max-height: 72vh; display: block; }
  #view.zoomed { max-width: none; max-height: none; }
  #splitline { position: absolute; top: 0; bottom: 0; width: 2px; background: #fff;
               pointer-events: none; }
  .tag { position: absolute; top: 0.3rem; font-size: 0.75rem; color: #fff;
         background: rgba(0,0,0,0.55); padding: 0.1rem 0.35rem; border-radius: 3px; }
  #notes { color: var(--muted); font-size: 0.9rem; margin: 0.3rem 0; }
  #error { color: var(--bad); font-weight: 600; }
  #empty { color: var(--muted); padding: 2rem 0; text-align: center; }
</style>
</head>
<body>
<h1>rave: brighten backlit photos</h1>
<div id="drop">
  <strong>Drop photos here</strong> or
  <input id="file" class="sr-only" type="file" multiple accept="image/*,__RAVE_SUFFIXES__"
         aria-describedby="drophelp">
  <label for="file" id="choose" class="button">choose photos</label>
  <div id="drophelp" style="font-size:0.85rem;color:#555">JPEG, PNG, TIFF, HEIC, WebP, BMP,
  camera RAW; enhanced one at a time on this computer, at full resolution, EXIF and colour
  profile kept.
  </div>
</div>
<div id="status" role="status" aria-live="polite"></div>
<div class="controls">
  <label>All photos: strength
    <input id="allstrength" type="range" min="0" max="__RAVE_STRENGTH_MAX__" step="0.01"
      value="__RAVE_STRENGTH__">
    <output id="allvalue"></output></label>
  <a id="zipall" class="button" href="#" aria-disabled="true" download>Download all (zip)</a>
</div>
<div class="layout">
  <ul id="list" aria-label="Photos, in upload order"></ul>
  <section aria-label="Selected photo">
    <div id="empty">No photo yet.</div>
    <div id="viewer" hidden>
      <div class="controls">
        <label>Strength <input id="strength" type="range" min="0" max="__RAVE_STRENGTH_MAX__"
          step="0.01">
          <output id="value"></output></label>
        <label>Split <input id="split" type="range" min="0" max="100" step="1" value="100"
          aria-label="Before/after split: original shown right of it"></label>
        <button id="hold" type="button" aria-pressed="false"
          title="Hold (or press B) to see the original">Hold: original</button>
        <button id="zoom" type="button" aria-pressed="false">Zoom 100%</button>
        <a id="download" class="button primary" href="#" download>Download</a>
      </div>
      <div id="stage">
        <canvas id="view" tabindex="0" role="img"
          aria-label="Enhanced photo; click or Zoom 100% for full size, arrow keys move">
        </canvas>
        <div id="splitline" hidden></div>
        <span class="tag" style="left:0.3rem">enhanced</span>
        <span class="tag" id="origtag" style="right:0.3rem" hidden>original</span>
      </div>
      <div id="error" role="alert"></div>
      <button id="retry" type="button" hidden>Try again</button>
      <div id="notes"></div>
    </div>
  </section>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const DEFAULT_STRENGTH = parseFloat("__RAVE_STRENGTH__") || 1;
const MAX_UPLOAD = Number("__RAVE_MAX_UPLOAD__");  // bytes: the server's --max-upload-mb
const photos = [];  // in upload order
const downloading = new Map();  // a download's job token -> what it is (fetchInFrame)
let selected = null, queue = Promise.resolve(), holding = false;
let zoom = null;  // {view, cx, cy} when showing a region at 100%

function decodeView(buffer) {
  const head = new DataView(buffer, 8, 24);
  const w = head.getUint32(0, true), h = head.getUint32(4, true);
  const box = [8, 12, 16, 20].map((o) => head.getUint32(o, true));
  const rgb = new Uint8Array(buffer, 32, w * h * 3);
  const codes = new Uint16Array(buffer.slice(32 + w * h * 3, 32 + w * h * 5));
  return {w, h, box, rgb, codes};
}

// factor(code) = L ** -S with log2(L) = code / 2048 - 16: one table per strength, so a
// frame costs one multiply per channel.
let tableStrength = NaN;
const table = new Float32Array(65536);
function factors(strength) {
  if (strength !== tableStrength) {
    for (let c = 0; c < 65536; c++) table[c] = Math.pow(2, -strength * (c / 2048 - 16));
    tableStrength = strength;
  }
  return table;
}

function render(view, strength, canvas, split) {
  const {w, h, rgb, codes} = view;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h), out = image.data, f = factors(strength);
  const cut = split === undefined ? w : Math.round(w * split);
  for (let y = 0, i = 0, j = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++, j += 3) {
      const o = i * 4;
      if (x < cut) {
        const k = f[codes[i]];
        out[o] = Math.min(255, rgb[j] * k + 0.5); out[o + 1] = Math.min(255, rgb[j + 1] * k + 0.5);
        out[o + 2] = Math.min(255, rgb[j + 2] * k + 0.5);
      } else { out[o] = rgb[j]; out[o + 1] = rgb[j + 1]; out[o + 2] = rgb[j + 2]; }
      out[o + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

function thumbView(view) {  // nearest-neighbour copy at 112 px for the list
  const s = Math.min(1, 112 / Math.max(view.w, view.h));
  const w = Math.max(1, Math.round(view.w * s)), h = Math.max(1, Math.round(view.h * s));
  const rgb = new Uint8Array(w * h * 3), codes = new Uint16Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const sx = Math.min(view.w - 1, Math.floor(x / s));
    const sy = Math.min(view.h - 1, Math.floor(y / s));
    const i = sy * view.w + sx, k = y * w + x;
    codes[k] = view.codes[i];
    rgb.set(view.rgb.subarray(i * 3, i * 3 + 3), k * 3);
  }
  return {w, h, rgb, codes};
}

function updateStatus() {
  const done = photos.filter((p) => p.state === "done").length;
  const failed = photos.filter((p) => p.state === "failed").length;
  const busy = photos.length - done - failed;
  const parts = [`${done} done`];
  if (failed) parts.push(`${failed} failed`);
  const lines = [photos.length === 0 ? "" : busy
    ? `Enhancing: ${photos.length - busy} of ${photos.length} finished (${parts.join(", ")})`
    : `${photos.length} photo${photos.length > 1 ? "s" : ""}: ${parts.join(", ")}`];
  if (downloading.size) lines.push(`downloading ${[...downloading.values()].join(", ")}…`);
  $("status").textContent = lines.filter(Boolean).join("; ");
  const ready = photos.filter((p) => p.state === "done");
  const zip = $("zipall");
  zip.setAttribute("aria-disabled", ready.length ? "false" : "true");
  zip.href = ready.length ? zipUrl(ready) : "#";
}

function zipUrl(ready) {
  return "/zip?items=" + ready.map((p) => `${p.id}:${p.strength}`).join(",");
}

function setState(photo, state, text) {
  photo.state = state;
  photo.li.querySelector(".thumb").classList.toggle("failed", state === "failed");
  photo.li.querySelector(".state").textContent = text;
  photo.li.querySelector(".thumb").title = text;
  const bar = photo.li.querySelector("progress");
  bar.hidden = state === "done" || state === "failed";
  if (state === "enhancing") showProgress(photo, text, null);
  updateStatus();
  if (photo === selected) showSelected();
}

// The list's bar and state line for an upload or a photo being enhanced: `fraction` from 0
// to 1, or null while unknown (an indeterminate bar).
function showProgress(photo, text, fraction) {
  const bar = photo.li.querySelector("progress");
  if (fraction === null) {
    bar.removeAttribute("value"); bar.removeAttribute("aria-valuenow");
  } else {
    bar.value = 100 * fraction;
    bar.setAttribute("aria-valuenow", String(Math.floor(100 * fraction)));
  }
  photo.li.querySelector(".state").textContent = text;
}

// Why a fetch failed, in words: the server's own line, or (a TypeError: no answer at all,
// which the browser words as "Failed to fetch") that it did not answer.
function reasonOf(err) {
  return err instanceof TypeError
    ? "the server did not answer: is rave serve still running?" : err.message;
}

// Names one upload for GET /progress/TOKEN (the server's count of tiles computed).
function jobToken() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
                    (b) => b.toString(16).padStart(2, "0")).join("");
}

function addPhoto(file) {
  const photo = {file, name: file.name, state: "queued", strength: currentAll()};
  const li = document.createElement("li");
  li.innerHTML = '<button type="button" class="thumb" aria-current="false"><canvas width="56" ' +
    'height="42" aria-hidden="true"></canvas><span><span class="name"></span>' +
    '<span class="state">queued</span><progress role="progressbar" max="100" value="0" ' +
    'aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"></progress></span></button>' +
    '<button type="button" class="remove" title="Remove (stops it if it is being enhanced)">' +
    '×</button>';
  li.querySelector(".name").textContent = file.name;
  li.querySelector("progress").setAttribute("aria-label", `${file.name}: progress`);
  li.querySelector(".thumb").addEventListener("click", () => select(photo));
  const remove = li.querySelector(".remove");
  remove.setAttribute("aria-label", `Remove ${file.name}`);
  remove.addEventListener("click", () => removePhoto(photo));
  photo.li = li;
  $("list").appendChild(li);
  photos.push(photo);
  if (!selected) select(photo);
  updateStatus();
  queue = queue.then(() => upload(photo));  // one at a time, in upload order
}

// Remove: a queued photo is skipped; one being uploaded or enhanced is aborted, which the
// server notices and stops the engine within a tile, so the next photo starts at once.
function removePhoto(photo) {
  photo.removed = true;
  if (photo.xhr) photo.xhr.abort();
  // The server's copy (upload and light map) goes too, not at its exit.
  if (photo.id) fetch(`/result/${photo.id}`, {method: "DELETE"}).catch(() => {});
  const index = photos.indexOf(photo);
  const focused = photo.li.contains(document.activeElement);  // keyboard users keep a place
  photos.splice(index, 1);
  photo.li.remove();
  const next = photos[Math.min(index, photos.length - 1)];
  if (selected === photo) {
    selected = null;
    if (next) select(next); else showSelected();
  }
  if (focused) (next ? next.li.querySelector(".thumb") : input).focus();
  updateStatus();
}

function upload(photo) {
  if (photo.removed) return Promise.resolve();
  if (photo.file.size > MAX_UPLOAD) {
    // The server's 413 in its words, without sending the bytes (over a slow network the
    // answer could be lost in the reset that refusing a body ends with).
    const mb = Number((MAX_UPLOAD / 2 ** 20).toPrecision(3));
    photo.error = `${photo.name}: ${photo.file.size.toLocaleString("en-US")} bytes is over ` +
      `the ${MAX_UPLOAD.toLocaleString("en-US")}-byte (${mb} MB) upload limit`;
    setState(photo, "failed", photo.error);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    photo.xhr = xhr;
    xhr.open("POST", "/enhance?name=" + encodeURIComponent(photo.name));
    const job = jobToken();
    photo.job = job;
    xhr.setRequestHeader("X-Rave-Job", job);
    xhr.responseType = "text";
    setState(photo, "uploading", "uploading");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) showProgress(photo, `uploading ${Math.round((100 * e.loaded) /
        e.total)}%`, e.loaded / e.total);
    };
    // Then the engine's tiles done (GET /progress/JOB, twice a second until the answer
    // comes) and the time taken. Before the engine starts (the photo before it is still
    // being enhanced) the total is 0: the bar stays indeterminate.
    xhr.upload.onload = () => {
      const started = Date.now();
      let fraction = null, asking = false;
      setState(photo, "enhancing", "enhancing…");
      const current = () => photo.state === "enhancing" && !photo.removed && photo.job === job;
      const show = () => {
        const seconds = Math.round((Date.now() - started) / 1000);
        const percent = fraction === null ? "" : ` ${Math.floor(100 * fraction)} %,`;
        showProgress(photo, `enhancing…${percent} ${seconds} s`, fraction);
      };
      const tick = setInterval(async () => {
        if (!current()) { clearInterval(tick); return; }
        show();
        if (asking) return;
        asking = true;
        try {
          const response = await fetch(`/progress/${job}`);
          if (response.ok) {
            const {done, total} = await response.json();
            if (total > 0) fraction = Math.min(1, done / total);
            if (current()) show();
          }
        } catch (err) {}  // the answer to the upload says what happened
        asking = false;
      }, 500);
    };
    xhr.onload = async () => {
      if (xhr.status !== 200) {
        // One line naming the photo: the server's refusals that come before it knows the
        // photo (too many connections, stopping) do not name it.
        const text = (xhr.responseText || `error ${xhr.status}`).trim();
        photo.error = text.startsWith(`${photo.name}: `) ? text : `${photo.name}: ${text}`;
        setState(photo, "failed", photo.error);
        return resolve();
      }
      const info = JSON.parse(xhr.responseText);
      Object.assign(photo, {id: info.id, notes: info.notes, width: info.width, height: info.height,
                            format: info.format});
      try {
        const response = await fetch(`/result/${info.id}/view`);
        if (!response.ok) throw new Error((await response.text()).trim());
        photo.view = decodeView(await response.arrayBuffer());
        photo.thumb = thumbView(photo.view);
        setState(photo, "done", `done, ${info.width}×${info.height} ${info.format.toUpperCase()}`);
        drawThumb(photo);
      } catch (err) {
        photo.error = `${photo.name}: ${reasonOf(err)}`;
        setState(photo, "failed", photo.error);
      }
      resolve();
    };
    xhr.onabort = () => resolve();  // removed: the queue goes on
    xhr.onloadend = () => { photo.xhr = null; };
    xhr.onerror = () => { photo.error = `${photo.name}: the server did not answer`;
      setState(photo, "failed", photo.error); resolve(); };
    xhr.send(photo.file);
  });
}

function drawThumb(photo) {
  if (photo.thumb) render(photo.thumb, photo.strength, photo.li.querySelector("canvas"));
}

function select(photo) {
  selected = photo; cancelZoom();
  for (const p of photos) {
    p.li.querySelector(".thumb").setAttribute("aria-current", String(p === photo));
  }
  showSelected();
}

function showSelected() {
  const photo = selected;
  $("empty").hidden = !!photo; $("viewer").hidden = !photo;
  if (!photo) return;
  $("error").textContent = photo.state === "failed" ? photo.error : "";
  $("retry").hidden = photo.state !== "failed";
  const notes = photo.notes || [];
  $("notes").textContent = notes.length ? "Notes: " + notes.join("; ") : "";
  $("strength").value = photo.strength; $("value").textContent = Number(photo.strength).toFixed(2);
  const dl = $("download");
  dl.setAttribute("aria-disabled", photo.state === "done" ? "false" : "true");
  dl.href = downloadUrl(photo);
  $("stage").hidden = photo.state !== "done";
  draw();
}

let pending = false;
function draw() {  // at most one frame per animation frame
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; drawNow(); });
}
function drawNow() {
  const photo = selected;
  if (!photo || !photo.view) return;
  const view = zoom ? zoom.view : photo.view, canvas = $("view");
  const split = holding ? 0 : $("split").value / 100;
  const started = performance.now();
  render(view, photo.strength, canvas, split);
  window.raveLastFrameMs = performance.now() - started;
  canvas.classList.toggle("zoomed", !!zoom);
  const line = $("splitline");
  line.hidden = split >= 1 || split <= 0;
  $("origtag").hidden = split >= 1;
  if (!line.hidden) line.style.left = canvas.offsetLeft + canvas.clientWidth * split + "px";
}

function downloadUrl(photo) {
  return photo.state === "done" ? `/result/${photo.id}/download?strength=${photo.strength}` : "#";
}

function currentAll() { return parseFloat($("allstrength").value); }

function setStrength(photo, value) {
  photo.strength = value;
  drawThumb(photo);
  if (photo === selected) {
    $("value").textContent = value.toFixed(2);
    $("download").href = downloadUrl(photo);
    draw();
  }
}

$("strength").addEventListener("input", (e) => { if (selected) { setStrength(selected,
  parseFloat(e.target.value)); updateStatus(); } });
$("allstrength").addEventListener("input", (e) => {
  const value = parseFloat(e.target.value);
  $("allvalue").textContent = value.toFixed(2);
  for (const p of photos) setStrength(p, value);
  if (selected) $("strength").value = value;
  updateStatus();
});
$("allvalue").textContent = currentAll().toFixed(2);
$("split").addEventListener("input", draw);
window.addEventListener("resize", draw);  // the split line follows the canvas' new size

const hold = $("hold");
const holdOn = () => { holding = true; hold.setAttribute("aria-pressed", "true"); draw(); };
const holdOff = () => { holding = false; hold.setAttribute("aria-pressed", "false"); draw(); };
hold.addEventListener("pointerdown", holdOn);
for (const ev of ["pointerup", "pointerleave", "blur"]) hold.addEventListener(ev, holdOff);
hold.addEventListener("keydown", (e) => {
  if (e.key === " " || e.key === "Enter") { e.preventDefault(); holdOn(); }
});
hold.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") holdOff(); });
document.addEventListener("keydown", (e) => { if ((e.key === "b" || e.key === "B") && !e.repeat
  && e.target.tagName !== "INPUT") holdOn(); });
document.addEventListener("keyup", (e) => { if (e.key === "b" || e.key === "B") holdOff(); });

// A region at 100% comes from the server, which may first finish another photo: by then the
// user may have selected another photo, left the zoom or asked for another region. Only the
// answer to the latest request still wanted is shown (an earlier one showed one photo's
// pixels under another's name).
let zoomTicket = 0;
function cancelZoom() {
  zoomTicket++; zoom = null; $("zoom").setAttribute("aria-pressed", "false");
}
async function zoomAt(cx, cy) {
  const photo = selected, ticket = ++zoomTicket;
  const wanted = () => ticket === zoomTicket && selected === photo;
  const w = Math.min(photo.width, 1024), h = Math.min(photo.height, 768);
  const left = Math.max(0, Math.min(photo.width - w, Math.round(cx - w / 2)));
  const top = Math.max(0, Math.min(photo.height - h, Math.round(cy - h / 2)));
  const box = `left=${left}&top=${top}&right=${left + w}&bottom=${top + h}`;
  const url = `/result/${photo.id}/view?${box}&max=2048`;
  let view;
  try {
    const response = await fetch(url);
    if (!wanted()) return;
    if (response.status === 410) { enhanceAgain(photo); return; }
    if (!response.ok) throw new Error((await response.text()).trim());
    view = decodeView(await response.arrayBuffer());
  } catch (err) {
    if (!wanted()) return;
    const reason = reasonOf(err);  // the server's own refusals name the photo already
    $("error").textContent =
      reason.startsWith(`${photo.name}: `) ? reason : `${photo.name}: ${reason}`;
    return;
  }
  if (!wanted()) return;
  zoom = {view, cx: left + w / 2, cy: top + h / 2};
  $("zoom").setAttribute("aria-pressed", "true");
  draw();
}
$("zoom").addEventListener("click", () => {
  if (!selected || selected.state !== "done") return;
  if (zoom) { cancelZoom(); draw(); }
  else zoomAt(selected.width / 2, selected.height / 2);
});
$("view").addEventListener("click", (e) => {
  const photo = selected, canvas = $("view");
  if (!photo || !photo.view) return;
  const rect = canvas.getBoundingClientRect();
  const fx = (e.clientX - rect.left) / rect.width, fy = (e.clientY - rect.top) / rect.height;
  if (zoom) { const [l, t, r, b] = zoom.view.box; zoomAt(l + fx * (r - l), t + fy * (b - t)); }
  else zoomAt(fx * photo.width, fy * photo.height);
});
$("view").addEventListener("keydown", (e) => {
  const steps = {ArrowLeft: [-256, 0], ArrowRight: [256, 0], ArrowUp: [0, -256],
                 ArrowDown: [0, 256]};
  const step = steps[e.key];
  if (zoom && step) { e.preventDefault(); zoomAt(zoom.cx + step[0], zoom.cy + step[1]); }
  if (e.key === "Escape" && zoom) { cancelZoom(); draw(); }
});

// A link marked disabled (no photo ready, or a failed one) does nothing: its href "#" with
// the download attribute would save the page itself (Enter reaches links that the
// pointer-events rule keeps from the mouse).
for (const link of [$("download"), $("zipall")]) {
  link.addEventListener("click", (e) => {
    e.preventDefault();
    if (link.getAttribute("aria-disabled") === "true") return;
    if (link.id === "download") {
      const photo = selected;
      save([photo], () => downloadUrl(photo));
    } else {
      const ready = photos.filter((p) => p.state === "done");
      save(ready, () => zipUrl(ready));
    }
  });
}

// A download first checks that the server still keeps each result it needs (a restart, or
// its disk budget, forgets them; the download would then fail in the browser's download
// list without a word). Those it lost are enhanced again from the files the page still
// holds, and the download goes ahead once they are back.
async function save(wanted, url) {
  const gone = [];
  try {
    for (const p of wanted) {
      const response = await fetch(`/result/${p.id}/view`, {method: "HEAD"});
      if (response.status === 410) gone.push(p);
    }
  } catch (err) {
    $("status").textContent = "The server did not answer: is rave serve still running?";
    return;
  }
  if (gone.length) {
    for (const p of gone) enhanceAgain(p);
    await queue;
    const failed = wanted.filter((p) => p.state !== "done");
    if (failed.length) {
      $("status").textContent = `Not downloaded: ${failed.map((p) => p.error).join("; ")}`;
      return;
    }
  }
  // The server computes one photo at a time: a download asked while another photo is being
  // enhanced waits for it (minutes for a large one), and a browser shows nothing until the
  // file comes. Said here; the status line's next update (that photo done) replaces it.
  const busy = photos.find((p) => p.state === "enhancing" && !wanted.includes(p));
  fetchInFrame(wanted, url());
  if (busy) {
    $("status").textContent =
      `The download starts once ${busy.name} is enhanced (one photo at a time).`;
  }
}

// The download itself is navigated in a hidden frame of its own, not fetched: a 200 (always
// an attachment) turns into an ordinary browser download, streamed to disk however large the
// photo or the zip, and nothing is rendered twice (a check request first could not foresee a
// busy server or the time limit, which come during the render). Any other answer stays in the
// frame as a page of its own: the server's one line of plain text, shown here with the
// photo's name. A frame whose answer becomes a download gets no load event: the URL carries
// a token (job=TOKEN) and the server's 200 sets the cookie rave-job-TOKEN, which the page
// looks for. Until then the status line says "downloading …"; once the file is the
// browser's (its own download list shows it) that goes, the cookie is deleted and the frame
// removed (a download under way survives its frame; removing it earlier would cancel it).
function fetchInFrame(wanted, url) {
  const who = wanted.length === 1 ? wanted[0].name
    : `the zip of ${wanted.map((p) => p.name).join(", ")}`;
  const job = jobToken(), cookie = `rave-job-${job}=`;
  const frame = document.createElement("iframe");
  frame.hidden = true; frame.tabIndex = -1;
  frame.setAttribute("aria-hidden", "true"); frame.title = "download";
  let watch = null;
  const finish = () => { clearInterval(watch); downloading.delete(job); frame.remove(); };
  if (navigator.cookieEnabled) {  // else no signal: the frame stays, as it must
    downloading.set(job, who);
    url += `&job=${job}`;
    watch = setInterval(() => {
      if (!document.cookie.split("; ").some((c) => c.startsWith(cookie))) return;
      document.cookie = `${cookie}; Max-Age=0; Path=/; SameSite=Strict`;
      finish();
      updateStatus();
    }, 200);
  }
  frame.addEventListener("load", () => {
    let doc = null;
    try { doc = frame.contentDocument; } catch (err) {}  // the browser's own error page
    if (doc && doc.location.href === "about:blank") return;
    const text = doc ? (doc.body ? doc.body.textContent : "").trim().split("\n")[0] : "";
    finish();
    const reason = text || "the server did not answer: is rave serve still running?";
    const named = wanted.find((p) => reason.startsWith(`${p.name}: `));
    $("status").textContent = `Not downloaded: ${named ? reason : `${who}: ${reason}`}`;
  });
  frame.src = url;
  document.body.appendChild(frame);
  updateStatus();
}

// A failed photo (server busy, over its time limit, restarted mid-upload) is sent again from
// the file the page holds: no need to find it again.
$("retry").addEventListener("click", () => {
  const photo = selected;
  if (!photo || photo.state !== "failed") return;
  setState(photo, "queued", "queued again");
  queue = queue.then(() => upload(photo));
});

function enhanceAgain(photo) {
  setState(photo, "queued",
           "enhancing again: the server no longer kept it (restarted, or out of space)");
  queue = queue.then(() => upload(photo));
}

// Leaving (reload, closed tab) drops the queue and the photo being enhanced: ask first.
window.addEventListener("beforeunload", (e) => {
  if (photos.some((p) => !["done", "failed"].includes(p.state))) {
    e.preventDefault();
    e.returnValue = "";
  }
});

const drop = $("drop"), input = $("file");
// The whole zone opens the chooser for mice; the label and the input do it themselves.
drop.addEventListener("click", (e) => { if (e.target === drop) input.click(); });
input.addEventListener("change", () => {
  for (const f of input.files) addPhoto(f);
  input.value = "";
});
for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  for (const f of e.dataTransfer.files) addPhoto(f);
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { if (!drop.contains(e.target)) { e.preventDefault();
  for (const f of e.dataTransfer.files) addPhoto(f); } });
</script>
</body>
</html>
"""
