"""The explorer page's style and script (:mod:`harness.analysis.explorer` inlines both).

The script reads the data from ``<script type="application/json" id="deceval-data">`` and
builds the page with DOM calls: every text of the report goes in through ``textContent`` or
text nodes, never ``innerHTML``. Rows are filtered and sorted in memory and shown a page at a
time (:data:`PAGE_ROWS` rows), so 20,000 samples stay responsive; word diffs are computed only
for the rows on screen.

Data (see ``explorer_data``): ``cols[i] = {label, strategy, run, base}``; ``rows[r] = [model,
task, prompt_id, base_seed, sample_index, prompt, reference]``; ``cells[k] = [row, col,
completion, extracted, finish_reason, seed, error, [metric values], [cost values],
steps]`` with ``steps`` a ``{field: [value per step]}`` object or null.
"""

PAGE_ROWS = 50

PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{padding:10px 16px;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0;z-index:2}
h1{font-size:18px;margin:0 0 6px}
.controls{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center}
.controls label{font-size:12px;color:#444}
.controls input[type=number]{width:70px}
#cols label{margin-right:8px}
#summary{padding:8px 16px}
#summary .reg{color:#b00020;font-weight:600}#summary .imp{color:#1b5e20;font-weight:600}
#regressed-list,#improved-list{margin:4px 0 8px;padding-left:22px;max-height:130px;overflow:auto;font-size:12px}
#regressed-list li,#improved-list li{cursor:pointer}
main{padding:0 16px 40px}
table{border-collapse:collapse;table-layout:fixed;width:100%;background:#fff}
th,td{border:1px solid #ddd;vertical-align:top;padding:6px;text-align:left;overflow-wrap:anywhere}
th{background:#f0f0f0;position:sticky;top:0}
th.base{background:#e3ecfa}
td.prompt{background:#fcfcf7}
tr.regressed td.prompt{border-left:4px solid #b00020}tr.improved td.prompt{border-left:4px solid #1b5e20}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
.meta{font-size:11px;color:#555;margin-top:4px}
.chip{display:inline-block;border-radius:3px;padding:0 4px;margin:1px 2px 1px 0;background:#eee;font-size:11px}
.chip.worse{background:#ffd8dc}.chip.better{background:#d6f5d6}
.err{color:#b00020;font-weight:600}
del{background:#ffd8dc;text-decoration:line-through}ins{background:#c8f0c8;text-decoration:none}
del+ins{margin-left:3px}
button.fold,button.open{font-size:11px;margin-top:3px}
#pager{margin:8px 0;display:flex;gap:8px;align-items:center}
aside#panel{position:fixed;top:0;right:0;width:min(720px,95vw);height:100vh;overflow:auto;background:#fff;
 border-left:2px solid #888;padding:12px 16px;box-shadow:-4px 0 12px rgba(0,0,0,.15);z-index:5}
aside#panel[hidden]{display:none}
aside#panel table{table-layout:auto;font-size:12px}
svg.plot{background:#fff;border:1px solid #ddd;margin:4px 0}
"""

PAGE_JS = r"""
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("deceval-data").textContent);
  const PAGE = 50, FOLD = 700, DIFF_WORDS = 160, MAX_DIFF_CELLS = 4000000;
  const M = D.metrics, NM = M.length;
  const byRow = D.rows.map(() => ({}));
  D.cells.forEach((c, k) => { byRow[c[0]][c[1]] = k; });
  const candCols = D.cols.map((c, i) => i).filter(i => D.cols[i].base !== null);
  const S = {model: "", task: "", cols: new Set(D.cols.map((c, i) => i)), rmetric: D.metric || (NM ? M[0].name : ""),
             rmin: "", rmax: "", errors: false, changed: false, q: "", pair: D.metric || "",
             sort: candCols.length ? "diff-asc" : "id", sortcol: candCols.length ? candCols[0] : 0,
             diff: true, page: 0};
  let shown = [], diffCache = null;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  const fmt = v => v === null || v === undefined ? "" : (Number.isInteger(v) ? String(v) : Number(v).toPrecision(4));
  const metricIx = name => M.findIndex(m => m.name === name);
  const rowName = r => { const w = D.rows[r]; return w[1] === undefined ? "" :
    D.tasks[w[1]] + "/" + w[2] + (w[4] ? " #" + w[4] : "") + (D.models.length > 1 ? " (" + D.models[w[0]] + ")" : ""); };

  // ---- paired differences: candidate - baseline, signed so that < 0 is worse -------------------
  function pairedDiffs() {
    const mi = metricIx(S.pair);
    if (diffCache && diffCache.metric === S.pair) return diffCache;
    const out = {metric: S.pair, rowMin: new Float64Array(D.rows.length).fill(NaN),
                 rowMax: new Float64Array(D.rows.length).fill(NaN), col: {}, perCell: new Map()};
    if (mi < 0) { diffCache = out; return out; }
    const hib = M[mi].hib, sign = hib === false ? -1 : 1;
    for (const ci of candCols) out.col[ci] = {regressed: 0, improved: 0, pairs: 0};
    for (let r = 0; r < D.rows.length; r++) {
      const cells = byRow[r];
      for (const ci of candCols) {
        const k = cells[ci], b = cells[D.cols[ci].base];
        if (k === undefined || b === undefined) continue;
        const x = D.cells[k], y = D.cells[b];
        if (x[6] !== null || y[6] !== null) continue;  // error rows are not paired (as in the gate)
        const vx = x[7][mi], vy = y[7][mi];
        if (vx === null || vy === null) continue;
        const d = hib === null ? 0 : sign * (vx - vy);
        out.perCell.set(k, d);
        const c = out.col[ci]; c.pairs++;
        if (d < 0) c.regressed++; else if (d > 0) c.improved++;
        if (!(out.rowMin[r] <= d)) out.rowMin[r] = d;
        if (!(out.rowMax[r] >= d)) out.rowMax[r] = d;
      }
    }
    diffCache = out;
    return out;
  }
  function rowDiff(pd, r) {
    if (S.sort.startsWith("diff") && candCols.length > 1 && S.cols.has(S.sortcol) && D.cols[S.sortcol].base !== null) {
      const k = byRow[r][S.sortcol];
      return k === undefined || !pd.perCell.has(k) ? NaN : pd.perCell.get(k);
    }
    return S.sort === "diff-desc" ? pd.rowMax[r] : pd.rowMin[r];
  }

  // ---- filter and sort ------------------------------------------------------------------------------
  function apply() {
    const pd = pairedDiffs();
    const q = S.q.trim().toLowerCase(), mi = metricIx(S.rmetric);
    const lo = S.rmin === "" ? -Infinity : Number(S.rmin), hi = S.rmax === "" ? Infinity : Number(S.rmax);
    const ranged = mi >= 0 && (S.rmin !== "" || S.rmax !== "");
    const out = [];
    for (let r = 0; r < D.rows.length; r++) {
      const w = D.rows[r];
      if (S.model !== "" && String(w[0]) !== S.model) continue;
      if (S.task !== "" && String(w[1]) !== S.task) continue;
      const ks = Object.entries(byRow[r]).filter(([ci]) => S.cols.has(Number(ci))).map(([, k]) => k);
      if (!ks.length) continue;
      if (S.errors && !ks.some(k => D.cells[k][6] !== null)) continue;
      if (S.changed && !(pd.rowMin[r] < 0 || pd.rowMax[r] > 0)) continue;
      if (ranged && !ks.some(k => { const v = D.cells[k][7][mi]; return v !== null && v >= lo && v <= hi; })) continue;
      if (q && !((w[2] + "\n" + (w[5] || "") + "\n" + (w[6] || "")).toLowerCase().includes(q)
                 || ks.some(k => ((D.cells[k][2] || "") + "\n" + (D.cells[k][6] || "")).toLowerCase().includes(q)))) continue;
      out.push(r);
    }
    const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    if (S.sort === "diff-asc" || S.sort === "diff-desc") {
      const s = S.sort === "diff-asc" ? 1 : -1;
      out.sort((a, b) => {
        const da = rowDiff(pd, a), db = rowDiff(pd, b);
        const na = isNaN(da) || da === 0, nb = isNaN(db) || db === 0;  // unchanged and unpaired rows last
        if (na !== nb) return na ? 1 : -1;
        return (na ? 0 : s * (da - db)) || byId(a, b);
      });
    } else if (S.sort.startsWith("m:")) {
      const [, name, dir] = S.sort.split(":"), i = metricIx(name), s = dir === "asc" ? 1 : -1;
      const val = r => { const k = byRow[r][S.sortcol]; return k === undefined ? null : D.cells[k][7][i]; };
      out.sort((a, b) => {
        const va = val(a), vb = val(b);
        if ((va === null) !== (vb === null)) return va === null ? 1 : -1;
        return (va === null ? 0 : s * (va - vb)) || byId(a, b);
      });
    }
    shown = out;
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (S.page >= pages) S.page = pages - 1;
    render(pd);
  }

  // ---- word diff (only for the rows on screen) --------------------------------------------------------
  // a word with the whitespace after it: the diff aligns words, not the spaces between them
  function words(t) { return (t || "").match(/\s+|\S+\s*/g) || []; }
  function wordDiff(a, b) {
    const x = words(a), y = words(b);
    let p = 0; while (p < x.length && p < y.length && x[p] === y[p]) p++;
    let s = 0; while (s < x.length - p && s < y.length - p && x[x.length - 1 - s] === y[y.length - 1 - s]) s++;
    const X = x.slice(p, x.length - s), Y = y.slice(p, y.length - s);
    const ops = [];
    if (p) ops.push(["=", x.slice(0, p).join("")]);
    if (X.length * Y.length > MAX_DIFF_CELLS) return null;
    const n = X.length, m = Y.length, L = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      L[i * (m + 1) + j] = X[i] === Y[j] ? L[(i + 1) * (m + 1) + j + 1] + 1
                                        : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    let i = 0, j = 0;
    const push = (op, t) => { const last = ops[ops.length - 1]; if (last && last[0] === op) last[1] += t; else ops.push([op, t]); };
    while (i < n && j < m) {
      if (X[i] === Y[j]) { push("=", X[i]); i++; j++; }
      else if (L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1]) { push("-", X[i]); i++; }
      else { push("+", Y[j]); j++; }
    }
    while (i < n) push("-", X[i++]);
    while (j < m) push("+", Y[j++]);
    if (s) push("=", x.slice(x.length - s).join(""));
    return ops;
  }

  // ---- folded text: the first part, and a button that says how much more there is ----------------------
  function folded(text, cls) {
    const t = text || "";
    const box = el("div", {cls: "text " + (cls || "")});
    if (t.length <= FOLD) { box.textContent = t; return box; }
    box.textContent = t.slice(0, FOLD);
    const more = t.length - FOLD;
    const b = el("button", {cls: "fold", text: "… " + more.toLocaleString() + " more characters (unfold)"});
    b.addEventListener("click", () => { box.textContent = t; });
    const wrap = el("div", null, box, b);
    b.addEventListener("click", () => b.remove());
    return wrap;
  }
  function diffView(base, text) {
    const ops = wordDiff(base, text);
    const box = el("div", {cls: "text diff"});
    if (ops === null) { box.append(folded(text)); box.append(el("div", {cls: "meta", text: "(too long to diff word by word)"})); return box; }
    let count = 0, cut = -1;
    const nodes = ops.map(([op, t], i) => {
      count += (t.match(/\S+/g) || []).length;
      if (cut < 0 && count > DIFF_WORDS && i < ops.length - 1) cut = i + 1;
      return op === "=" ? document.createTextNode(t) : el(op === "+" ? "ins" : "del", {text: t});
    });
    if (cut < 0) { box.append(...nodes); return box; }
    box.append(...nodes.slice(0, cut));
    const rest = nodes.slice(cut);
    const b = el("button", {cls: "fold", text: "… " + (ops.length - cut) + " more diff parts (unfold)"});
    b.addEventListener("click", () => { b.remove(); box.append(...rest); });
    return el("div", null, box, b);
  }

  // ---- the table ------------------------------------------------------------------------------
  function chips(cell, baseCell) {
    const box = el("div", {cls: "meta"});
    M.forEach((m, i) => {
      const v = cell[7][i];
      if (v === null) return;
      let cls = "chip";
      if (baseCell && baseCell[7][i] !== null && m.hib !== null && baseCell[7][i] !== v)
        cls += ((v > baseCell[7][i]) === m.hib) ? " better" : " worse";
      box.append(el("span", {cls, title: m.desc || m.name, text: m.name + " " + fmt(v)}));
    });
    return box;
  }
  function costLine(cell) {
    const parts = [];
    D.cost.forEach((c, i) => { if (cell[8][i] !== null) parts.push(c + " " + fmt(cell[8][i])); });
    if (cell[4]) parts.push("finish " + cell[4]);
    return el("div", {cls: "meta cost", text: parts.join(" · ")});
  }
  function cellView(k, ci) {
    const td = el("td", {"data-col": String(ci)});
    if (k === undefined) { td.append(el("span", {cls: "meta", text: "(no sample)"})); return td; }
    const c = D.cells[k], bi = D.cols[ci].base, bk = bi === null ? undefined : byRow[c[0]][bi];
    const base = bk === undefined ? null : D.cells[bk];
    if (c[6] !== null) td.append(el("div", {cls: "err", text: "error: " + c[6]}));
    if (S.diff && base && base[6] === null && c[6] === null) td.append(diffView(base[2], c[2]));
    else td.append(folded(c[2], "completion"));
    if (c[3] !== null) td.append(el("div", {cls: "meta", text: "extracted: " + c[3]}));
    td.append(chips(c, base), costLine(c));
    const open = el("button", {cls: "open", text: "sample"});
    open.addEventListener("click", () => panel(k));
    td.append(open);
    return td;
  }
  function render(pd) {
    const main = document.getElementById("rows");
    main.replaceChildren();
    const cols = D.cols.map((c, i) => i).filter(i => S.cols.has(i));
    const head = el("tr", null, el("th", {text: "prompt"}));
    for (const ci of cols) {
      const c = D.cols[ci], th = el("th", {cls: c.base === null && candCols.some(x => D.cols[x].base === ci) ? "base" : "",
                                            "data-col": String(ci)});
      th.append(el("div", {text: c.label}));
      if (c.base === null && candCols.some(x => D.cols[x].base === ci)) th.append(el("div", {cls: "meta", text: "baseline"}));
      if (pd.col[ci]) th.append(el("div", {cls: "meta counts",
        text: "vs " + D.cols[c.base].label + " on " + pd.metric + ": " + pd.col[ci].regressed + " regressed, " +
              pd.col[ci].improved + " improved of " + pd.col[ci].pairs}));
      head.append(th);
    }
    const body = el("tbody");
    for (const r of shown.slice(S.page * PAGE, (S.page + 1) * PAGE)) {
      const w = D.rows[r];
      const cls = pd.rowMin[r] < 0 ? "regressed" : pd.rowMax[r] > 0 ? "improved" : "";
      const tr = el("tr", {cls, "data-row": String(r), "data-key": rowName(r)});
      const p = el("td", {cls: "prompt"});
      p.append(el("div", {cls: "meta", text: D.models[w[0]] + " · " + D.tasks[w[1]] + " · " + w[2] +
                                             " · seed " + w[3] + " · sample " + w[4]}));
      p.append(folded(w[5], "prompt-text"));
      if (w[6] !== null) p.append(el("div", {cls: "meta", text: "reference: " + w[6]}));
      tr.append(p);
      for (const ci of cols) tr.append(cellView(byRow[r][ci], ci));
      body.append(tr);
    }
    main.append(el("table", {id: "samples"}, el("thead", null, head), body));
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    document.getElementById("pageinfo").textContent =
      "rows " + (shown.length ? S.page * PAGE + 1 : 0) + "-" + Math.min(shown.length, (S.page + 1) * PAGE) +
      " of " + shown.length + " (page " + (S.page + 1) + " of " + pages + ")";
    summary(pd);
    document.body.dataset.q = S.q;
  }
  function summary(pd) {
    const box = document.getElementById("summary");
    box.replaceChildren();
    if (!candCols.length) { box.append(el("div", {cls: "meta", text: "no baseline column: give --baseline LABEL, or two runs, for paired differences"})); return; }
    const reg = shown.filter(r => pd.rowMin[r] < 0), imp = shown.filter(r => !(pd.rowMin[r] < 0) && pd.rowMax[r] > 0);
    const worst = reg.slice().sort((a, b) => (pd.rowMin[a] - pd.rowMin[b]) || (a - b));
    const best = imp.slice().sort((a, b) => (pd.rowMax[b] - pd.rowMax[a]) || (a - b));
    box.append(el("div", null, "Paired difference on ", el("b", {text: pd.metric}), " (candidate - baseline, errors unpaired): ",
      el("span", {cls: "reg", id: "n-regressed", text: String(reg.length)}), " rows regressed, ",
      el("span", {cls: "imp", id: "n-improved", text: String(imp.length)}), " improved, of " + shown.length + " shown."));
    for (const [id, list, key] of [["regressed-list", worst, "rowMin"], ["improved-list", best, "rowMax"]]) {
      const ol = el("ol", {id});
      for (const r of list) {
        const li = el("li", {"data-row": String(r), text: rowName(r) + "  (" + fmt(pd[key][r]) + ")"});
        li.addEventListener("click", () => { S.q = ""; document.getElementById("q").value = D.rows[r][2];
                                             S.q = D.rows[r][2]; S.page = 0; apply(); });
        ol.append(li);
      }
      box.append(el("div", {cls: "meta", text: id === "regressed-list" ? "regressed, worst first:" : "improved, best first:"}), ol);
    }
  }

  // ---- the sample panel ---------------------------------------------------------------------------
  function plot(name, vals) {
    const ns = "http://www.w3.org/2000/svg", W = 640, H = 90, pad = 4;
    const xs = vals.map((v, i) => [i, v]).filter(([, v]) => v !== null);
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "plot"); svg.setAttribute("width", W); svg.setAttribute("height", H + 16);
    svg.setAttribute("role", "img"); svg.setAttribute("aria-label", name + " per step");
    if (!xs.length) return svg;
    const lo = Math.min(...xs.map(p => p[1])), hi = Math.max(...xs.map(p => p[1])), span = hi - lo || 1;
    const n = Math.max(1, vals.length - 1);
    const pts = xs.map(([i, v]) => (pad + i / n * (W - 2 * pad)).toFixed(1) + "," + (pad + (1 - (v - lo) / span) * (H - 2 * pad)).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" ")); line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#1f5fbf"); line.setAttribute("stroke-width", "1.5");
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", String(H + 13)); label.setAttribute("font-size", "11");
    label.textContent = name + " per step: min " + fmt(lo) + ", max " + fmt(hi) + ", " + vals.length + " steps";
    svg.append(line, label);
    return svg;
  }
  function panel(k) {
    const c = D.cells[k], w = D.rows[c[0]], col = D.cols[c[1]];
    const box = document.getElementById("panel");
    box.replaceChildren();
    const close = el("button", {id: "panel-close", text: "close"});
    close.addEventListener("click", () => { box.hidden = true; });
    box.append(close, el("h2", {text: col.label + " · " + w[2]}));
    const facts = [["run", D.runs[col.run].id], ["model", D.models[w[0]]], ["task", D.tasks[w[1]]], ["prompt id", w[2]],
                   ["sample index", w[4]], ["base seed", w[3]], ["seed", c[5]], ["finish reason", c[4]],
                   ["error", c[6]], ["reference", w[6]], ["extracted", c[3]]];
    D.cost.forEach((n, i) => facts.push([n, c[8][i]]));
    M.forEach((m, i) => facts.push([m.name, c[7][i]]));
    const t = el("table", {id: "panel-facts"});
    for (const [n, v] of facts) if (v !== null && v !== undefined) t.append(el("tr", null, el("th", {text: n}), el("td", {text: typeof v === "number" ? fmt(v) : String(v)})));
    box.append(el("div", {cls: "meta", text: D.runs[col.run].id + " · " + D.models[w[0]] + " · " + D.tasks[w[1]] +
                                              " · sample " + w[4] + " · seed " + c[5] + " · finish " + c[4]}));
    if (c[6] !== null) box.append(el("div", {cls: "err", text: "error: " + c[6]}));
    box.append(el("h3", {text: "prompt"}), el("div", {cls: "text", id: "panel-prompt", text: w[5] || ""}),
               el("h3", {text: "completion"}), el("div", {cls: "text", id: "panel-completion", text: c[2] || ""}));
    const st = c[9];
    if (st) {
      const fields = Object.keys(st), n = st[fields[0]].length;
      box.append(el("h3", {text: "step trace (" + n + " steps)"}));
      for (const f of ["n_chosen", "candidates", "logprob", "n_max", "score"]) if (st[f]) box.append(plot(f === "logprob" ? "log strength" : f, st[f]));
      const tt = el("table", {id: "panel-steps"}), hr = el("tr", null, el("th", {text: "step"}));
      fields.forEach(f => hr.append(el("th", {text: f})));
      tt.append(hr);
      const addRows = (a, b) => { for (let i = a; i < b; i++) { const tr = el("tr", null, el("td", {text: String(i)}));
        fields.forEach(f => tr.append(el("td", {text: fmt(st[f][i])}))); tt.append(tr); } };
      addRows(0, Math.min(n, 200));
      box.append(tt);
      if (n > 200) { const b = el("button", {cls: "fold", text: "… " + (n - 200) + " more steps (unfold)"});
        b.addEventListener("click", () => { b.remove(); addRows(200, n); }); box.append(b); }
    } else box.append(el("div", {cls: "meta", text: "no step trace (a native strategy)"}));
    box.append(el("h3", {text: "sample, metrics and cost"}), t);
    box.scrollTop = 0;
    box.hidden = false;
  }

  // ---- controls -------------------------------------------------------------------------------
  function select(id, options, value, onchange) {
    const s = el("select", {id});
    for (const [v, t] of options) { const o = el("option", {value: v, text: t}); if (v === value) o.selected = true; s.append(o); }
    s.addEventListener("change", () => { onchange(s.value); S.page = 0; apply(); });
    return s;
  }
  function controls() {
    const metricOpts = M.map(m => [m.name, m.name + (m.hib === null ? "" : m.hib ? " (higher better)" : " (lower better)")]);
    const sortOpts = [["diff-asc", "paired difference: regressed first"], ["diff-desc", "paired difference: improved first"],
                      ["id", "task and prompt id"]];
    M.forEach(m => { sortOpts.push(["m:" + m.name + ":desc", m.name + " high to low"]); sortOpts.push(["m:" + m.name + ":asc", m.name + " low to high"]); });
    let timer = null;
    const q = el("input", {id: "q", type: "search", placeholder: "search prompts, completions, ids"});
    q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { S.q = q.value; S.page = 0; apply(); }, 200); });
    const num = (id, key) => { const i = el("input", {id, type: "number", step: "any"});
      i.addEventListener("change", () => { S[key] = i.value; S.page = 0; apply(); }); return i; };
    const check = (id, key, text, value) => { const i = el("input", {id, type: "checkbox"}); i.checked = value;
      i.addEventListener("change", () => { S[key] = i.checked; S.page = 0; apply(); }); return el("label", null, i, " " + text); };
    const colBox = el("span", {id: "cols"}, el("b", {text: "strategies: "}));
    D.cols.forEach((c, i) => { const b = el("input", {type: "checkbox", "data-col": String(i)}); b.checked = true;
      b.addEventListener("change", () => { if (b.checked) S.cols.add(i); else S.cols.delete(i); S.page = 0; apply(); });
      colBox.append(el("label", null, b, " " + c.label)); });
    const prev = el("button", {id: "prev", text: "previous"}), next = el("button", {id: "next", text: "next"});
    prev.addEventListener("click", () => { if (S.page > 0) { S.page--; apply(); } });
    next.addEventListener("click", () => { if ((S.page + 1) * PAGE < shown.length) { S.page++; apply(); } });
    const runs = D.runs.map(r => r.id + (r.status && r.status !== "complete" ? " (" + r.status + ")" : "")).join(", ");
    document.body.append(
      el("header", null, el("h1", {text: D.title}), el("div", {cls: "meta", text: "runs: " + runs + " · " + D.cells.length + " samples, " + D.rows.length + " rows"}),
        el("div", {cls: "controls"},
          el("label", null, "model ", select("f-model", [["", "all"], ...D.models.map((m, i) => [String(i), m])], "", v => { S.model = v; })),
          el("label", null, "task ", select("f-task", [["", "all"], ...D.tasks.map((t, i) => [String(i), t])], "", v => { S.task = v; })),
          el("label", null, "metric range ", select("f-rmetric", metricOpts, S.rmetric, v => { S.rmetric = v; }), " ", num("f-rmin", "rmin"), " to ", num("f-rmax", "rmax")),
          check("f-errors", "errors", "error rows only", false),
          check("f-changed", "changed", "changed rows only", false),
          q),
        el("div", {cls: "controls"},
          el("label", null, "paired metric ", select("f-pair", metricOpts, S.pair, v => { S.pair = v; })),
          el("label", null, "sort ", select("f-sort", sortOpts, S.sort, v => { S.sort = v; })),
          el("label", null, "by column ", select("f-sortcol", D.cols.map((c, i) => [String(i), c.label]), String(S.sortcol), v => { S.sortcol = Number(v); })),
          check("f-diff", "diff", "word diff against the baseline", true)),
        el("div", {cls: "controls"}, colBox)),
      el("section", {id: "summary"}),
      el("main", null, el("div", {id: "pager"}, prev, next, el("span", {id: "pageinfo"})), el("div", {id: "rows"})),
      el("aside", {id: "panel", hidden: ""}));
  }
  controls();
  apply();
  document.body.dataset.readyMs = performance.now().toFixed(0);  // parse, index, first page drawn
  document.body.setAttribute("data-ready", "1");
})();
"""
