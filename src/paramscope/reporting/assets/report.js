
"use strict";
const D = JSON.parse(document.getElementById("paramscope-data").textContent);
const DEPTH = D.depth;
const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n).toLocaleString("en-US");
// A count in words of magnitude, as paramscope._units.format_short_count writes it (never a
// unit letter that reads as bytes next to "MiB").
function human(n) {
  const v = Number(n);
  const steps = [[1e12, "trillion", 2], [1e9, "billion", 2], [1e6, "million", 1], [1e3, "thousand", 1]];
  for (const [div, word, digits] of steps) {
    if (Math.abs(v) >= div) return (v / div).toFixed(digits) + " " + word;
  }
  return String(v);
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(2) : String(v)) + " " + u[i];
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
}
const TOTAL = Math.max(D.counts.params, 1);
// 7.09M, 38.6K, 512: a treemap label's count (the tooltip has the exact number)
function compact(n) {
  const v = Number(n);
  for (const [div, s] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
    if (Math.abs(v) >= div) return trimZeros((v / div).toPrecision(3)) + s;
  }
  return String(v);
}
function trimZeros(t) { return t.includes(".") ? t.replace(/0+$/, "").replace(/\.$/, "") : t; }
// a count's share of the model's parameters: 5.8%, 0.04%
function share(n) {
  const p = (100 * Number(n)) / TOTAL;
  return (p >= 10 ? p.toFixed(0) : p >= 1 ? p.toFixed(1) : p.toPrecision(1)) + "%";
}

// ---- header, counts, memory, ties -------------------------------------------------------
$("title").textContent = D.title;
$("subtitle").textContent =
  (D.kind === D.format ? [D.kind, D.source] : [D.kind, D.format, D.source]).join(" · ");
const C = D.counts;
$("cards").innerHTML = [["params", "total parameters"], ["trainable", "trainable"],
  ["frozen", "frozen"], ["buffers", "buffer elements"], ["ties", "tie groups"]]
  .map(([k, label]) => '<div class="card" data-count="' + k + '"><span class="muted">' +
    label + "</span><b>" + fmt(C[k]) + '</b><span class="muted">' +
    (k === "ties" ? "" : human(C[k])) + "</span></div>").join("") +
  '<div class="card"><span class="muted">stored bytes</span><b>' + bytes(C.bytes) +
  "</b></div>" +
  (C.moe ? '<div class="card" data-count="active"><span class="muted">active per token</span><b>' +
    (C.active_params === null ? "unknown" : fmt(C.active_params)) + '</b><span class="muted">' +
    (C.active_params === null ? "no top-k" : "top-" + C.moe.top_k + " of " + C.moe.experts +
      " experts") + "</span></div>" : "") +
  (D.flops ? '<div class="card" data-count="flops"><span class="muted">FLOPs, forward</span><b>' +
    fmt(D.flops.flops) + '</b><span class="muted">' + esc(D.flops.inputs.join("; ")) +
    "</span></div>" : "");
$("notes").innerHTML = D.notes.map((n) => "<div>note: " + esc(n) + "</div>").join("");
const MCOLS = [["weights", "weights"], ["buffers", "buffers"], ["gradients", "gradients"],
  ["optimizer_states", "optimizer states"], ["master_weights", "fp32 master"]]
  .concat(D.memory.some((m) => m.activations) ? [["activations", "activations"]] : [])
  .concat(D.memory.some((m) => m.kv_cache) ? [["kv_cache", "KV cache"]] : [])
  .concat([["total", "total"]]);
$("memory").innerHTML = "<thead><tr><th>setting</th>" +
  MCOLS.map((c) => '<th class="num">' + c[1] + "</th>").join("") + "</tr></thead><tbody>" +
  D.memory.map((m) => "<tr><td>" + esc(m.label) + "</td>" +
    MCOLS.map((c) => '<td class="num" title="' + fmt(m[c[0]]) + ' bytes">' +
      bytes(m[c[0]]) + "</td>").join("") + "</tr>").join("") + "</tbody>";
(function ties() {
  let h = "";
  if (D.ties.length) {
    h += "<p>" + D.ties.length + " tie group(s): one storage, several names " +
      "(counted once, under the first).</p><ul>" + D.ties.map((g) => "<li><code>" +
      g.map(esc).join("</code> = <code>") + "</code></li>").join("") + "</ul>";
  }
  const sh = Object.entries(D.shared || {});
  if (sh.length) {
    h += "<p>" + sh.length + " shared module path(s), counted at their first path:</p><ul>" +
      sh.map(([a, b]) => "<li><code>" + esc(a) + "</code> is <code>" + esc(b) +
        "</code></li>").join("") + "</ul>";
  }
  $("ties").innerHTML = h || '<p class="muted">No ties and no shared modules.</p>';
})();

