
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
  if (r.w > 36 && r.h > 14) el.textContent = own ? n.n + " (own)" : n.n;
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
