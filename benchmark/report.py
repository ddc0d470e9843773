"""Tables and figures of one results directory, regenerated from its Parquet store alone.

    python run_benchmark.py report --results results/kodak                  # -> results/kodak/report/
    python run_benchmark.py report --results results/tune-kodak --out /tmp/rep \
        --study results/tune-kodak/study.journal --selection-maps

Writes <out>/report.md (every table, the figures, the incomplete runs), tables/<name>.md|.tex|.csv and
figures/<name>.png|.pdf. Rows are strategy labels (e.g. `nint[xi=0.5]`), preceded by every setting that
varies across the runs (model, net = depth×width, mt_ratio, lr, …), so different set-ups are never averaged.

  table_a   PSNR at 250/1000/5000 iterations (those no longer than the longest run), SSIM and LPIPS at the end
  table_b   train-seconds and iterations to first reach 30 and 35 dB, 'k/n reached', % change vs `standard`
  table_c   network size (when several depth×width exist): PSNR at 500/1000/2500 it, train-seconds, % vs standard
  table_d   architecture (when several models exist): PSNR at 60/120 train-seconds, seconds to 25 dB, % vs standard
  ablation  nint-family variants (when several labels exist): PSNR, SSIM, seconds to 30 dB, ΔPSNR vs `nint`

Each cell is the mean over images with a 95% percentile-bootstrap CI (2000 resamples, seeded, so a report is
reproducible). Seeds are averaged per image first and images are resampled (with one image, the seeds are).
Time-to-target means are over the runs that reached the target, and the table says how many did ('—' when
none); '(k/n)' after a cell means only k of the n runs have that value (e.g. shorter runs). % change compares
means with the `standard` row of the same set-up (sampling settings aside; standard ignores them). PSNR at a
time budget is that of the last iteration within it (a run that ended earlier counts with its final PSNR).

Figures: PSNR/SSIM vs iteration and vs train-seconds (mean over images, 95% bootstrap band), final PSNR per
image, and with --study the Optuna optimisation history, parameter importances (≥ 2 parameters) and the slice
of mt_ratio. --selection-maps re-runs short CPU fits of one small image and plots which pixels each strategy
selected at chosen steps (the store keeps no indices).
"""
from __future__ import annotations

import argparse
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from unittest import mock

import numpy as np
import pandas as pd

from .errors import BenchError
from .tune import ArgParser, csv_list

SETTINGS = ["suite", "model", "net", "mt_ratio", "ratio_schedule", "interval", "lr", "lr_schedule", "iters",
            "max_size"]
SAMPLING = {"mt_ratio", "ratio_schedule", "interval"}  # settings the full-batch baseline ignores
ABLATION = {"nint", "nint-released", "ntk", "ntk-only", "residual-only", "random-only"}
BASELINE = "standard"
RESAMPLES = 2000
CURVE_POINTS = 200  # x positions per curve (figures thin long runs to this many)


# --- statistics ----------------------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean; NaNs are dropped, one value gives a zero-width CI."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if np.ptp(v) == 0:  # one value, or all equal: no spread (and no rounding noise around the mean)
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi)


@dataclass(frozen=True)
class Stat:
    """One table cell: mean and CI over images, and how many of the n runs had a value (k)."""

    mean: float
    lo: float
    hi: float
    k: int
    n: int
    digits: int = 2  # how it prints
    counts: bool = True  # print (k/n) when k < n

    def __str__(self) -> str:
        if self.k == 0 or not math.isfinite(self.mean):
            return "—"
        d = self.digits
        text = f"{self.mean:.{d}f} [{self.lo:.{d}f}, {self.hi:.{d}f}]"
        return text + (f" ({self.k}/{self.n})" if self.counts and self.k < self.n else "")


def cell(group: pd.DataFrame, column: str, resamples: int = RESAMPLES, seed: int = 0, digits: int = 2,
         counts: bool = True) -> Stat:
    """Mean over images (seeds averaged per image) with its bootstrap CI; over seeds when there is one image."""
    values = group[column].astype(float)
    per_image = values.groupby(group["image"]).mean()
    units = values if per_image.size == 1 else per_image
    mean, lo, hi = bootstrap_ci(units.to_numpy(), resamples, seed=seed)
    return Stat(mean, lo, hi, int(values.notna().sum()), int(len(values)), digits, counts)


