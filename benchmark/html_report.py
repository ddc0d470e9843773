"""One self-contained HTML page of a results store: sortable tables, interactive curves, per-image results.

    python run_benchmark.py report --results results/kodak        # -> results/kodak/report/index.html

`write_html` renders whatever tables it is given (any DataFrame: text or numeric cells, MultiIndex rows) and
draws its own plots from the runs and metrics, with plotly; plotly's JavaScript is inlined once, so the page
needs no network when it is viewed. The page holds

- a header: the store, the run settings shared by every run, the timing groups (device, GPU, execution mode);
- the tables, each sortable by a click on a column heading; a row's strategy links to its per-image rows;
- PSNR and SSIM vs iteration and vs train-seconds, one line per variant (set-up and strategy) with the 95 %
  bootstrap band over images, toggled from the legend; two selectors switch every plot between the value at
  N and the best value so far, and between the mean over images and any one image;
- a heatmap of the final PSNR per variant × image, and the per-image rows of each variant;
- the static figures that the page does not redraw (selection maps, tuning plots), embedded as PNG.

Curves are resampled for display onto a grid of at most CURVE_POINTS x values per plot (fewer when the store
recorded fewer), so the page stays small; the store is only read.
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .errors import BenchError
from .store import atomic_write_text

CURVE_POINTS = 300  # x values per plotted curve at most
BAND_RESAMPLES = 1000  # bootstrap resamples of the display band
BASELINE = "standard"
REDRAWN = {"psnr_vs_iteration", "psnr_vs_seconds", "ssim_vs_iteration", "ssim_vs_seconds",
           "final_psnr_per_image"}  # PNG figures the page draws interactively instead of embedding
PLOTS = [("psnr", "iteration"), ("psnr", "train_seconds"), ("ssim", "iteration"), ("ssim", "train_seconds")]
AXIS_TITLE = {"psnr": "PSNR (dB)", "ssim": "SSIM", "iteration": "iteration", "train_seconds": "train-seconds"}
DIGITS = {"psnr": 2, "ssim": 4, "iteration": 0, "train_seconds": 3}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
SETTINGS = ["suite", "model", "model_params", "mt_ratio", "ratio_schedule", "interval", "lr", "lr_schedule",
            "iters"]


# --- names and text --------------------------------------------------------------------------------------------
def variant_order(names: Iterable[str]) -> list[str]:
    """The baseline strategy first, then alphabetical (as in the report's figures)."""
    return sorted(set(names), key=lambda n: (n.split(" · ")[-1] != BASELINE, n))


def _variants(runs: pd.DataFrame) -> pd.Series:
    return runs["variant"] if "variant" in runs.columns else runs["label"]


def _slugs(names: list[str]) -> dict[str, str]:
    """A unique, readable anchor id per name."""
    out, used = {}, set()
    for name in names:
        base = "per-image-" + (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "variant")
        slug, i = base, 2
        while slug in used:
            slug, i = f"{base}-{i}", i + 1
        used.add(slug)
        out[name] = slug
    return out


def _text(value: Any) -> str:
    """A cell as text: numbers compact, missing values as '—'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return " / ".join(map(_text, value))
    return str(value)


NUMBER = re.compile(r"^\s*([+\-−]?\d+(?:\.\d+)?(?:[eE][+\-]?\d+)?)")


def sort_value(text: str) -> float | None:
    """The number a cell starts with ('31.20 [30.1, 32.0]' → 31.2, '−4.5%' → -4.5), else None (sorts as text)."""
    match = NUMBER.match(text)
    return float(match.group(1).replace("−", "-")) if match else None


def _td(text: str, tag: str = "td", inner: str | None = None) -> str:
    number = sort_value(text)
    attr = f' data-sort="{number!r}"' if number is not None else ""
    return f"<{tag}{attr}>{inner if inner is not None else html.escape(text)}</{tag}>"


def _link_target(index_texts: list[str], names: list[str], label: str | None) -> str | None:
    """The variant a table row belongs to: the one whose name holds every index value, or the row's label."""
    parts = {n: set(n.split(" · ")) for n in names}
    hits = [n for n in names if set(index_texts) <= parts[n]]
    if len(hits) == 1:
        return hits[0]
    if label is not None and label in names:
        return label
    return None


def html_table(table: pd.DataFrame, table_id: str, links: dict[str, str] | None = None,
               link_level: str | None = None) -> str:
    """A sortable table: the index levels as leading columns, then every column, each cell as text.

    With `links` ({variant: anchor}), the cell of `link_level` (the label) links to that variant's rows."""
    flat_index = isinstance(table.index, pd.RangeIndex) and table.index.name is None
    names = [] if flat_index else [str(n) if n is not None else "" for n in table.index.names]
    heads = names + [_text(c) for c in table.columns]
    rows = []
    for idx, values in zip(table.index, table.itertuples(index=False, name=None)):
        keys = [] if flat_index else [_text(k) for k in (idx if isinstance(idx, tuple) else (idx,))]
        target = None
        if links:
            label = keys[names.index(link_level)] if link_level in names else None
            target = _link_target(keys, list(links), label)
        cells = []
        for i, key in enumerate(keys):
            linked = target is not None and (names[i] == link_level or (link_level not in names and i == len(keys) - 1))
            inner = f'<a href="#{links[target]}">{html.escape(key)}</a>' if linked else None
            cells.append(_td(key, "th", inner))
        cells += [_td(_text(v)) for v in values]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th class="sortable" title="sort">{html.escape(h)}</th>' for h in heads)
    return (f'<table class="sortable-table" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# --- curves ----------------------------------------------------------------------------------------------------
def _grid(metrics: pd.DataFrame, x: str, y: str) -> np.ndarray:
    """≤ CURVE_POINTS x values from 0 to the longest run, no more than the store recorded per run."""
    recorded = metrics.dropna(subset=[y])
    if recorded.empty:
        return np.array([])
    points = min(CURVE_POINTS, int(recorded.groupby("run_id").size().max()))
    grid = np.linspace(0.0, float(recorded[x].max()), max(points, 2))
    return np.unique(grid.round()) if x == "iteration" else grid


def _band(per_image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over images (rows) and its 95 % percentile-bootstrap CI, at the x values every image reaches."""
    from scipy.stats import bootstrap

    complete = np.isfinite(per_image).all(axis=0)
    mean = np.full(per_image.shape[1], np.nan)
    lo, hi = mean.copy(), mean.copy()
    if not complete.any():
        return mean, lo, hi
    values = per_image[:, complete]
    mean[complete] = values.mean(axis=0)
    spread = np.ptp(values, axis=0) > 0
    lo[complete], hi[complete] = mean[complete], mean[complete]
    if per_image.shape[0] > 1 and spread.any():
        ci = bootstrap((values[:, spread],), np.mean, axis=0, n_resamples=BAND_RESAMPLES, method="percentile",
                       confidence_level=0.95, vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
        where = np.flatnonzero(complete)[spread]
        lo[where], hi[where] = ci.low, ci.high
    return mean, lo, hi


def _rounded(values: np.ndarray, digits: int) -> list:
    return [None if not math.isfinite(v) else (int(round(v)) if digits == 0 else round(float(v), digits))
            for v in values]


def curve_data(runs: pd.DataFrame, metrics: pd.DataFrame, seed: int = 0) -> dict:
    """Every plot's grid, and per reading (at N, best so far) and variant: the mean with its band and each
    image's curve (seeds averaged), rounded for display."""
    variant = dict(zip(runs["run_id"], _variants(runs)))
    image = dict(zip(runs["run_id"], runs["image"]))
    names = variant_order(variant.values())
    images = sorted(set(image.values()))
    m = metrics[metrics["run_id"].isin(variant)].sort_values(["run_id", "iteration"])
    plots = {}
    for y, x in PLOTS:
        grid = _grid(m, x, y)
        if grid.size == 0:
            continue
        curves: dict[str, dict[str, list[np.ndarray]]] = {"at": {}, "best": {}}
        for run_id, run in m.dropna(subset=[y]).groupby("run_id", sort=False):
            xs, ys = run[x].to_numpy(float), run[y].to_numpy(float)
            for reading, values in (("at", ys), ("best", np.maximum.accumulate(ys))):
                line = np.interp(grid, xs, values, left=np.nan, right=np.nan)
                curves[reading].setdefault((variant[run_id], image[run_id]), []).append(line)
        readings = {}
        for reading, by_key in curves.items():
            out = {}
            for name in names:
                per_image = {img: np.mean(by_key[(name, img)], axis=0) for img in images if (name, img) in by_key}
                if not per_image:
                    continue
                mean, lo, hi = _band(np.vstack(list(per_image.values())), seed)
                d = DIGITS[y]
                out[name] = {"mean": _rounded(mean, d), "lo": _rounded(lo, d), "hi": _rounded(hi, d),
                             "images": {img: _rounded(line, d) for img, line in per_image.items()}}
            readings[reading] = out
        plots[f"{y}-{x}"] = {"x": _rounded(grid, DIGITS[x]), "xtitle": AXIS_TITLE[x], "ytitle": AXIS_TITLE[y],
                             "readings": readings}
    return {"variants": names, "images": images,
            "colors": {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}, "plots": plots}


def _layout(title: str, xtitle: str, ytitle: str, height: int = 420) -> dict:
    """A plotly layout with plotly's default template, as JSON-ready dict."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=dict(title=dict(text=title, font=dict(size=15)), xaxis_title=xtitle, yaxis_title=ytitle,
                                height=height, margin=dict(l=60, r=20, t=50, b=50), hovermode="x unified",
                                legend=dict(font=dict(size=11))))
    return json.loads(fig.to_json())["layout"]


def heatmap_figure(runs: pd.DataFrame) -> dict:
    """Final PSNR (seeds averaged) per variant × image, as a plotly figure dict."""
    import plotly.graph_objects as go

    frame = runs.assign(variant=_variants(runs).to_numpy())
    names = variant_order(frame["variant"])
    table = frame.pivot_table(index="variant", columns="image", values="final_psnr", aggfunc="mean")
    table = table.reindex(index=names[::-1])  # plotly draws the first row at the bottom
    z = [[None if not math.isfinite(v) else round(float(v), 2) for v in row] for row in table.to_numpy(float)]
    fig = go.Figure(go.Heatmap(z=z, x=list(table.columns), y=list(table.index), colorscale="Viridis",
                               texttemplate="%{z:.1f}", textfont=dict(size=10), colorbar=dict(title="dB"),
                               hovertemplate="%{y}<br>%{x}: %{z:.2f} dB<extra></extra>"))
    fig.update_layout(title="Final PSNR per image (dB, seeds averaged)", height=160 + 28 * len(names),
                      margin=dict(l=160, r=20, t=50, b=80), xaxis=dict(type="category", tickangle=-45),
                      yaxis=dict(type="category"))
    return json.loads(fig.to_json())


def per_image_tables(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{variant: its rows per image}: final PSNR, SSIM, LPIPS, train-seconds and ms/iteration, seeds averaged."""
    frame = runs.assign(variant=_variants(runs).to_numpy())
    columns = {"final_psnr": "PSNR end", "final_ssim": "SSIM end", "final_lpips": "LPIPS end",
               "train_seconds": "train s", "ms_per_iter": "ms/it"}
    digits = {"PSNR end": 2, "SSIM end": 4, "LPIPS end": 4, "train s": 1, "ms/it": 3}
    out = {}
    for name in variant_order(frame["variant"]):
        part = frame[frame["variant"] == name]
        agg = part.groupby("image")[list(columns)].mean().rename(columns=columns)
        agg.insert(0, "seeds", part.groupby("image").size())
        for col, d in digits.items():
            agg[col] = [f"{v:.{d}f}" if math.isfinite(v) else "—" for v in agg[col].astype(float)]
        out[name] = agg
    return out


# --- header ----------------------------------------------------------------------------------------------------
def store_header(results: str | Path, runs: pd.DataFrame, note: str = "") -> dict[str, Any]:
    """The page header of a store: what it holds, the settings every run shares, its timing groups."""
    shared, varies = [], []
    for col in SETTINGS:
        values = runs[col].astype(str).unique()
        (shared.append(f"{col} = {values[0]}") if len(values) == 1 else varies.append(col))
    keys = ["device", "gpu_name", "execution_mode"]
    timing = runs.assign(**{k: runs[k].fillna("—").astype(str) for k in keys}).groupby(keys).agg(
        runs=("run_id", "size"), train_s=("train_seconds", "sum"), ms_per_it=("ms_per_iter", "median"))
    timing = timing.rename(columns={"train_s": "train-seconds (sum)", "ms_per_it": "ms/it (median)"})
    commits = sorted({json.loads(v or "{}").get("git_commit") or "—" for v in runs["versions"].fillna("{}")})
    header = {
        "title": f"Report of {results}",
        "store": str(results),
        "runs": f"{len(runs)} finished ({int((runs['status'] == 'diverged').sum())} diverged), "
                f"{runs['image'].nunique()} image(s), {runs['seed'].nunique()} seed(s), "
                f"{runs['label'].nunique()} strategy label(s)",
        "shared settings": "; ".join(shared) or "—",
        "settings that vary": ", ".join(varies) or "none",
    }
    if commits and commits != ["—"]:
        header["code"] = ", ".join(commits)
    if note:
        header["cells"] = note
    header["timing groups"] = timing.round(3)
    return header


# --- the page --------------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:0 18px 40px;
color:#222}
h1{font-size:1.5em;margin:18px 0 6px}h2{font-size:1.2em;margin:28px 0 6px;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:18px 0 4px}
dl.header{display:grid;grid-template-columns:max-content auto;gap:3px 14px;margin:8px 0;font-size:.92em}
dl.header dt{font-weight:600;color:#555}dl.header dd{margin:0}
table{border-collapse:collapse;font-size:.85em;margin:6px 0 4px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;white-space:nowrap}
thead th{background:#f3f3f3;position:sticky;top:0}thead th.sortable{cursor:pointer}
thead th[data-dir=asc]::after{content:" ▲"}thead th[data-dir=desc]::after{content:" ▼"}
tbody th{font-weight:normal;background:#fafafa}tbody tr:target,tbody tr:hover{background:#fff6d8}
.caption{font-size:.92em;color:#333;margin:4px 0}.wrap{overflow-x:auto}
.controls{position:sticky;top:0;z-index:5;background:#fff;padding:8px 0;border-bottom:1px solid #eee;font-size:.92em}
.controls label{margin-right:18px}.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:8px}
figure{margin:10px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
nav a{margin-right:14px;font-size:.92em}.per-image{display:flex;flex-wrap:wrap;gap:0 28px}
section:target h3{background:#fff6d8}
"""

SCRIPT = """
(function(){
const page = JSON.parse(document.getElementById('page-data').textContent);
const config = {responsive: true, displaylogo: false};
// tables: a click on a heading sorts by that column (numbers by value, text alphabetically; '—' last)
document.querySelectorAll('table.sortable-table').forEach(function(table){
  table.querySelectorAll('thead th').forEach(function(th, col){
    th.addEventListener('click', function(){
      const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
      table.querySelectorAll('thead th').forEach(function(o){ delete o.dataset.dir; });
      th.dataset.dir = dir;
      const body = table.tBodies[0], sign = dir === 'asc' ? 1 : -1;
      const key = function(row){ const c = row.children[col];
        return {n: c.dataset.sort === undefined ? null : parseFloat(c.dataset.sort), t: c.textContent}; };
      Array.from(body.rows).map(function(r){ return [key(r), r]; }).sort(function(a, b){
        const x = a[0], y = b[0];
        if (x.n !== null && y.n !== null) return sign * (x.n - y.n);
        if (x.n !== null || y.n !== null) return x.n !== null ? -1 : 1;
        if ((x.t === '—') !== (y.t === '—')) return x.t === '—' ? 1 : -1;
        return sign * x.t.localeCompare(y.t);
      }).forEach(function(p){ body.appendChild(p[1]); });
    });
  });
});
// curves: one line per variant (+ its band for the mean over images), for the selected reading and image
const curves = page.curves;
function traces(plot, reading, image, hidden){
  const out = [];
  curves.variants.forEach(function(name){
    const c = plot.readings[reading][name];
    if (!c) return;
    const color = curves.colors[name], visible = hidden.has(name) ? 'legendonly' : true;
    const y = image === '' ? c.mean : c.images[image];
    if (!y) return;
    if (image === '') {
      const bx = [], lo = [], hi = [];
      plot.x.forEach(function(x, i){ if (c.lo[i] !== null && c.hi[i] !== null) { bx.push(x); lo.push(c.lo[i]); hi.push(c.hi[i]); } });
      out.push({x: bx.concat(bx.slice().reverse()), y: hi.concat(lo.slice().reverse()), type: 'scatter',
        mode: 'lines', fill: 'toself', fillcolor: color + '33', line: {width: 0}, hoverinfo: 'skip',
        legendgroup: name, showlegend: false, name: name + ' 95% band', visible: visible});
    }
    out.push({x: plot.x, y: y, type: 'scatter', mode: 'lines', name: name, legendgroup: name,
      line: {color: color, width: 1.8}, visible: visible, hovertemplate: '%{y}<extra>' + name + '</extra>'});
  });
  return out;
}
function hiddenOf(div){
  const hidden = new Set();
  (div.data || []).forEach(function(t){ if (t.showlegend !== false && t.visible === 'legendonly') hidden.add(t.legendgroup); });
  return hidden;
}
function draw(){
  const reading = document.getElementById('reading').value, image = document.getElementById('image').value;
  Object.keys(curves.plots).forEach(function(id){
    const plot = curves.plots[id], div = document.getElementById('plot-' + id);
    const what = (reading === 'best' ? 'best so far' : 'at N') + ', ' + (image === '' ? 'mean over images, 95% CI' : image);
    const layout = Object.assign({}, page.layouts[id], {title: {text: plot.ytitle + ' vs ' + plot.xtitle + ' (' + what + ')', font: {size: 15}}});
    Plotly.react(div, traces(plot, reading, image, hiddenOf(div)), layout, config);
  });
}
document.getElementById('reading').addEventListener('change', draw);
document.getElementById('image').addEventListener('change', draw);
draw();
if (page.heatmap) Plotly.newPlot('plot-heatmap', page.heatmap.data, page.heatmap.layout, config);
document.body.dataset.ready = 'yes';
})();
"""


def _header_html(header: dict[str, Any]) -> str:
    items = []
    for key, value in header.items():
        if key == "title":
            continue
        body = (f'<div class="wrap">{html_table(value, "header-" + re.sub(r"[^a-z]+", "-", key))}</div>'
                if isinstance(value, pd.DataFrame) else html.escape(str(value)))
        items.append(f"<dt>{html.escape(key)}</dt><dd>{body}</dd>")
    return f'<dl class="header">{"".join(items)}</dl>'


def _figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.stem.replace("_", " "))
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def _json_script(data: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def write_html(out_dir: str | Path, runs: pd.DataFrame, metrics: pd.DataFrame,
               tables: dict[str, tuple[pd.DataFrame, str]], per_image: dict[str, pd.DataFrame] | None = None,
               figures: Iterable[Path] = (), header: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """Write <out_dir>/index.html and return its path.

    runs: one row per finished run (run_id, image, seed, label, final_psnr, …; an optional `variant` column
    names the set-up and strategy each line belongs to, default the label); metrics: one row per (run,
    iteration); tables: {name: (table, caption)}, shown as given; per_image: {variant: its rows per image}
    (default: final values per image from the runs); figures: PNGs, those not redrawn here are embedded;
    header: {name: text or DataFrame}, its "title" the page title (default: store_header)."""
    import plotly.offline

    if runs.empty:
        raise BenchError("the HTML report needs at least one finished run; run the benchmark first")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = dict(header) if header is not None else store_header(out_dir, runs)
    title = str(header.get("title", "nint-bench report"))
    per_image = per_image if per_image is not None else per_image_tables(runs)
    anchors = _slugs(list(per_image))
    curves = curve_data(runs, metrics, seed)
    names = curves["variants"]

    parts = [f"<h1>{html.escape(title)}</h1>", _header_html(header)]
    nav = [("tables", "Tables"), ("curves", "Curves"), ("per-image", "Per image")]
    shown = [p for p in figures if Path(p).stem not in REDRAWN]
    if shown:
        nav.append(("figures", "Figures"))
    parts.append("<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in nav) + "</nav>")

    parts.append('<h2 id="tables">Tables</h2>')
    for name, (table, caption) in tables.items():
        if table is None:
            continue
        level = "label" if "label" in table.index.names else ("strategy" if "strategy" in table.index.names else None)
        parts += [f'<h3 id="table-{html.escape(name)}">{html.escape(name)}</h3>',
                  f'<p class="caption">{html.escape(caption)}</p>',
                  f'<div class="wrap">{html_table(table, "table-" + name + "-body", anchors, level)}</div>']
    if not any(t is not None for t, _ in tables.values()):
        parts.append("<p>No table.</p>")

    parts.append('<h2 id="curves">Curves</h2>')
    reading = ('<label>PSNR / SSIM reading <select id="reading"><option value="at">value at N</option>'
               '<option value="best">best so far</option></select></label>')
    options = '<option value="">mean over images (95% CI)</option>' + "".join(
        f'<option value="{html.escape(i)}">{html.escape(i)}</option>' for i in curves["images"])
    parts.append(f'<div class="controls">{reading}<label>image <select id="image">{options}</select></label>'
                 '<span>click a legend entry to hide or show a strategy, double-click to show it alone</span></div>')
    parts.append('<div class="plots">' + "".join(f'<div class="plot" id="plot-{pid}"></div>'
                                                for pid in curves["plots"]) + "</div>")
    layouts = {pid: _layout("", p["xtitle"], p["ytitle"]) for pid, p in curves["plots"].items()}

    parts.append('<h2 id="per-image">Per image</h2><div class="plot" id="plot-heatmap"></div>')
    parts.append('<div class="per-image">' + "".join(
        f'<section id="{anchors[name]}"><h3>{html.escape(name)}</h3>'
        f'<div class="wrap">{html_table(frame, anchors[name] + "-table")}</div></section>'
        for name, frame in per_image.items()) + "</div>")
    if shown:
        parts.append('<h2 id="figures">Figures</h2>' + "".join(_figure_html(Path(p)) for p in shown))

    data = {"curves": curves, "layouts": layouts, "heatmap": heatmap_figure(runs) if names else None}
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            + "\n".join(parts)
            + f'<script type="application/json" id="page-data">{_json_script(data)}</script>'
            + f"<script>{SCRIPT}</script></body></html>\n")
    path = out_dir / "index.html"
    atomic_write_text(page, path)
    return path