// ---- change of A against B, aggregated per module (treemap colour mode "change") ----------
const CHANGE = D.change || null;
// a number as the page shows it: 6 significant digits, exponent for very small/large
function num(v) {
  if (v === null || v === undefined) return "n/a";
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e6 || a < 1e-4 ? v.toExponential(4) : String(Number(v.toPrecision(6)));
}
// Σ‖a−b‖² and Σ‖b‖² per module path (every prefix of a tensor's module) and per owner (own
// parameters): the module's relative change is sqrt(Σdiff²) / sqrt(Σref²).
const chAgg = new Map(), chOwn = new Map();
function chAdd(m, key, d2, r2) {
  const a = m.get(key) || [0, 0]; a[0] += d2; a[1] += r2; m.set(key, a);
}
if (CHANGE) {
  for (const t of CHANGE.tensors) {
    if (t.diff_l2 === null || t.ref_l2 === null || t.diff_l2 === undefined) continue;
    const d2 = t.diff_l2 * t.diff_l2, r2 = t.ref_l2 * t.ref_l2;
    const parts = t.name.split(".");
    for (let i = 0; i < parts.length; i++) chAdd(chAgg, parts.slice(0, i).join("."), d2, r2);
    chAdd(chOwn, parts.slice(0, -1).join("."), d2, r2);
  }
}
function changeOf(n, own) {
  const a = (own ? chOwn : chAgg).get(n.p);
  if (!a) return NaN; // nothing under it was compared
  return a[1] > 0 ? Math.sqrt(a[0]) / Math.sqrt(a[1]) : a[0] > 0 ? Infinity : 0;
}
const NO_CHANGE = "#dde1e7", NOT_COMPARED = "#b9bfc8";
// log colour scale from the smallest non-zero module change (at most four decades below the
// largest, at least one) to the largest
let chMax = 0, chMin = Infinity;
for (const a of chAgg.values()) {
  const v = a[1] > 0 ? Math.sqrt(a[0] / a[1]) : 0;
  if (v > 0 && Number.isFinite(v)) { chMax = Math.max(chMax, v); chMin = Math.min(chMin, v); }
}
const chHi = chMax > 0 ? Math.log10(chMax) : 0;
const chLo = chMax > 0 ? Math.max(chHi - 4, Math.min(Math.log10(chMin), chHi - 1)) : -4;
function ramp(t) { // light orange to dark red
  t = Math.min(Math.max(t, 0), 1);
  return "hsl(" + (32 - 30 * t).toFixed(1) + "," + (90 - 20 * t).toFixed(1) + "%," +
    (78 - 46 * t).toFixed(1) + "%)";
}
function changeColour(v) {
  if (Number.isNaN(v)) return NOT_COMPARED;
  if (v === 0) return NO_CHANGE;
  if (!Number.isFinite(v)) return ramp(1);
  return ramp((Math.log10(v) - chLo) / (chHi - chLo));
}
function changeLegend() {
  const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => ramp(t)).join(",");
  return '<span data-key="no change"><i style="background:' + NO_CHANGE + '"></i>no change</span>' +
    '<span data-key="not compared"><i style="background:' + NOT_COMPARED +
    '"></i>not compared</span><span class="scale">‖A−B‖/‖B‖ ' + num(10 ** chLo) +
    ' <b style="background:linear-gradient(90deg,' + stops + ')"></b> ' + num(chMax) +
    "</span>";
}
if (CHANGE) {
  const o = document.createElement("option"); o.value = "change"; o.textContent = "change (A vs B)";
  $("color-mode").prepend(o); $("color-mode").value = "change";
}

// ---- treemap --------------------------------------------------------------------------------
const byPath = new Map();
(function index(n, parent) {
  n.parent = parent; byPath.set(n.p, n); n.c.forEach((c) => index(c, n));
})(D.tree, null);
const shapes = new Map();
for (const t of D.tensors) {
  const i = t.name.lastIndexOf("."); const owner = i < 0 ? "" : t.name.slice(0, i);
  if (!shapes.has(owner)) shapes.set(owner, []);
  shapes.get(owner).push(t);
}
let view = D.tree;
const kids = (n) => n.c.filter((c) => c.v > 0);