# --- per-run values ------------------------------------------------------------------------------------------
def _net(model: str, params_json: str) -> str:
    """'5×256' (plus non-default extras) from a run's model parameters, the model's defaults filled in."""
    from .models import MODELS

    params = json.loads(params_json or "{}")
    defaults = MODELS[model].defaults if model in MODELS else {}
    full = {**defaults, **params}
    extra = ",".join(f"{k}={v}" for k, v in sorted(full.items())
                     if k not in ("depth", "width") and (k not in defaults or defaults[k] != v))
    size = f"{full['depth']}×{full['width']}" if "depth" in full and "width" in full else ""
    return " ".join(p for p in (size, extra) if p) or "default"


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with `net` (depth×width) and `max_size` (from the config JSON) as columns."""
    runs = runs.copy()
    runs["net"] = [_net(m, p) for m, p in zip(runs["model"], runs["model_params"])]
    runs["max_size"] = [json.loads(c or "{}").get("max_size", 0) for c in runs["config"]]
    return runs


def varying(runs: pd.DataFrame, columns: Sequence[str] = SETTINGS) -> list[str]:
    return [c for c in columns if runs[c].astype(str).nunique() > 1]


def run_values(runs: pd.DataFrame, metrics: pd.DataFrame, iters: Sequence[int] = (), seconds: Sequence[float] = (),
               targets: Sequence[float] = ()) -> pd.DataFrame:
    """One row per run: its settings, PSNR at iterations / train-seconds, seconds and iterations to targets."""
    from .analysis import first_reaching

    out = annotate(runs).set_index("run_id")
    m = metrics.sort_values(["run_id", "iteration"])
    at = m[m["iteration"].isin(list(iters))].pivot_table(index="run_id", columns="iteration", values="psnr",
                                                         aggfunc="first")
    for it in iters:
        out[f"psnr@{it}"] = at[it] if it in at.columns else np.nan
    recorded = m.dropna(subset=["psnr"])  # rows between two --psnr-every evaluations hold no PSNR
    for s in seconds:
        last = recorded[recorded["train_seconds"] <= s].groupby("run_id").tail(1)
        out[f"psnr@{s:g}s"] = last.set_index("run_id")["psnr"]
    for t in targets:
        hit = first_reaching(m, t)
        out[f"s_to_{t:g}"] = hit["train_seconds"]
        out[f"it_to_{t:g}"] = hit["iteration"]
    return out.reset_index()


# --- tables --------------------------------------------------------------------------------------------------
@dataclass
class Column:
    """A table column: a per-run value aggregated into a Stat, or a derived text column."""

    name: str
    source: str  # per-run column, or "" for derived columns
    digits: int = 2
    counts: bool = True  # append (k/n) when some runs lack the value


def aggregate(values: pd.DataFrame, keys: list[str], columns: list[Column], resamples: int = RESAMPLES,
              seed: int = 0) -> pd.DataFrame:
    """Index = keys; a `runs` count and one Stat per column."""
    rows = []
    for key, group in values.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["runs"] = len(group)
        for col in columns:
            row[col.name] = cell(group, col.source, resamples, seed, col.digits, col.counts)
        rows.append(row)
    frame = pd.DataFrame(rows)
    table = frame.drop(columns=keys).set_axis(pd.MultiIndex.from_frame(frame[keys]))  # tuples even for one key
    return table.sort_index(key=lambda level: level.map(_sort_key))


def _sort_key(value: Any) -> Any:
    """Nets sort numerically (3×64 before 3×128), the baseline label first, then alphabetical."""
    if not isinstance(value, str):
        return value
    text = value
    if "×" in text:
        d, _, rest = text.partition("×")
        w = rest.split(" ")[0]
        if d.isdigit() and w.isdigit():
            return f"{int(d):06d}×{int(w):06d}{rest[len(w):]}"
    return "" if text == BASELINE else text


def _baseline(table: pd.DataFrame, row: tuple, keys: list[str], label: str) -> tuple | None:
    """The index of the `label` row of the same set-up (sampling settings aside), or None."""
    pos = {k: i for i, k in enumerate(keys)}
    same = [k for k in keys if k != "label" and k not in SAMPLING]
    candidates = [idx for idx in table.index if idx[pos["label"]] == label
                  and all(idx[pos[k]] == row[pos[k]] for k in same)]
    exact = [idx for idx in candidates if all(idx[pos[k]] == row[pos[k]] for k in keys if k != "label")]
    chosen = exact or candidates
    return chosen[0] if chosen else None


def add_change(table: pd.DataFrame, column: str, name: str, label: str = BASELINE, mode: str = "pct") -> None:
    """Add `name`: each row's mean of `column` vs the `label` row of its set-up (% change, or a difference)."""
    keys = list(table.index.names)
    out = []
    for idx in table.index:
        base = _baseline(table, idx, keys, label)
        mine = table.loc[idx, column]
        ref = table.loc[base, column] if base is not None else None
        if base is None or base == idx or ref.k == 0 or mine.k == 0:
            out.append(math.nan)
        elif mode == "pct":
            out.append(100.0 * (mine.mean / ref.mean - 1.0))
        else:
            out.append(mine.mean - ref.mean)
    table[name] = out


