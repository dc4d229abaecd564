"""The page `vit serve` shows at `/`: drop (or pick) an image, see the top-k labels and, for a ViT, the
attention rollout drawn over the part of the image the model sees (the eval transform's center crop).
One self-contained HTML file: no script or style from elsewhere (the server may run without a network).
`/?image=URL` predicts that image when the page opens (a link to share; a data: URL works too, which is
how the page is tested in headless Chromium).
"""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vit serve: __ARCH__</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 860px; color: #222; }
 h1 { font-size: 1.3em; margin-bottom: .2em; } .sub { color: #666; margin-top: 0; }
 #drop { border: 2px dashed #888; border-radius: 10px; padding: 2em; text-align: center; cursor: pointer; }
 #drop.over { background: #eef4ff; border-color: #36c; }
 #result { display: flex; gap: 2em; margin-top: 1.5em; align-items: flex-start; }
 canvas { border-radius: 6px; max-width: 320px; }
 table { border-collapse: collapse; } td { padding: .2em .6em; }
 td.score { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
 .bar { background: #36c; height: .7em; border-radius: 3px; } .err { color: #b00; }
</style></head><body>
<h1>__ARCH__</h1>
<p class="sub">__WHAT__</p>
<div id="drop">Drop an image here, or click to choose one<input id="pick" type="file" accept="image/*" hidden></div>
<div id="result"><canvas id="view" width="320" height="320" hidden></canvas><div id="labels"></div></div>
<script>
const INFO = __INFO__;
const drop = document.getElementById("drop"), pick = document.getElementById("pick");
drop.onclick = () => pick.click();
pick.onchange = () => pick.files[0] && send(pick.files[0]);
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); e.dataTransfer.files[0] && send(e.dataTransfer.files[0]); };
const asked = new URLSearchParams(location.search).get("image");
if (asked) fetch(asked).then(r => r.blob()).then(b => send(new File([b], asked.startsWith("data:") ? "image" :
  asked.split("/").pop(), { type: b.type }))).catch(e => document.getElementById("labels").textContent = String(e));
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
async function send(file) {
  const labels = document.getElementById("labels");
  labels.textContent = "predicting...";
  const body = new FormData(); body.append("file", file);
  const res = await fetch("/v1/predict?k=5&rollout=" + INFO.rollout, { method: "POST", body });
  const out = await res.json();
  if (!res.ok) { labels.innerHTML = '<p class="err">' + esc(out.error || res.statusText) + "</p>"; return; }
  labels.innerHTML = "<table>" + out.predictions.map(p =>
    "<tr><td>" + esc(p.label) + '</td><td class="score">' + (100 * p.score).toFixed(1) + ' %</td><td style="width:120px">'
    + '<div class="bar" style="width:' + Math.max(1, 100 * p.score) + '%"></div></td></tr>').join("")
    + "</table><p class=\\"sub\\">" + esc(out.backend + " " + out.precision) + "</p>";
  draw(file, out.rollout);
}
function draw(file, rollout) {
  const img = new Image();
  img.onload = () => {
    const view = document.getElementById("view"), ctx = view.getContext("2d");
    const side = Math.min(img.width, img.height) * INFO.crop_pct;  // the eval transform's center crop
    ctx.drawImage(img, (img.width - side) / 2, (img.height - side) / 2, side, side, 0, 0, view.width, view.height);
    if (rollout) {
      const [rows, cols] = rollout.grid, w = view.width / cols, h = view.height / rows;
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
        const v = rollout.values[r * cols + c];
        ctx.fillStyle = "rgba(255," + Math.round(200 * (1 - v)) + ",0," + (0.65 * v).toFixed(3) + ")";
        ctx.fillRect(c * w, r * h, w + 0.5, h + 0.5);
      }
    }
    view.hidden = false;
    document.body.dataset.done = "1";
  };
  img.src = URL.createObjectURL(file);
}
</script></body></html>
"""


def page(info: dict) -> str:
    what = (
        f"{info['backend']} {info['device']} {info['precision']}, {info['classes']} classes"
        + (", multi-label" if info.get("multi_label") else "")
        + (": the overlay is the attention rollout" if info.get("rollout") else "")
    )
    data = {"rollout": bool(info.get("rollout")), "crop_pct": float(info.get("crop_pct") or 0.875)}
    return (
        _PAGE.replace("__ARCH__", html.escape(info["architecture"]))
        .replace("__WHAT__", html.escape(what))
        .replace("__INFO__", json.dumps(data))
    )