function worst(row, side) {
  let s = 0, mx = -Infinity, mn = Infinity;
  for (const r of row) { s += r.a; mx = Math.max(mx, r.a); mn = Math.min(mn, r.a); }
  if (s <= 0 || mn <= 0) return Infinity;
  return Math.max(side * side * mx / (s * s), (s * s) / (side * side * mn));
}
function layoutRow(row, x, y, w, h, out) {
  const s = row.reduce((t, r) => t + r.a, 0);
  if (w >= h) {
    const cw = h > 0 ? s / h : 0; let cy = y;
    for (const r of row) {
      const rh = cw > 0 ? r.a / cw : 0;
      out.push({ it: r.it, x, y: cy, w: cw, h: rh }); cy += rh;
    }
    return [x + cw, y, Math.max(w - cw, 0), h];
  }
  const rh = w > 0 ? s / w : 0; let cx = x;
  for (const r of row) {
    const rw = rh > 0 ? r.a / rh : 0;
    out.push({ it: r.it, x: cx, y, w: rw, h: rh }); cx += rw;
  }
  return [x, y + rh, w, Math.max(h - rh, 0)];
}
// Squarified treemap (Bruls, Huizing, van Wijk 2000): items {v} into the rectangle.
function squarify(items, x, y, w, h) {
  const out = []; const total = items.reduce((s, i) => s + i.v, 0);
  const scale = total > 0 ? (w * h) / total : 0;
  const rest = items.slice().sort((a, b) => b.v - a.v).map((i) => ({ it: i, a: i.v * scale }));
  let row = [];
  while (rest.length) {
    const side = Math.min(w, h); const r = rest[0];
    if (!row.length || worst(row.concat([r]), side) <= worst(row, side)) {
      row.push(r); rest.shift();
    } else { [x, y, w, h] = layoutRow(row, x, y, w, h, out); row = []; }
  }
  if (row.length) layoutRow(row, x, y, w, h, out);
  return out;
}

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8", "#ffbe7d", "#8cd17d"];
const cats = { dtype: new Map(), kind: new Map() };
function catColour(mode, key) {
  const m = cats[mode];
  if (!m.has(key)) {
    const i = m.size;
    m.set(key, i < PALETTE.length ? PALETTE[i] : "hsl(" + ((i * 137.5) % 360) + ",45%,62%)");
  }
  return m.get(key);
}
const TRAIN = { trainable: "#2e9d57", frozen: "#8795a8", mixed: "#d9a21b" };
function trainClass(n, v) {
  return n.t >= v ? "trainable" : n.t === 0 ? "frozen" : "mixed";
}
function colour(n, own) {
  const mode = $("color-mode").value;
  if (mode === "change") return changeColour(changeOf(n, own));
  if (mode === "dtype") return catColour("dtype", n.dt);
  if (mode === "kind") return catColour("kind", own ? n.k + " (own)" : n.k);
  return TRAIN[trainClass(n, own ? n.o : n.v)];
}
function depthOf(p) { return p === "" ? 0 : p.split(".").length; }
function box(el, r) {
  el.style.left = r.x + "px"; el.style.top = r.y + "px";
  el.style.width = Math.max(r.w, 0) + "px"; el.style.height = Math.max(r.h, 0) + "px";
}
function cell(n, r, own) {
  const el = document.createElement("div");
  el.className = own ? "own" : "cell";
  if (own) el.dataset.own = n.p; else el.dataset.path = n.p;
  el.dataset.depth = String(depthOf(n.p));
  box(el, r);
  el.style.background = colour(n, own);
  if (CHANGE) el.dataset.change = String(changeOf(n, own));
  if (r.w > 36 && r.h > 14) el.textContent = own ? n.n + " (own)" : n.n;
  if (r.w > 56 && r.h > 28) { // the count and its share of the whole model, below the name
    const v = own ? n.o : n.v, sub = document.createElement("span");
    sub.className = "share"; sub.textContent = compact(v) + " · " + share(v);
    el.appendChild(document.createElement("br")); el.appendChild(sub);
  }
  tm.appendChild(el);
}
function place(n, level, r) {
  const ch = kids(n);
  if (level >= DEPTH || !ch.length) { if (level > 0 || !ch.length) cell(n, r, false); return; }
  if (level > 0) {
    const g = document.createElement("div"); g.className = "grp"; g.dataset.group = n.p;
    box(g, r); if (r.w > 36) g.textContent = n.n; tm.appendChild(g);
    if (r.w > 24 && r.h > 30) r = { x: r.x + 2, y: r.y + 14, w: r.w - 4, h: r.h - 16 };
  }
  const items = ch.slice(); if (n.o > 0) items.push({ own: n, v: n.o });
  for (const q of squarify(items, r.x, r.y, r.w, r.h)) {
    if (q.it.own) cell(q.it.own, q, true); else place(q.it, level + 1, q);
  }
}
const tm = $("treemap");
function legend() {
  const mode = $("color-mode").value; let entries;
  if (mode === "change") { $("legend").innerHTML = changeLegend(); return; }
  if (mode === "trainable") entries = Object.entries(TRAIN);
  else entries = Array.from(cats[mode].entries());
  $("legend").innerHTML = entries.map(([k, c]) => '<span><i style="background:' + c + '"></i>' +
    esc(k) + "</span>").join("");
}
function render() {
  tm.innerHTML = "";
  if (view.v > 0) place(view, 0, { x: 0, y: 0, w: tm.clientWidth, h: tm.clientHeight });
  else tm.innerHTML = '<p class="muted" style="padding:8px">No parameters here.</p>';
  const chain = []; for (let n = view; n; n = n.parent) chain.unshift(n);
  $("crumbs").innerHTML = chain.map((n, i) => i === chain.length - 1 ? "<b>" + esc(n.n) + "</b>"
    : '<a data-zoom="' + esc(n.p) + '">' + esc(n.n) + "</a>").join(" / ") +
    ' <span class="muted">(' + fmt(view.v) + " params, " + DEPTH + " level(s) shown)</span>";
  $("up").disabled = !view.parent;
  legend();
}
function zoom(p) { const n = byPath.get(p); if (n && kids(n).length) { view = n; render(); } }
tm.addEventListener("click", (ev) => {
  const el = ev.target.closest("[data-path],[data-group]");
  if (el) zoom(el.dataset.path !== undefined ? el.dataset.path : el.dataset.group);
});
$("crumbs").addEventListener("click", (ev) => {
  const a = ev.target.closest("[data-zoom]");
  if (a) { view = byPath.get(a.dataset.zoom); render(); }
});
$("up").addEventListener("click", () => { if (view.parent) { view = view.parent; render(); } });
$("color-mode").addEventListener("change", render);
window.addEventListener("resize", render);
const tip = $("tooltip");
tm.addEventListener("mousemove", (ev) => {
  const el = ev.target.closest("[data-path],[data-own],[data-group]");
  if (!el) { tip.style.display = "none"; return; }
  const p = el.dataset.path !== undefined ? el.dataset.path
    : el.dataset.own !== undefined ? el.dataset.own : el.dataset.group;
  const n = byPath.get(p); const own = el.dataset.own !== undefined;
  const v = own ? n.o : n.v;
  let h = "<b>" + esc(p || "(root)") + (own ? " (own parameters)" : "") + "</b><br>" +
    esc(n.k) + " · " + n.dt + "<br>" + fmt(v) + " params · " +
    (100 * v / TOTAL).toFixed(2) + "% of total<br>" + fmt(own ? 0 : n.t) + " trainable";
  if (own || !kids(n).length) {
    const ts = (shapes.get(p) || []).slice(0, 8);
    h += ts.map((t) => "<br><code>" + esc(t.name.slice(t.name.lastIndexOf(".") + 1)) + " [" +
      t.shape.join(", ") + "] " + t.dtype + "</code>").join("");
  }
  if (n.sh) h += "<br>shared with " + esc(n.sh);
  if (!own && n.f !== undefined) h += "<br>" + fmt(n.f) + " FLOPs (forward)";
  if (CHANGE) {
    const c = changeOf(n, own);
    h += "<br>change ‖A−B‖/‖B‖: " + (Number.isNaN(c) ? "not compared" : num(c));
  }
  tip.innerHTML = h; tip.style.display = "block";
  tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 430) + "px";
  tip.style.top = ev.clientY + 14 + "px";
});
tm.addEventListener("mouseleave", () => { tip.style.display = "none"; });
render();