def _present(checkpoints: Sequence[float], limit: float) -> list:
    return [c for c in checkpoints if c <= limit]


def _setting_keys(values: pd.DataFrame, always: Sequence[str] = ()) -> list[str]:
    keys = [c for c in SETTINGS if c in always or c in varying(values)]
    return keys + ["label"]


def table_a(values: pd.DataFrame, checkpoints: Sequence[int] = (250, 1000, 5000), **kw) -> pd.DataFrame:
    """PSNR at the iteration checkpoints that exist, and at the end; SSIM and LPIPS at the end."""
    iters = sorted(values["iters"].unique())
    end = f"@{iters[0]}" if len(iters) == 1 else " end"
    cols = [Column(f"PSNR@{c}", f"psnr@{c}") for c in _present(checkpoints, max(iters))]
    if len(iters) > 1 or iters[0] not in checkpoints:
        cols.append(Column(f"PSNR{end}", "final_psnr"))
    cols += [Column(f"SSIM{end}", "final_ssim", 3), Column(f"LPIPS{end}", "final_lpips", 3)]
    return aggregate(values, _setting_keys(values), cols, **kw)


def table_b(values: pd.DataFrame, targets: Sequence[float] = (30.0, 35.0), **kw) -> pd.DataFrame:
    """Train-seconds and iterations to each target, how many runs reached it, % change vs standard."""
    cols = []
    for t in targets:
        cols += [Column(f"s to {t:g} dB", f"s_to_{t:g}", 2, False), Column(f"it to {t:g} dB", f"it_to_{t:g}", 0, False)]
    table = aggregate(values, _setting_keys(values), cols, **kw)
    for t in targets:
        table[f"reached {t:g} dB"] = [f"{s.k}/{s.n}" for s in table[f"s to {t:g} dB"]]
        add_change(table, f"s to {t:g} dB", f"Δs {t:g} dB")
        add_change(table, f"it to {t:g} dB", f"Δit {t:g} dB")
    order = ["runs"] + [c for t in targets for c in (f"s to {t:g} dB", f"it to {t:g} dB", f"reached {t:g} dB",
                                                     f"Δs {t:g} dB", f"Δit {t:g} dB")]
    return table[order]


def table_c(values: pd.DataFrame, checkpoints: Sequence[int] = (500, 1000, 2500), **kw) -> pd.DataFrame | None:
    """Network size: PSNR at checkpoints and at the end, train-seconds of the run, % time vs standard."""
    if values.groupby("model")["net"].nunique().max() < 2:  # architectures alone differ: that is Table D
        return None
    cols = [Column(f"PSNR@{c}", f"psnr@{c}") for c in _present(checkpoints, values["iters"].max())]
    cols += [Column("PSNR end", "final_psnr"), Column("train s", "train_seconds")]
    table = aggregate(values, _setting_keys(values, ["net"]), cols, **kw)
    add_change(table, "train s", "Δtime")
    return table


def table_d(values: pd.DataFrame, seconds: Sequence[float] = (60.0, 120.0), target: float = 25.0,
            **kw) -> pd.DataFrame | None:
    """Architectures: PSNR at train-second budgets and at the end, seconds to `target`, % vs standard."""
    if values["model"].nunique() < 2:
        return None
    cols = [Column(f"PSNR@{s:g}s", f"psnr@{s:g}s") for s in _present(seconds, values["train_seconds"].max())]
    cols += [Column("PSNR end", "final_psnr"), Column(f"s to {target:g} dB", f"s_to_{target:g}", 2, False)]
    table = aggregate(values, _setting_keys(values, ["model"]), cols, **kw)
    table[f"reached {target:g} dB"] = [f"{s.k}/{s.n}" for s in table[f"s to {target:g} dB"]]
    add_change(table, f"s to {target:g} dB", f"Δs {target:g} dB")
    return table


