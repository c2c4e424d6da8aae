"""The single HTML page of ``rave serve`` (no external assets: it works offline)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rave: backlit photo enhancement</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem;
         padding: 0 1rem; color: #222; }
  #drop { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center;
          cursor: pointer; }
  #drop.over { background: #eef; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin-top: 1rem; }
  .pair figure { margin: 0; }
  .pair img { width: 100%; height: auto; background: #eee; }
  #status { margin-top: 1rem; min-height: 1.5em; }
  .error { color: #b00; }
</style>
</head>
<body>
<h1>rave</h1>
<p>Enhance backlit photos at full resolution. Photos are processed on this computer and
are not kept.</p>
<div id="drop">Drop photos here, or click to choose (JPEG, PNG, TIFF, WebP)
  <input id="files" type="file" accept="image/*" multiple hidden>
</div>
<div id="status"></div>
<div id="results"></div>
<script>
const drop = document.getElementById("drop");
const input = document.getElementById("files");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
drop.addEventListener("click", () => input.click());
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); enhanceAll(e.dataTransfer.files);
});
input.addEventListener("change", () => enhanceAll(input.files));

async function enhanceAll(files) {
  const list = Array.from(files);
  for (let i = 0; i < list.length; i++) {
    statusLine.className = "";
    statusLine.textContent = `Enhancing ${list[i].name} (${i + 1} of ${list.length})...`;
    await enhanceOne(list[i]);
  }
  statusLine.textContent = list.length ? "Done." : "";
}

async function enhanceOne(file) {
  let response;
  try {
    response = await fetch("/enhance?name=" + encodeURIComponent(file.name),
                           { method: "POST", body: file });
  } catch (err) {
    showError(`${file.name}: the server did not answer (${err})`);
    return;
  }
  if (!response.ok) { showError((await response.text()).trim()); return; }
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const name = match ? match[1] : "enhanced_" + file.name;
  const pair = document.createElement("div");
  pair.className = "pair";
  pair.append(figure(URL.createObjectURL(file), "before: " + file.name));
  const after = figure(URL.createObjectURL(blob), "after: ");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob); link.download = name; link.textContent = name;
  after.querySelector("figcaption").append(link);
  pair.append(after);
  results.prepend(pair);
}

function figure(src, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img"); img.src = src; img.alt = caption;
  const cap = document.createElement("figcaption"); cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

function showError(message) {
  const line = document.createElement("p");
  line.className = "error"; line.textContent = message;
  results.prepend(line);
}
</script>
</body>
</html>
"""