// ---- tensor table ----------------------------------------------------------------------
const LIMIT = 2000;
let sortKey = null, sortDir = 1;
$("values-note").textContent = D.values.note ? "Values: " + D.values.note + "."
  : "Histograms: a sample of at most " + fmt(D.values.sample_limit) +
    " elements per tensor, " + D.values.bins + " bins; zeros counted over the whole tensor.";
function sortValue(t, k) {
  if (k === "shape") return t.shape.reduce((a, b) => a * b, 1);
  if (k === "quant") return t.quant ? t.quant.bits : -1;
  if (k === "zeros") return t.zeros === undefined ? -1 : t.zeros;
  if (k === "trainable") return t.trainable ? 1 : 0;
  return t[k];
}
function quantText(q) {
  if (!q) return "";
  const g = q.granularity !== undefined && q.granularity !== null ? q.granularity : "";
  return q.bits + "-bit " + (q.scheme || "") + " " + g + (q.group_size ? " g" + q.group_size : "");
}
function renderTable() {
  const f = $("filter").value.trim().toLowerCase();
  const rows = D.tensors.map((t, i) => [t, i])
    .filter(([t]) => !f || t.name.toLowerCase().includes(f));
  if (sortKey) {
    rows.sort((a, b) => {
      const x = sortValue(a[0], sortKey), y = sortValue(b[0], sortKey);
      return (x < y ? -1 : x > y ? 1 : a[1] - b[1]) * sortDir;
    });
  }
  $("table-info").textContent = rows.length + " of " + D.tensors.length + " tensors" +
    (rows.length > LIMIT ? " (first " + LIMIT + " shown; filter to narrow)" : "");
  $("tensors").tBodies[0].innerHTML = rows.slice(0, LIMIT).map(([t, i]) => {
    const zeros = t.zeros === undefined ? "" : fmt(t.zeros) + " (" +
      (100 * t.zeros / Math.max(t.shape.reduce((a, b) => a * b, 1), 1)).toFixed(1) + "%)";
    return '<tr data-name="' + esc(t.name) + '" data-index="' + i + '"><td>' + esc(t.name) +
      (t.tie ? ' <span class="muted">= ' + esc(t.tie) + "</span>" : "") + "</td><td>[" +
      t.shape.join(", ") + "]</td><td>" + t.dtype + '</td><td class="num">' + fmt(t.params) +
      '</td><td class="num">' + fmt(t.bytes) + "</td><td>" + t.role + "</td><td>" +
      (t.trainable ? "yes" : "no") + '</td><td class="num">' + zeros + "</td><td>" +
      esc(quantText(t.quant)) + "</td><td>" +
      (t.hist ? '<button class="hist" type="button">show</button>'
        : '<span class="muted">—</span>') + "</td></tr>";
  }).join("");
  document.querySelectorAll("#tensors th[data-key]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir === -1);
  });
}
function histSvg(hs) {
  const W = 200, H = 48, n = hs.counts.length, mx = Math.max(...hs.counts, 1), bw = W / n;
  let bars = "";
  hs.counts.forEach((c, i) => {
    const h = c > 0 ? Math.max(1, (H * c) / mx) : 0;
    bars += '<rect x="' + (i * bw).toFixed(2) + '" y="' + (H - h).toFixed(2) + '" width="' +
      Math.max(bw - 0.5, 0.5).toFixed(2) + '" height="' + h.toFixed(2) + '" fill="#4e79a7">' +
      "<title>" + fmt(c) + "</title></rect>";
  });
  return '<svg class="hist" width="' + W + '" height="' + (H + 12) + '" viewBox="0 0 ' + W + " " +
    (H + 12) + '">' + bars + '<text x="0" y="' + (H + 11) + '" font-size="9">' +
    hs.min.toPrecision(3) + '</text><text x="' + W + '" y="' + (H + 11) +
    '" font-size="9" text-anchor="end">' + hs.max.toPrecision(3) + "</text></svg>" +
    '<span class="muted">' + fmt(hs.sampled) + " sampled" +
    (hs.nonfinite ? ", " + fmt(hs.nonfinite) + " non-finite" : "") + "</span>";
}
$("tensors").addEventListener("click", (ev) => {
  const th = ev.target.closest("th[data-key]");
  if (th) {
    const k = th.dataset.key;
    if (sortKey === k) sortDir = -sortDir; else { sortKey = k; sortDir = 1; }
    renderTable(); return;
  }
  const b = ev.target.closest("button.hist");
  if (b) {
    const t = D.tensors[Number(b.closest("tr").dataset.index)];
    const cell = b.parentElement; cell.innerHTML = histSvg(t.hist);
  }
});
$("filter").addEventListener("input", renderTable);
renderTable();