def table_ablation(values: pd.DataFrame, checkpoints: Sequence[int] = (250, 1000, 5000), target: float = 30.0,
                   **kw) -> pd.DataFrame | None:
    """The nint family by label (ξ, α, λ, switches, single arms): PSNR, SSIM, seconds to target, ΔPSNR vs nint."""
    part = values[values["strategy"].isin(ABLATION)]
    if part["label"].nunique() < 2:
        return None
    cols = [Column(f"PSNR@{c}", f"psnr@{c}") for c in _present(checkpoints, part["iters"].max())]
    cols += [Column("PSNR end", "final_psnr"), Column("SSIM end", "final_ssim", 3),
             Column(f"s to {target:g} dB", f"s_to_{target:g}", 2, False)]
    table = aggregate(part, _setting_keys(part), cols, **kw)
    table[f"reached {target:g} dB"] = [f"{s.k}/{s.n}" for s in table[f"s to {target:g} dB"]]
    add_change(table, "PSNR end", "ΔPSNR end vs nint (dB)", label="nint", mode="diff")
    return table


# --- rendering -----------------------------------------------------------------------------------------------
def _key_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def text_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text: Stats as 'mean [lo, hi]', changes as '+12.3%' / '−0.40', missing as '—'."""
    out = table.copy().astype(object)
    out.index = pd.MultiIndex.from_tuples([tuple(map(_key_text, idx)) for idx in table.index], names=table.index.names)
    for col in table.columns:
        def fmt(v, col=col):
            if isinstance(v, Stat):
                return str(v)
            if isinstance(v, float):
                if not math.isfinite(v):
                    return "—"
                text = f"{v:+.1f}%" if col.startswith("Δ") and "(dB)" not in col else f"{v:+.2f}"
                return text.replace("-", "−")
            return str(v)
        out[col] = [fmt(v) for v in table[col]]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    flat = table.reset_index()
    esc = [[str(v).replace("|", "\\|") for v in row] for row in flat.astype(str).to_numpy()]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc]) + "\n"


def to_csv(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers for machines: each Stat becomes <col>, <col>_lo, <col>_hi, <col>_k, <col>_n."""
    out = {}
    for col in table.columns:
        if any(isinstance(v, Stat) for v in table[col]):
            for part in ("mean", "lo", "hi", "k", "n"):
                name = col if part == "mean" else f"{col}_{part}"
                out[name] = [getattr(v, part) for v in table[col]]
        else:
            out[col] = list(table[col])
    return pd.DataFrame(out, index=table.index)


def write_table(table: pd.DataFrame, name: str, caption: str, folder: Path) -> str:
    """tables/<name>.md, .tex and .csv; returns the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    shown = text_table(table)
    md = to_markdown(shown)
    (folder / f"{name}.md").write_text(f"{caption}\n\n{md}")
    (folder / f"{name}.tex").write_text(shown.to_latex(escape=True, caption=caption, label=f"tab:{name}"))
    to_csv(table).to_csv(folder / f"{name}.csv")
    return md


# --- figures -------------------------------------------------------------------------------------------------
def _variant_names(values: pd.DataFrame) -> pd.Series:
    """A short name per run: the varying settings, then the label ('siren 3×64 · nint')."""
    return values[_setting_keys(values)].map(_key_text).agg(" · ".join, axis=1)


def _hue_order(names) -> list[str]:
    """The baseline first, then alphabetical, in every figure alike."""
    return sorted(set(names), key=lambda n: (n.split(" · ")[-1] != BASELINE, n))


def curve_frame(values: pd.DataFrame, metrics: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """(variant, image, x, y) on a common grid of ≤ CURVE_POINTS x values, seeds averaged per image, up to the
    end of the variant's shortest run."""
    variant = dict(zip(values["run_id"], _variant_names(values)))
    image = dict(zip(values["run_id"], values["image"]))
    m = metrics[metrics["run_id"].isin(variant)].dropna(subset=[y]).sort_values(["run_id", "iteration"])
    if m.empty:
        return pd.DataFrame(columns=["variant", "image", x, y])
    grid = np.unique(np.linspace(0.0, float(m[x].max()), CURVE_POINTS))
    if x == "iteration":
        grid = np.unique(grid.round())
    parts = []
    for run_id, run in m.groupby("run_id", sort=False):
        ys = np.interp(grid, run[x].to_numpy(float), run[y].to_numpy(float), left=np.nan, right=np.nan)
        parts.append(pd.DataFrame({"variant": variant[run_id], "image": image[run_id], x: grid, y: ys}))
    frame = pd.concat(parts).dropna(subset=[y]).groupby(["variant", "image", x], as_index=False)[y].mean()
    # A mean over a changing set of images would jump where the shortest run ends (runs of one strategy end
    # at different train-seconds): keep only the x values that every image of the variant reaches.
    present = frame.groupby(["variant", x])["image"].transform("size")
    images = frame.groupby("variant")["image"].transform("nunique")
    return frame[present == images].reset_index(drop=True)