// ---- charts across depth (uPlot) ---------------------------------------------------------
// Every chart: x = block index, one line per depth series (a tensor kind, e.g. "q", "fc1",
// "norm [ln_2]"), coloured by kind; hovering names the tensor under the nearest line. Each
// container carries data-chart (its name) and data-points (x positions: the blocks); the uPlot
// instance is window.paramscopeCharts[name].
const charts = {};
window.paramscopeCharts = charts;
const KIND_COLOURS = { q: "#4e79a7", k: "#f28e2b", v: "#59a14f", qkv: "#76b7b2", o: "#e15759",
  gate: "#b07aa1", up: "#edc948", down: "#9c755f", fc1: "#edc948", fc2: "#9c755f",
  norm: "#8795a8", embedding: "#d37295", router: "#ff9da7", params: "#4e79a7",
  flops: "#e15759", activations: "#59a14f" };
const kindCols = new Map();
function kindOf(label) { return String(label).split(/[ .]/)[0]; }
function kindColour(kind) {
  if (KIND_COLOURS[kind]) return KIND_COLOURS[kind];
  if (!kindCols.has(kind)) kindCols.set(kind, "hsl(" + ((kindCols.size * 137.5 + 200) % 360) +
    ",50%,45%)");
  return kindCols.get(kind);
}
// bias lines dashed; a second line of one kind (norm [ln_1], norm [ln_2]) dotted
const DASHES = [undefined, [8, 4], [2, 3], [10, 3, 2, 3]];
function styles(labels) {
  const seen = new Map();
  return labels.map((l) => {
    const bias = /\.bias\b/.test(l); const key = kindOf(l) + (bias ? ".b" : "");
    const i = seen.get(key) || 0; seen.set(key, i + 1);
    return { stroke: kindColour(kindOf(l)), width: bias ? 1 : 2,
      dash: bias ? [4, 4] : DASHES[i % DASHES.length] };
  });
}
// an axis tick: 12.5M, 250G, 0.02, 1e-5
function tick(v) {
  const a = Math.abs(v);
  if (v === 0 || v === null) return v === null ? "" : "0";
  for (const [d, s] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e4, "k"]]) {
    if (a >= d) return String(Number((v / (d === 1e4 ? 1e3 : d)).toPrecision(3))) +
      (d === 1e4 ? "k" : s);
  }
  return a < 1e-3 ? v.toExponential(0) : String(Number(v.toPrecision(3)));
}
const key2 = (series, block) => series + "\u0000" + block;
// cfg: {name, host, blocks, series: {label: [[block, value], ...]}, lookup(label, block) ->
// {name, value}, ylabel, band: [lo, hi] | undefined, marks: [{series, block, value}], bars}
function depthChart(cfg) {
  const host = cfg.host;
  if (charts[cfg.name]) { charts[cfg.name].destroy(); delete charts[cfg.name]; }
  host.innerHTML = "";
  const labels = Object.keys(cfg.series);
  const xs = Array.from({ length: cfg.blocks }, (_, i) => i);
  const ys = labels.map((l) => {
    const y = new Array(cfg.blocks).fill(null);
    for (const [b, v] of cfg.series[l]) if (b >= 0 && b < cfg.blocks) y[b] = v;
    return y;
  });
  host.dataset.points = String(cfg.blocks);
  const st = styles(labels);
  const series = [{ label: "block" }].concat(labels.map((l, i) => ({
    label: l, stroke: st[i].stroke, width: st[i].width, dash: st[i].dash, spanGaps: false,
    scale: cfg.scaleOf ? cfg.scaleOf(l) : "y",
    fill: cfg.bars && cfg.bars(l) ? st[i].stroke + "99" : undefined,
    paths: cfg.bars && cfg.bars(l) ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined,
    points: { show: true, size: 5 }, value: (u, v) => v === null ? "–" : num(v),
  })));
  const tip = document.createElement("div"); tip.className = "chart-tip";
  let yRange;
  if (cfg.band) {
    yRange = (u, lo, hi) => [Math.min(lo === null ? cfg.band[0] : lo, cfg.band[0]) * 0.9,
      Math.max(hi === null ? cfg.band[1] : hi, cfg.band[1]) * 1.05];
  }
  const axes = [{ label: cfg.xlabel || "block", values: (u, v) => v.map((x) =>
    Number.isInteger(x) ? String(x) : "") }, { label: cfg.ylabel, size: 70,
    values: (u, v) => v.map(tick) }];
  const scales = { x: { time: false, range: [-0.5, Math.max(cfg.blocks - 0.5, 0.5)] },
    y: yRange ? { range: yRange } : {} };
  for (const [sc, label, f] of cfg.extraAxes || []) { // more scales, on the right
    axes.push({ scale: sc, side: 1, label, size: 90, grid: { show: false },
      values: (u, v) => v.map(f || tick) });
    scales[sc] = {};
  }
  const opts = {
    width: Math.max(host.clientWidth, 320), height: 300, series, axes, scales,
    legend: { live: true },
    cursor: { points: { size: 9 }, drag: { x: false, y: false } },
    hooks: {
      drawClear: [(u) => { // the healthy band, behind the lines
        if (!cfg.band) return;
        const y0 = u.valToPos(cfg.band[1], "y", true), y1 = u.valToPos(cfg.band[0], "y", true);
        u.ctx.save(); u.ctx.fillStyle = "rgba(89,161,79,0.13)";
        u.ctx.fillRect(u.bbox.left, y0, u.bbox.width, y1 - y0); u.ctx.restore();
      }],
      draw: [(u) => { // rings around flagged points
        const ctx = u.ctx; ctx.save(); ctx.strokeStyle = "#d62728";
        ctx.lineWidth = 2 * devicePixelRatio;
        for (const m of cfg.marks || []) {
          const i = labels.indexOf(m.series);
          if (i < 0 || m.value === null || !u.series[i + 1].show) continue;
          const x = u.valToPos(m.block, "x", true);
          const y = u.valToPos(m.value, u.series[i + 1].scale, true);
          ctx.beginPath(); ctx.arc(x, y, 7 * devicePixelRatio, 0, 2 * Math.PI); ctx.stroke();
        }
        ctx.restore();
      }],
      setCursor: [(u) => {
        const idx = u.cursor.idx, top = u.cursor.top;
        if (idx === null || idx === undefined || top < 0) { tip.style.display = "none"; return; }
        let best = -1, bestD = Infinity;
        for (let i = 1; i < u.series.length; i++) {
          const v = u.data[i][idx];
          if (!u.series[i].show || v === null || v === undefined) continue;
          const d = Math.abs(u.valToPos(v, u.series[i].scale) - top);
          if (d < bestD) { bestD = d; best = i; }
        }
        if (best < 0) { tip.style.display = "none"; return; }
        const label = labels[best - 1], block = u.data[0][idx];
        const row = cfg.lookup(label, block);
        const value = u.data[best][idx];
        tip.dataset.series = label; tip.dataset.block = String(block);
        tip.dataset.name = row ? row.name : ""; tip.dataset.value = String(value);
        tip.innerHTML = "<b>" + esc(row ? row.name : label + " · block " + block) + "</b><br>" +
          esc(label) + " · block " + block + "<br>" + esc(cfg.scaleOf ? kindOf(label) : cfg.ylabel) +
          ": " + num(value) +
          (row && row.extra ? "<br>" + esc(row.extra) : "");
        tip.style.display = "block";
        const left = u.over.offsetLeft + u.cursor.left;
        tip.style.left = Math.min(left + 14, u.over.offsetLeft + u.over.clientWidth - 180) + "px";
        tip.style.top = u.over.offsetTop + top + 14 + "px";
      }],
    },
  };
  const u = new uPlot(opts, [xs].concat(ys), host);
  host.appendChild(tip);
  u.over.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  charts[cfg.name] = u;
  return u;
}
window.addEventListener("resize", () => {
  for (const u of Object.values(charts)) {
    const w = Math.max(u.root.parentElement.clientWidth, 320);
    if (w !== u.width) u.setSize({ width: w, height: u.height });
  }
});
function show(id) { $(id).hidden = false; }
function listHtml(title, items) {
  return "<h4>" + esc(title) + "</h4>" + (items.length ? "<ul>" + items.join("") + "</ul>"
    : '<p class="muted">none</p>');
}
function selectOptions(sel, values, chosen) {
  sel.innerHTML = values.map((v) => '<option value="' + esc(v) + '"' +
    (v === chosen ? " selected" : "") + ">" + esc(v) + "</option>").join("");
}
// one row per (series, block) for a hover lookup
function rowIndex(rows) {
  const m = new Map();
  for (const r of rows) if (r.series !== null && r.series !== undefined) m.set(key2(r.series, r.block), r);
  return m;
}

// ---- statistics across depth -------------------------------------------------------------
(function statsView() {
  const S = D.stats;
  if (!S || !S.blocks || !Object.keys(S.series).length) return;
  show("depth-section");
  const idx = rowIndex(S.tensors);
  const sel = $("depth-stat");
  selectOptions(sel, S.stats, S.stats.includes("l2") ? "l2" : S.stats[0]);
  function draw() {
    const stat = sel.value; const series = {};
    for (const [l, per] of Object.entries(S.series)) series[l] = per[stat] || [];
    depthChart({ name: "depth", host: document.querySelector('[data-chart="depth"]'),
      blocks: S.blocks, series, ylabel: stat,
      lookup: (l, b) => { const r = idx.get(key2(l, b)); return r && { name: r.name,
        extra: r.dtype + " [" + r.shape.join(", ") + "]" }; },
      marks: S.flagged.filter((f) => f.stat === stat) });
    const per = new Map();
    for (const f of S.flagged) {
      if (!per.has(f.name)) per.set(f.name, []);
      per.get(f.name).push(f);
    }
    $("depth-flags").innerHTML = listHtml("flagged (" + per.size + ")",
      Array.from(per, ([name, fs]) => '<li data-flag="' + esc(name) + '"><code>' + esc(name) +
        "</code><br>" + fs.map((f) => (f.stat === stat ? "<b>" : "") + esc(f.stat) + " " +
          num(f.value) + (f.factor !== null && f.factor !== undefined ? " (" + num(f.factor) +
          "× median)" : "") + (f.stat === stat ? "</b>" : "")).join(", ") + "</li>"));
  }
  sel.addEventListener("change", draw);
  $("depth-note").textContent = S.blocks + " blocks, " + Object.keys(S.series).length +
    " lines" + (S.notes.length ? "; " + S.notes.join("; ") : "");
  draw();
})();