def _save(fig, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return folder / f"{name}.png"


def curve_figures(values: pd.DataFrame, metrics: pd.DataFrame, folder: Path, seed: int = 0,
                  resamples: int = RESAMPLES) -> list[Path]:
    """PSNR and SSIM vs iteration and vs train-seconds: mean over images with a 95% bootstrap band.

    The bands use bootstrap_ci (vectorised) rather than seaborn's estimator, which loops in Python per
    resample and takes minutes on a full suite."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    paths = []
    for y, ylabel in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        for x, xlabel in (("iteration", "iteration"), ("train_seconds", "train-seconds")):
            frame = curve_frame(values, metrics, x, y)
            if frame.empty:
                continue
            order = _hue_order(frame["variant"])
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for variant, color in zip(order, sns.color_palette(n_colors=len(order))):
                part = frame[frame["variant"] == variant]
                band = pd.DataFrame([bootstrap_ci(g.to_numpy(), resamples, seed=seed) for _, g in part.groupby(x)[y]],
                                    index=sorted(part[x].unique()), columns=["mean", "lo", "hi"])
                ax.plot(band.index, band["mean"], color=color, label=variant)
                ax.fill_between(band.index, band["lo"], band["hi"], color=color, alpha=0.2, linewidth=0)
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs {xlabel} (mean over images, 95% CI)")
            ax.legend(fontsize="small")
            paths.append(_save(fig, folder, f"{y}_vs_{'seconds' if x == 'train_seconds' else 'iteration'}"))
    return paths


def final_psnr_figure(values: pd.DataFrame, folder: Path, seed: int = 0) -> Path:
    """Final PSNR per image and variant (dots; 95% CI over seeds when there are several)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = values.assign(variant=_variant_names(values).to_numpy())
    width = max(6.0, 0.6 * frame["image"].nunique() * max(1.0, frame["variant"].nunique() / 3))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    sns.pointplot(data=frame, x="image", y="final_psnr", hue="variant", hue_order=_hue_order(frame["variant"]),
                  dodge=0.5 if frame["variant"].nunique() > 1 else False, linestyle="none", errorbar=("ci", 95),
                  seed=seed, ax=ax)
    ax.set(xlabel="image", ylabel="final PSNR (dB)", title="final PSNR per image")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small")
    return _save(fig, folder, "final_psnr_per_image")


# --- selection maps ------------------------------------------------------------------------------------------
def batch_mask(batch, height: int, width: int) -> np.ndarray:
    """Which pixels a Batch trains on, as an (H, W) bool mask (off-grid coordinates: the nearest pixel)."""
    mask = np.zeros(height * width, dtype=bool)
    if batch.indices is not None:
        mask[batch.indices.detach().cpu().numpy()] = True
    elif batch.coords is not None:
        c = (batch.coords.detach().cpu().numpy() + 1.0) / 2.0
        rows = np.clip(np.round(c[:, 0] * (height - 1)), 0, height - 1).astype(int)
        cols = np.clip(np.round(c[:, 1] * (width - 1)), 0, width - 1).astype(int)
        mask[rows * width + cols] = True
    else:
        mask[:] = True
    return mask.reshape(height, width)


def record_selections(selector: str, image: np.ndarray, steps: Sequence[int], mt_ratio: float = 0.2,
                      model: str = "siren", model_params: dict | None = None, seed: int = 0) -> dict[int, np.ndarray]:
    """Fit `image` on the CPU for max(steps)+1 iterations and return the selected-pixel mask at each step.

    The strategy class's `select` is wrapped for the duration of the fit, so the masks are exactly what the
    fit loop trained on (a reused batch on non-recompute steps included)."""
    import datasets
    from strategies import resolve

    from .config import RunConfig
    from .fit import fit
    from .runner import parse_strategies

    (name, params), = parse_strategies(selector)
    cls, full = resolve(name, params)
    height, width = image.shape[:2]
    wanted, masks = set(steps), {}
    original = cls.select

    def select(self, step):
        batch = original(self, step)
        if step in wanted:
            masks[step] = batch_mask(batch, height, width)
        return batch

    cfg = RunConfig(image="selection-map", image_sha256=datasets.pixels_sha256(image), strategy=name, params=full,
                    model=model, model_params=dict(model_params or {}), mt_ratio=mt_ratio, iters=max(steps) + 1,
                    eval_every=max(steps) + 1, seed=seed)
    with mock.patch.object(cls, "select", select):
        fit(cfg, image, "cpu")
    return masks


def maps_image(spec: str, size: int) -> np.ndarray:
    """A builtin image id (astronaut, coffee, chelsea) or an image file, downscaled to `size`."""
    import datasets

    if Path(spec).is_file():
        img = datasets.load_image(spec)
    elif spec in datasets.BUILTIN_IMAGES:
        img = next(r for r in datasets.builtin() if r.id == spec).read()
    else:
        raise BenchError(f"--maps-image {spec!r} is neither an image file nor a builtin image "
                         f"({', '.join(datasets.BUILTIN_IMAGES)})")
    return datasets.to_uint8(datasets.resize_longest(img, size))


def selection_map_figure(selectors: Sequence[str], image: np.ndarray, steps: Sequence[int], folder: Path,
                         mt_ratios: dict[str, float] | None = None, seed: int = 0) -> Path:
    """Rows = strategies, columns = steps: the selected pixels in red over the faded image."""
    import matplotlib.pyplot as plt

    steps = sorted(set(steps))
    fig, axes = plt.subplots(len(selectors), len(steps), figsize=(1.8 * len(steps) + 1, 1.9 * len(selectors)),
                             squeeze=False, layout="constrained")
    gray = image.astype(float).mean(axis=2) / 255.0
    for r, selector in enumerate(selectors):
        masks = record_selections(selector, image, steps, (mt_ratios or {}).get(selector, 0.2), seed=seed)
        for c, step in enumerate(steps):
            overlay = np.dstack([0.35 + 0.3 * gray] * 3)
            overlay[masks[step]] = (0.85, 0.1, 0.1)
            ax = axes[r, c]
            ax.imshow(overlay, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"step {step}: {int(masks[step].sum())} px", fontsize=8)
            if c == 0:
                ax.set_ylabel(selector, fontsize=8)
    fig.suptitle("pixels selected (red) at each step")
    return _save(fig, folder, "selection_maps")


# --- Optuna --------------------------------------------------------------------------------------------------
def study_report(spec: str, name: str | None, folder: Path) -> tuple[str, list[Path]]:
    """Markdown summary of a tuning study and its plots (history, importances, slice of mt_ratio)."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from .tune import open_storage

    storage = open_storage(spec, create=False)
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise BenchError(f"{spec} holds {len(names)} studies ({', '.join(names) or 'none'}); pick one with --study-name")
        name = names[0]
    elif name not in names:
        raise BenchError(f"{spec} has no study {name!r}; it has {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=name, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    lines = [f"Study `{name}` ({study.direction.name.lower()}): "
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "."]
    paths: list[Path] = []
    if not complete:
        return "\n".join(lines + ["No complete trial: no plots."]), paths
    best = study.best_trial
    lines.append(f"Best: trial #{best.number}, value {best.value:.4g}, params "
                 + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
                 + f"; runs {', '.join(best.user_attrs.get('run_ids', []))}.")
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    trials["duration"] = trials["duration"].dt.total_seconds().round(1)
    shown = trials.set_index("number").map(lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    lines += ["", to_markdown(shown.rename(columns=lambda c: c.replace("params_", "").replace("duration", "seconds")))]
    params = sorted({p for t in complete for p in t.params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plots = [("optuna_history", lambda: ovm.plot_optimization_history(study))]
        if len(params) >= 2 and len(complete) >= 2:
            plots.append(("optuna_importance", lambda: ovm.plot_param_importances(study)))
        else:
            lines.append(f"Parameter importances skipped: they need ≥ 2 parameters and ≥ 2 complete trials "
                         f"(here {len(params)} and {len(complete)}).")
        plots.append(("optuna_slice", lambda: ovm.plot_slice(study, params=["mt_ratio"] if "mt_ratio" in params else None)))
        for fname, plot in plots:
            ax = plot()
            fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).figure
            paths.append(_save(fig, folder, fname))
    plt.close("all")
    return "\n".join(lines), paths


# --- incomplete runs -----------------------------------------------------------------------------------------
def incomplete_runs(results: str | Path) -> pd.DataFrame:
    """Store.incomplete() with what is known of each: status (failed, pruned, or orphan metrics), label, error."""
    from .store import Store

    store = Store(results)
    ids = store.incomplete()
    runs = store.runs().set_index("run_id")
    rows = []
    for run_id in ids:
        if run_id in runs.index:
            r = runs.loc[run_id]
            rows.append({"run_id": run_id, "status": r["status"], "label": r["label"], "image": r["image"],
                         "seed": r["seed"], "error": "" if pd.isna(r["error"]) else str(r["error"]).split(" | ")[0][:160]})
        else:
            m = store.metrics({run_id})
            first = m.iloc[0] if len(m) else {}
            rows.append({"run_id": run_id, "status": "orphan (metrics, no run row: killed mid-write)",
                         "label": first.get("strategy", ""), "image": first.get("image", ""),
                         "seed": first.get("seed", ""), "error": ""})
    return pd.DataFrame(rows, columns=["run_id", "status", "label", "image", "seed", "error"])


# --- the report ----------------------------------------------------------------------------------------------
def build_report(results: str | Path, out: str | Path | None = None, study: str | None = None,
                 study_name: str | None = None, selection_maps: bool = False, maps_image_spec: str = "astronaut",
                 maps_size: int = 32, maps_steps: Sequence[int] = (0, 10, 50, 99),
                 maps_strategies: Sequence[str] | None = None, iter_checkpoints: Sequence[int] = (250, 1000, 5000),
                 size_checkpoints: Sequence[int] = (500, 1000, 2500), seconds: Sequence[float] = (60.0, 120.0),
                 targets: Sequence[float] = (30.0, 35.0), arch_target: float = 25.0, resamples: int = RESAMPLES,
                 seed: int = 0, html: bool = True) -> dict[str, Any]:
    """Write every table and figure (and with `html` the page index.html); returns {"report": path, "tables":
    {name: DataFrame}, "figures": [paths], "incomplete": DataFrame, "html": path or None}."""
    from .store import load

    results = Path(results)
    out = Path(out) if out else results / "report"
    runs, metrics = load(results)
    if runs.empty:
        raise BenchError(f"{results} holds no finished runs; run the benchmark with --out {results} first")
    if resamples < 1:
        raise BenchError(f"--resamples must be >= 1, got {resamples}")
    if study is not None:  # a wrong --study fails now, not after every table and figure is written
        from .tune import open_storage

        open_storage(study, create=False)
    all_targets = sorted({*targets, arch_target, 30.0})
    values = run_values(runs, metrics, sorted({*iter_checkpoints, *size_checkpoints}), seconds, all_targets)
    kw = {"resamples": resamples, "seed": seed}
    tables = {
        "table_a": (table_a(values, iter_checkpoints, **kw), "Table A: PSNR at fixed iterations; SSIM and LPIPS at the end"),
        "table_b": (table_b(values, targets, **kw), "Table B: train-seconds and iterations to first reach each PSNR "
                    f"target; Δ: % change vs {BASELINE} of the same set-up"),
        "table_c": (table_c(values, size_checkpoints, **kw), "Table C: network size (depth × width); train s: "
                    f"train-seconds of the whole run; Δ: % change vs {BASELINE}"),
        "table_d": (table_d(values, seconds, arch_target, **kw), "Table D: architectures; PSNR at train-second "
                    f"budgets; Δ: % change vs {BASELINE}"),
        "ablation": (table_ablation(values, iter_checkpoints, 30.0, **kw), "Ablation: NINT hybrid parameters"),
    }
    note = ("Cells: mean over images [95% bootstrap CI]; '(k/n)': only k of n runs have a value; '—': none has. "
            "Time-to-target means are over the runs that reached the target.")
    doc = [f"# Report of `{results}`", "",
           f"{len(runs)} finished runs ({runs['status'].eq('diverged').sum()} diverged), "
           f"{runs['image'].nunique()} image(s), {runs['seed'].nunique()} seed(s), labels: "
           + ", ".join(f"`{lbl}`" for lbl in sorted(runs["label"].unique())) + ".", "", note, ""]
    kept = {}
    for name, (table, caption) in tables.items():
        if table is None:
            continue
        kept[name] = table
        doc += [f"## {caption}", "", write_table(table, name, caption, out / "tables"), ""]
    figures_dir = out / "figures"
    figures = curve_figures(values, metrics, figures_dir, seed) + [final_psnr_figure(values, figures_dir, seed)]
    if selection_maps:
        labels = list(maps_strategies or sorted(runs["label"].unique()))
        ratios = runs.groupby("label")["mt_ratio"].first().to_dict()
        figures.append(selection_map_figure(labels, maps_image(maps_image_spec, maps_size), maps_steps, figures_dir,
                                            ratios, seed))
    if study:
        summary, paths = study_report(study, study_name, figures_dir)
        figures += paths
        doc += ["## Tuning study", "", summary, ""]
    doc += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        doc += ["## Diverged runs", "", to_markdown(diverged.set_index("run_id")[["label", "image", "seed", "diverged_at"]])]
    missing = incomplete_runs(results)
    doc += ["## Incomplete runs", ""]
    doc += [to_markdown(missing.set_index("run_id")) if len(missing) else "None: every run of the store finished.", ""]
    report = out / "report.md"
    report.write_text("\n".join(doc))
    page = None
    if html:
        from .html_report import store_header, write_html

        page = write_html(out, values.assign(variant=_variant_names(values).to_numpy()), metrics,
                          {name: (text_table(t), tables[name][1]) for name, t in kept.items()}, None, figures,
                          store_header(results, runs, note), seed)
    return {"report": report, "tables": kept, "figures": figures, "incomplete": missing, "html": page}


def parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="run_benchmark.py report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="a results directory (results/<name>)")
    p.add_argument("--out", help="output folder (default <results>/report)")
    p.add_argument("--study", help="an Optuna study storage: tune's <out>/study.journal or an RDB URL")
    p.add_argument("--study-name", help="the study in --study (default: its only one)")
    p.add_argument("--selection-maps", action="store_true", help="re-run short CPU fits to map the selected pixels")
    p.add_argument("--maps-image", default="astronaut", help="builtin image id or image file for the maps")
    p.add_argument("--maps-size", type=int, default=32, help="longest side of the maps' image")
    p.add_argument("--maps-steps", default="0,10,50,99", help="steps to show (the fit runs max+1 iterations)")
    p.add_argument("--maps-strategies", help="selectors to map (default: every label in the results)")
    p.add_argument("--iters", default="250,1000,5000", help="Table A / ablation iteration checkpoints")
    p.add_argument("--size-iters", default="500,1000,2500", help="Table C iteration checkpoints")
    p.add_argument("--seconds", default="60,120", help="Table D train-second budgets")
    p.add_argument("--targets", default="30,35", help="Table B PSNR targets (dB)")
    p.add_argument("--arch-target", type=float, default=25.0, help="Table D PSNR target (dB)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples per cell")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                   help="also write <out>/index.html, one self-contained interactive page (default: on)")
    return p


def _numbers(text: str, flag: str, cast=float) -> list:
    try:
        values = [cast(v) for v in csv_list(text)]
    except ValueError:
        raise BenchError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise BenchError(f"{flag} values must be >= 0, got {text!r}")
    return values


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    args = parser().parse_args(argv)
    steps = _numbers(args.maps_steps, "--maps-steps", int)
    if args.selection_maps and not steps:
        raise BenchError("--maps-steps names no step; e.g. --maps-steps 0,10,50,99")
    if args.maps_size < 4:
        raise BenchError(f"--maps-size must be >= 4 pixels, got {args.maps_size}")
    from .runner import split_top

    result = build_report(
        args.results, args.out, args.study, args.study_name, args.selection_maps, args.maps_image, args.maps_size,
        steps, split_top(args.maps_strategies) if args.maps_strategies else None,
        _numbers(args.iters, "--iters", int), _numbers(args.size_iters, "--size-iters", int),
        _numbers(args.seconds, "--seconds"), _numbers(args.targets, "--targets"), args.arch_target,
        args.resamples, args.seed, args.html)
    print(f"report: {result['report']} ({len(result['tables'])} tables, {len(result['figures'])} figures, "
          f"{len(result['incomplete'])} incomplete runs)" + (f"; page: {result['html']}" if result["html"] else ""))
    return 0