// ---- spectral health -------------------------------------------------------------------------
(function spectralView() {
  const P = D.spectral;
  if (!P || !P.matrices.length) return;
  const inBlocks = P.matrices.filter((m) => m.block !== null && m.series !== null);
  const [lo, hi] = P.alpha_range || [2, 6];
  const flagged = P.matrices.filter((m) => m.flagged);
  show("spectral-section");
  if (inBlocks.length) {
    const series = {};
    for (const m of inBlocks) (series[m.series] = series[m.series] || []).push([m.block, m.alpha]);
    const idx = rowIndex(inBlocks);
    depthChart({ name: "spectral", host: document.querySelector('[data-chart="spectral"]'),
      blocks: 1 + Math.max(...inBlocks.map((m) => m.block)), series, ylabel: "alpha",
      band: [lo, hi],
      lookup: (l, b) => { const r = idx.get(key2(l, b)); return r && { name: r.name,
        extra: "[" + r.shape.join(", ") + "] · KS distance " + num(r.D) + " · " + r.n_tail +
          " tail eigenvalues" }; },
      marks: inBlocks.filter((m) => m.flagged).map((m) => ({ series: m.series, block: m.block,
        value: m.alpha })) });
  }
  $("spectral-flags").innerHTML = listHtml("outside " + lo + " ≤ α ≤ " + hi + " (" +
    flagged.length + ")", flagged.map((m) => '<li data-flag="' + esc(m.name) + '"><code>' +
      esc(m.name) + "</code> α = " + num(m.alpha) + "</li>")) +
    '<p class="muted">' + esc(P.notes.concat(P.matrices.length ? ["method: " +
      P.matrices[0].method] : []).join("; ")) + "</p>";
})();

// ---- change against B ------------------------------------------------------------------------
(function changeView() {
  const X = CHANGE;
  if (!X) return;
  show("change-section");
  const STAT_ORDER = ["rel_change", "cosine", "sign_flips", "sqnr_db", "bits_per_weight",
    "max_abs_change"];
  const stats = STAT_ORDER.filter((s) => X.stats.includes(s))
    .concat(X.stats.filter((s) => !STAT_ORDER.includes(s)));
  const idx = rowIndex(X.tensors);
  const base = (p) => String(p).replace(/\/+$/, "").split("/").pop();
  $("change-what").innerHTML = "What changed from B to A? Per tensor: ‖A−B‖/‖B‖ " +
    "(rel_change), cosine of A and B, fraction of sign flips; the treemap above is coloured " +
    'by each module\'s change. A: <code title="' + esc(X.a) + '">' + esc(base(X.a)) +
    '</code> · B: <code title="' + esc(X.b) + '">' + esc(base(X.b)) + "</code>";
  const sel = $("change-stat");
  selectOptions(sel, stats, "rel_change");
  const lookup = (l, b) => { const r = idx.get(key2(l, b)); return r && { name: r.name,
    extra: "rel_change " + num(r.rel_change) + " · cosine " + num(r.cosine) }; };
  const seriesOf = (stat) => {
    const out = {};
    for (const [l, per] of Object.entries(X.series)) {
      if ((per[stat] || []).some((p) => p[1] !== null)) out[l] = per[stat];
    }
    return out;
  };
  function draw() {
    depthChart({ name: "change", host: document.querySelector('[data-chart="change"]'),
      blocks: X.blocks, series: seriesOf(sel.value), ylabel: sel.value, lookup });
  }
  sel.addEventListener("change", draw);
  if (X.blocks) draw();
  else document.querySelector('[data-chart="change"]').innerHTML =
    '<p class="muted">No repeated blocks: see the treemap and the list.</p>';
  // X.worst: {stat: [{name, kind, block, value}, ...]}; only tensors that changed are named
  const W = X.worst || {};
  const changed = (W.rel_change || []).filter((w) => w.value !== 0);
  $("change-worst").innerHTML = listHtml("largest change ‖A−B‖/‖B‖", changed.map((w) =>
    '<li data-worst="' + esc(w.name) + '"><code>' + esc(w.name) + "</code> " + num(w.value) +
    "</li>"));
  const un = X.unmatched || {};
  const part = (what, list) => list && list.length ? "<div>" + list.length + " " + what + ": " +
    list.slice(0, 8).map((n) => "<code>" + esc(typeof n === "string" ? n : n.name + " (" +
      n.why + ")") + "</code>").join(", ") + (list.length > 8 ? ", …" : "") + "</div>" : "";
  $("unmatched").innerHTML = part("only in A", un.only_a) + part("only in B", un.only_b) +
    part("not compared", un.not_compared) + X.notes.map((n) => "<div>note: " + esc(n) +
      "</div>").join("");
  // quantisation: SQNR and bits per weight across depth, worst SQNR named
  const quant = X.tensors.filter((t) => t.quantized);
  if (!quant.length || !X.blocks) return;
  show("quant");
  depthChart({ name: "quant-sqnr", host: document.querySelector('[data-chart="quant-sqnr"]'),
    blocks: X.blocks, series: seriesOf("sqnr_db"), ylabel: "SQNR (dB)", lookup });
  depthChart({ name: "quant-bits", host: document.querySelector('[data-chart="quant-bits"]'),
    blocks: X.blocks, series: seriesOf("bits_per_weight"), ylabel: "bits per weight", lookup });
  const byName = new Map(X.tensors.map((t) => [t.name, t]));
  $("quant-worst").innerHTML = listHtml("lowest SQNR", (W.sqnr_db || []).map((w) =>
    '<li data-worst-sqnr="' + esc(w.name) + '"><code>' + esc(w.name) + "</code> " +
    num(w.value) + " dB, " + num(byName.get(w.name).bits_per_weight) + " bits</li>"));
})();

// ---- compute and memory --------------------------------------------------------------------
(function blocksView() {
  const B = D.blocks || [];
  if (!B.length) return;
  show("blocks-box");
  // per block: parameters (bars), forward FLOPs and training activation bytes (lines, each on
  // its own axis) when measured; one set per group of blocks (encoder.layer, decoder.layer)
  const MEASURES = [["params", "y"], ["flops", "y2"], ["activations", "y3"]];
  const group = (p) => p.slice(0, p.lastIndexOf("."));
  const groups = Array.from(new Set(B.map((b) => group(b.path))));
  const name = (g, what) => groups.length > 1 ? what + " [" + g + "]" : what;
  const series = {}, rows = new Map(), have = new Set();
  for (const b of B) {
    for (const [m] of MEASURES) {
      if (b[m] === null || b[m] === undefined) continue;
      const l = name(group(b.path), m); have.add(m);
      (series[l] = series[l] || []).push([b.index, b[m]]);
      rows.set(key2(l, b.index), b);
    }
  }
  const scaleOf = Object.fromEntries(MEASURES);
  const extra = [];
  if (have.has("flops")) extra.push(["y2", "FLOPs (forward)"]);
  if (have.has("activations")) extra.push(["y3", "activations (training)", bytes]);
  depthChart({ name: "blocks", host: document.querySelector('[data-chart="blocks"]'),
    blocks: 1 + Math.max(...B.map((b) => b.index)), series, ylabel: "parameters",
    extraAxes: extra, scaleOf: (l) => scaleOf[kindOf(l)] || "y",
    bars: (l) => kindOf(l) === "params",
    lookup: (l, b) => { const r = rows.get(key2(l, b)); return r && { name: r.path,
      extra: fmt(r.params) + " params" + (r.flops !== null && r.flops !== undefined ? " · " +
        fmt(r.flops) + " FLOPs" : "") + (r.activations !== null &&
        r.activations !== undefined ? " · " + bytes(r.activations) + " activations" : "") }; } });
})();
(function memoryBars() {
  const PARTS = [["weights", "weights", "#4e79a7"], ["gradients", "gradients", "#f28e2b"],
    ["optimizer_states", "optimizer", "#e15759"], ["master_weights", "fp32 master", "#76b7b2"],
    ["activations", "activations", "#59a14f"], ["kv_cache", "KV cache", "#edc948"],
    ["buffers", "buffers", "#b07aa1"]];
  const used = PARTS.filter(([k]) => D.memory.some((m) => m[k]));
  const scale = Math.max(1, ...D.memory.map((m) => Math.max(m.total,
    PARTS.reduce((s, [k]) => s + (m[k] || 0), 0))));
  $("memory-bars").innerHTML = D.memory.map((m) => '<div class="mrow" data-memory="' +
    esc(m.label) + '"><span class="mlabel">' + esc(m.label) + '</span><span class="mbar">' +
    used.filter(([k]) => m[k]).map(([k, label, c]) => '<span data-part="' + k +
      '" style="width:' + (100 * m[k] / scale).toFixed(3) + "%;background:" + c + '" title="' +
      label + ": " + bytes(m[k]) + '"></span>').join("") + '</span><span class="mtotal">' +
    bytes(m.total) + "</span></div>").join("");
  $("memory-legend").innerHTML = used.map(([, label, c]) => '<span><i style="background:' + c +
    '"></i>' + label + "</span>").join("");
})();
