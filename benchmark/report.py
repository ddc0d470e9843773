"""Tables and figures of one results directory, regenerated from its Parquet store alone.

    python3 run_benchmark.py report --results results/kodak       # -> results/kodak/report/
    python3 run_benchmark.py report --results results/tune-kodak --study results/tune-kodak/study.journal --selection-maps

Writes <out>/report.md (every table, the figures, the incomplete runs), tables/<name>.md|.tex|.csv and
figures/<name>.png|.pdf. Rows are strategy labels (e.g. `nint[xi=0.5]`), preceded by every setting that
varies across the runs (model, net = depth×width, mt_ratio, lr, …), so different set-ups are never averaged.

  table_a        PSNR at 250/1000/5000 iterations (those the runs reach) and at the end, SSIM and LPIPS at the end
  psnr_readings  the three PSNR readings side by side at each checkpoint
  table_b        iterations and train-seconds to first reach 30 and 35 dB: 'k/n reached', censoring-aware medians
  table_c        network size (when several depth×width exist): PSNR at 500/1000/2500 it, train-seconds
  table_d        architecture (when several models exist): PSNR at 60/120 train-seconds, seconds to 25 dB
  ablation       nint-family variants (when several labels exist): PSNR, SSIM, time to 30 dB, against `nint`

Every table of means is over one image set: the (image, seed) pairs that every row finished; its note lists the
pairs left out and why (missing, failed, diverged), and a row present on fewer than half of the pairs gets a
table of its own; a store that holds several suites gets every table once per suite (<table>_<suite>). Cells
are means over images (seeds averaged per image first). PSNR columns use one named reading (--psnr-reading):
best so far (default, the NINT/INT releases' reading), at the iteration, or the median of the last 5% of
iterations. Times and iterations to a target are medians over all runs with "not reached"
counted as later than any reached ('>T' when the median is such a run), next to 'k/n reached'.

Next to each table of means: <name>_vs_<reference> (against --baseline, default `standard`, and against `int`
when it ran; the ablation against `nint`), with, per strategy and column, the paired mean difference (or the
geometric mean ratio for times and iterations, over images where both reached the target), its 95% interval over
images (Student-t, or --interval bca; none below 3 images), the images where it is better, and the Wilcoxon
signed-rank p Holm-corrected across the strategies of the column (benchmark/paired.py); and <name>_per_image
(one row per run). Tables with train-seconds hold one timing group (GPU, execution mode, TF32, compile mode, bf16
scoring, graph steps, PSNR period, timing source) each, named in the caption (several groups: <name>_t1, _t2,
…); runs that shared a device (execution mode shared-K) get no time columns, since their seconds include
waiting. PSNR at a time budget is that of the last evaluated iteration within it.

Figures (Table A's rows over its image set): PSNR (the same reading) and SSIM vs iteration and vs train-seconds
(one figure per timing group), mean over images with a 95% bootstrap band, one panel per strategy against the
baseline when there are more than five; the PSNR at the end per image; and with --study the Optuna optimisation history, parameter importances (≥ 2 parameters) and the slice
of mt_ratio. --selection-maps re-runs short CPU fits of one small image and plots which pixels each strategy
selected at chosen steps (the store keeps no indices).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .analysis import READINGS, is_shared, psnr_readings, reading_name, timing_group
from .errors import BenchError
from .argparsing import ArgParser, HelpFormatter
from .paired import INTERVALS, CensoredMedian, Comparison, censored_median, compare, with_holm
from .tune import csv_list

SETTINGS = ["suite", "model", "net", "mt_ratio", "ratio_schedule", "interval", "lr", "lr_schedule", "iters",
            "max_size"]
SAMPLING = {"mt_ratio", "ratio_schedule", "interval"}  # settings the full-batch baseline ignores
ABLATION = {"nint", "nint-released", "ntk", "ntk-only", "residual-only", "random-only"}
BASELINE = "standard"
SECOND_REFERENCE = "int"  # the report also compares every strategy with INT when it ran
RESAMPLES = 2000
CURVE_POINTS = 200  # x positions per curve (figures thin long runs to this many)


# --- statistics ----------------------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float], resamples: int = RESAMPLES, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap band of a mean, for the figures' curves only (the tables compare
    strategies with paired statistics, benchmark/paired.py). NaNs are dropped; one value gives no spread."""
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
    """A cell of a table of means: the mean over images (seeds averaged per image), and how many of the n
    runs had a value (k). No interval: the spread of one strategy's mean over images mostly says how hard the
    images are; the uncertainty that matters, of a difference, is in the paired comparison tables."""

    mean: float
    k: int
    n: int
    digits: int = 2  # how it prints
    counts: bool = True  # print (k/n) when k < n

    def __str__(self) -> str:
        if self.k == 0 or not math.isfinite(self.mean):
            return "—"
        text = f"{self.mean:.{self.digits}f}"
        return text + (f" ({self.k}/{self.n})" if self.counts and self.k < self.n else "")


def cell(group: pd.DataFrame, column: str, digits: int = 2, counts: bool = True) -> Stat:
    """Mean over images, the seeds of an image averaged first."""
    values = group[column].astype(float)
    per_image = values.groupby(group["image"]).mean()
    return Stat(float(per_image.mean()) if per_image.notna().any() else math.nan, int(values.notna().sum()),
                int(len(values)), digits, counts)


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
    """Runs with `net` (depth×width), `max_size` (from the config JSON) and `timing_group` as columns."""
    runs = runs.copy()
    runs["net"] = [_net(m, p) for m, p in zip(runs["model"], runs["model_params"])]
    runs["max_size"] = [json.loads(c or "{}").get("max_size", 0) for c in runs["config"]]
    runs["timing_group"] = [timing_group(r) for r in runs.to_dict("records")]
    return runs


def varying(runs: pd.DataFrame, columns: Sequence[str] = SETTINGS) -> list[str]:
    return [c for c in columns if runs[c].astype(str).nunique() > 1]


def run_values(runs: pd.DataFrame, metrics: pd.DataFrame, iters: Sequence[int] = (), seconds: Sequence[float] = (),
               targets: Sequence[float] = ()) -> pd.DataFrame:
    """One row per run: its settings and timing group; the three PSNR readings at `iters` and at its end
    (`at@N`, `best@N`, `last5@N`; `psnr@N` = `at@N`); PSNR at train-seconds; seconds and iterations to
    targets (NaN when never reached) and how far the run went (`iters_done`, `train_seconds`)."""
    from .analysis import first_reaching

    out = annotate(runs).set_index("run_id")
    m = metrics.sort_values(["run_id", "iteration"])
    readings = psnr_readings(m, list(iters))
    for col in readings.columns:
        out[col] = readings[col]
    for it in iters:
        out[f"psnr@{it}"] = out[f"at@{it}"]
    out["iters_done"] = m.groupby("run_id")["iteration"].max()
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
    """A table column: a per-run value, aggregated into a Stat (mean over images) or, for a time/iteration
    to a target, a censoring-aware median over runs; compared per image with the reference row."""

    name: str
    source: str  # per-run column
    digits: int = 2
    counts: bool = True  # append (k/n) when some runs lack the value
    better: str = "higher"  # higher | lower (differences) | faster (ratios, lower is better) | "" (no comparison)
    timed: bool = False  # train-seconds: one timing group per table, none for shared devices
    budget: str = ""  # for a target column: the per-run column that a run which never reached exceeds


@dataclass
class TableResult:
    """One table of means with everything a reader needs to trust it (see build_report's return value)."""

    name: str
    caption: str
    means: pd.DataFrame  # index: the setting keys + label; cells Stat | CensoredMedian | text
    per_image: pd.DataFrame  # index: keys + image + seed; one number per column and run; `in means`
    comparisons: dict[str, pd.DataFrame]  # reference label -> table of paired Comparison cells
    units: list[tuple[str, int]]  # the (image, seed) pairs every row of `means` is over
    left_out: pd.DataFrame  # image, seed, label, reason (missing | failed | diverged) of pairs not in `units`
    note: str
    timing: str | None = None  # the timing group of a table with time columns
    suite: str | None = None  # the suite of a table when the store holds several (each gets its own tables)


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


def _reference_row(rows: Sequence[tuple], row: tuple, keys: list[str], label: str) -> tuple | None:
    """The `label` row of the same set-up (sampling settings aside: the full-batch baseline ignores them)."""
    pos = {k: i for i, k in enumerate(keys)}
    same = [k for k in keys if k != "label" and k not in SAMPLING]
    candidates = [idx for idx in rows if idx[pos["label"]] == label
                  and all(idx[pos[k]] == row[pos[k]] for k in same)]
    exact = [idx for idx in candidates if all(idx[pos[k]] == row[pos[k]] for k in keys if k != "label")]
    chosen = exact or candidates
    return chosen[0] if chosen else None


def _setting_keys(values: pd.DataFrame, always: Sequence[str] = ()) -> list[str]:
    keys = [c for c in SETTINGS if c in always or c in varying(values)]
    return keys + ["label"]


def _row_keys(values: pd.DataFrame, keys: list[str]) -> pd.Series:
    return pd.Series(list(zip(*(values[k] for k in keys))), index=values.index)


def _units(frame: pd.DataFrame) -> set[tuple[str, int]]:
    return set(zip(frame["image"], frame["seed"].astype(int)))


def _in_units(frame: pd.DataFrame, units: set) -> np.ndarray:
    return np.array([(i, int(s)) in units for i, s in zip(frame["image"], frame["seed"])], dtype=bool)


def one_timing_group(values: pd.DataFrame, what: str) -> str:
    """The timing group of `values`; a one-line BenchError when they mix several (times are not comparable)."""
    groups = sorted(values["timing_group"].unique())
    if len(groups) != 1:
        raise BenchError(f"{what} would mix {len(groups)} timing groups ({'; '.join(groups)}); times are comparable "
                         "within one group only: select the runs of one group (the report writes one table per group)")
    return groups[0]


def common_units(values: pd.DataFrame, keys: list[str], failed: set[tuple] = frozenset(),
                 split_sparse: bool = True) -> tuple[set, list[tuple], list[tuple], pd.DataFrame]:
    """(units, main rows, sparse rows, left_out): the (image, seed) pairs that every main row finished
    without diverging; rows present on fewer than half of the pairs of the best-covered row are `sparse`
    (shown in tables of their own, not averaged over another set). `failed`: (label, image, seed) of runs
    that failed. left_out lists, per pair not in `units`, each main row lacking it and why."""
    row_of = _row_keys(values, keys)
    ok = values["status"] == "ok"
    covered = {r: _units(values[ok & (row_of == r)]) for r in dict.fromkeys(row_of)}
    best = max((len(u) for u in covered.values()), default=0)
    sparse = [r for r, u in covered.items() if split_sparse and 2 * len(u) < best]
    main = [r for r in covered if r not in sparse]
    units = set.intersection(*(covered[r] for r in main)) if main else set()
    everything = set().union(*(_units(values[row_of == r]) for r in main)) if main else set()
    label_pos = keys.index("label")
    rows = []
    for image, seed in sorted(everything - units):
        for r in main:
            if (image, seed) in covered[r]:
                continue
            mine = values[(row_of == r) & (values["image"] == image) & (values["seed"] == seed)]
            reason = ("diverged" if (mine["status"] == "diverged").any()
                      else "failed" if (r[label_pos], image, seed) in failed else "missing")
            rows.append({"image": image, "seed": seed, "label": " · ".join(map(_key_text, r)), "reason": reason})
    return units, main, sparse, pd.DataFrame(rows, columns=["image", "seed", "label", "reason"])


def _means(part: pd.DataFrame, keys: list[str], columns: list[Column]) -> pd.DataFrame:
    rows = []
    for key, group in part.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row["runs"] = len(group)
        for col in columns:
            if col.budget:
                row[col.name] = censored_median(group[col.source], group[col.budget], col.digits)
            else:
                row[col.name] = cell(group, col.source, col.digits, col.counts)
        rows.append(row)
    frame = pd.DataFrame(rows)
    table = frame.drop(columns=keys).set_axis(pd.MultiIndex.from_frame(frame[keys]))  # tuples even for one key
    return table.sort_index(key=lambda level: level.map(_sort_key))


def _comparisons(part: pd.DataFrame, keys: list[str], columns: list[Column], order: list[tuple], reference: str,
                 interval: str, seed: int) -> pd.DataFrame | None:
    """Each row against the `reference` row of its set-up: a paired Comparison per column (Holm per column)."""
    row_of = _row_keys(part, keys)
    label_pos = keys.index("label")
    compared = [c for c in columns if c.better]
    cells: dict[tuple, dict[str, Comparison]] = {}
    for row in order:
        ref = _reference_row(order, row, keys, reference)
        if row[label_pos] == reference or ref is None:
            continue
        mine = part[row_of == row].set_index(["image", "seed"])
        base = part[row_of == ref].set_index(["image", "seed"])
        cells[row] = {c.name: compare(mine[c.source], base[c.source], "ratio" if c.better == "faster" else "diff",
                                      c.better == "higher", interval, seed=seed, digits=c.digits) for c in compared}
    if not cells:
        return None
    frame = pd.DataFrame.from_dict(cells, orient="index")
    frame.index = pd.MultiIndex.from_tuples(list(cells), names=keys)
    for c in compared:
        frame[c.name] = with_holm(list(frame[c.name]))
    return frame.rename(columns={c.name: f"Δ {c.name}" if c.better != "faster" else f"{c.name} ratio"
                                 for c in compared})


def _per_image(part: pd.DataFrame, keys: list[str], columns: list[Column], units: set) -> pd.DataFrame:
    cols = list(dict.fromkeys(c.source for c in columns))
    table = part[keys + ["image", "seed", "status"] + cols].copy()
    table["in means"] = _in_units(table, units)
    table = table.rename(columns={c.source: c.name for c in columns})
    table = table.set_index(keys + ["image", "seed"]).sort_index(key=lambda level: level.map(_sort_key))
    return table


def _unit_text(units: Sequence[tuple]) -> str:
    images = sorted({i for i, _ in units})
    seeds = sorted({s for _, s in units})
    shown = ", ".join(images[:8]) + (f", … ({len(images)} images)" if len(images) > 8 else "")
    return f"{len(images)} image(s) ({shown}) × {len(seeds)} seed(s) ({', '.join(map(str, seeds))})"


def build_table(values: pd.DataFrame, name: str, caption: str, columns: list[Column], keys: list[str],
                references: Sequence[str] = (BASELINE,), failed: set[tuple] = frozenset(), interval: str = "t",
                seed: int = 0, split_sparse: bool = True, compare_rows: bool = True) -> list[TableResult]:
    """The table of means over one image set, its per-image table and its paired comparisons with each
    reference present; rows that ran on too few pairs get tables of their own (with their reference)."""
    group = one_timing_group(values, f"table {name}") if any(c.timed for c in columns) else None
    units, main, sparse, left_out = common_units(values, keys, failed, split_sparse)
    row_of = _row_keys(values, keys)
    everything = values[row_of.isin(main)]
    part = everything[(everything["status"] == "ok").to_numpy() & _in_units(everything, units)]
    if part.empty:
        return []
    means = _means(part, keys, columns)
    order = list(means.index)
    comparisons = {}
    if compare_rows:
        label_pos = keys.index("label")
        for ref in dict.fromkeys(references):
            if any(r[label_pos] == ref for r in order):
                table = _comparisons(part, keys, columns, order, ref, interval, seed)
                if table is not None:
                    comparisons[ref] = table
    note = f"Every row is over the same {_unit_text(sorted(units))}."
    if len(left_out):
        why = left_out.groupby(["image", "seed"]).apply(
            lambda g: ", ".join(f"{lbl}: {reason}" for lbl, reason in zip(g["label"], g["reason"])), include_groups=False)
        note += " Left out: " + "; ".join(f"{i} seed {s} ({text})" for (i, s), text in why.items()) + "."
    if sparse:
        note += (" Run on too few of these pairs, shown in tables of their own: "
                 + ", ".join(" · ".join(map(_key_text, r)) for r in sparse) + ".")
    results = [TableResult(name, caption, means, _per_image(everything, keys, columns, units), comparisons,
                           sorted(units), left_out, note, group)]
    label_pos = keys.index("label")
    for r in sparse:
        with_refs = [r] + [x for ref in references if (x := _reference_row(list(dict.fromkeys(row_of)), r, keys, ref))]
        subset = values[row_of.isin(with_refs)]
        results += build_table(subset, f"{name}_{_slug(r[label_pos])}", f"{caption} ({_key_text(r[label_pos])} on its "
                               "own image set)", columns, keys, references, failed, interval, seed, split_sparse=False)
    return results


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_")


def by_timing_group(values: pd.DataFrame, name: str, caption: str, columns: list[Column], **kw) -> list[TableResult]:
    """build_table once per timing group when the table has time columns (one group: the name is kept);
    groups of runs that shared a device get the table without its time columns."""
    if not any(c.timed for c in columns):
        return build_table(values, name, caption, columns, **kw)
    groups = sorted(values["timing_group"].unique())
    out = []
    for i, group in enumerate(groups, 1):
        part = values[values["timing_group"] == group]
        shared = is_shared(group)
        cols = [c for c in columns if not (c.timed and shared)]
        cap = f"{caption}. Timing group: {group}" + (" (a shared device: no time columns, its seconds include "
                                                     "waiting for the other runs)" if shared else "")
        tables = build_table(part, name if len(groups) == 1 else f"{name}_t{i}", cap, cols, **kw)
        for t in tables:
            t.timing = group
        out += tables
    return out


def per_suite(values: pd.DataFrame, build: Callable[[pd.DataFrame], list[TableResult]]) -> list[TableResult]:
    """build(values), once per suite when the store holds several: different suites have different images, so
    no table averages over them (each suite's tables are named <table>_<suite>)."""
    suites = sorted(values["suite"].astype(str).unique())
    if len(suites) == 1:
        return build(values)
    out = []
    for suite in suites:
        for table in build(values[values["suite"].astype(str) == suite]):
            table.name, table.suite = f"{table.name}_{_slug(suite)}", suite
            table.caption = f"{table.caption} (suite {suite})"
            out.append(table)
    return out


def _present(checkpoints: Sequence[float], limit: float) -> list:
    return [c for c in checkpoints if c <= limit]


def psnr_columns(values: pd.DataFrame, checkpoints: Sequence[int], reading: str, end: bool = True) -> list[Column]:
    """PSNR columns of one reading at each checkpoint the runs reach, and at the end when that differs."""
    iters = sorted(values["iters"].unique())
    cols = [Column(reading_name(reading, c), f"{reading}@{c}") for c in _present(checkpoints, max(iters))]
    if end and (len(iters) > 1 or iters[0] not in checkpoints):
        cols.append(Column(reading_name(reading, iters[0] if len(iters) == 1 else "end"), f"{reading}@end"))
    return cols


def _end(values: pd.DataFrame) -> str:
    iters = sorted(values["iters"].unique())
    return f"@{iters[0]}" if len(iters) == 1 else " end"


def table_a(values: pd.DataFrame, checkpoints: Sequence[int] = (250, 1000, 5000), reading: str = "best",
            **kw) -> list[TableResult]:
    """PSNR (one reading) at the iteration checkpoints that exist and at the end; SSIM and LPIPS at the end."""
    end = _end(values)
    cols = psnr_columns(values, checkpoints, reading)
    cols += [Column(f"SSIM{end}", "final_ssim", 3), Column(f"LPIPS{end}", "final_lpips", 3, better="lower")]
    return build_table(values, "table_a", "Table A: PSNR at fixed iterations; SSIM and LPIPS at the end", cols,
                       _setting_keys(values), **kw)


def table_readings(values: pd.DataFrame, checkpoints: Sequence[int] = (250, 1000, 5000), **kw) -> list[TableResult]:
    """The three PSNR readings side by side at each checkpoint: how much the choice of reading matters."""
    cols = []
    for c in _present(checkpoints, values["iters"].max()):
        cols += [Column(reading_name(r, c), f"{r}@{c}") for r in ("at", "best", "last5")]
    if not cols:
        return []
    return build_table(values, "psnr_readings", "PSNR readings: at the iteration, best so far, and the median "
                       "of the last 5% of iterations", cols, _setting_keys(values), compare_rows=False, **kw)


def target_columns(target: float, timed: bool = True) -> list[Column]:
    cols = [Column(f"it to {target:g} dB", f"it_to_{target:g}", 0, better="faster", budget="iters_done")]
    if timed:
        cols.append(Column(f"s to {target:g} dB", f"s_to_{target:g}", 2, better="faster", timed=True,
                           budget="train_seconds"))
    return cols


def _add_reached(tables: list[TableResult], targets: Sequence[float]) -> list[TableResult]:
    """A 'reached k/n' column before each target's columns (from the censoring-aware iteration median)."""
    for t in tables:
        means = t.means
        for target in targets:
            src = f"it to {target:g} dB"
            if src in means.columns:
                means.insert(list(means.columns).index(src), f"reached {target:g} dB",
                             [f"{c.reached}/{c.n}" for c in means[src]])
    return tables


def table_b(values: pd.DataFrame, targets: Sequence[float] = (30.0, 35.0), **kw) -> list[TableResult]:
    """Iterations and train-seconds to first reach each target: runs that reached, censoring-aware medians
    over all runs, paired ratios over the images where both reached. One table per timing group."""
    cols = [c for t in targets for c in target_columns(t)]
    return _add_reached(by_timing_group(values, "table_b", "Table B: iterations and train-seconds to first reach "
                                        "each PSNR target", cols, keys=_setting_keys(values), **kw), targets)


def table_c(values: pd.DataFrame, checkpoints: Sequence[int] = (500, 1000, 2500), reading: str = "best",
            **kw) -> list[TableResult]:
    """Network size: PSNR at checkpoints and at the end, train-seconds of the whole run."""
    if values.groupby("model")["net"].nunique().max() < 2:  # architectures alone differ: that is Table D
        return []
    cols = psnr_columns(values, checkpoints, reading, end=False)
    cols += [Column(reading_name(reading, "end"), f"{reading}@end"),
             Column("train s", "train_seconds", better="faster", timed=True)]
    return by_timing_group(values, "table_c", "Table C: network size (depth × width); train s: train-seconds of "
                           "the whole run", cols, keys=_setting_keys(values, ["net"]), **kw)


def table_d(values: pd.DataFrame, seconds: Sequence[float] = (60.0, 120.0), target: float = 25.0,
            reading: str = "best", **kw) -> list[TableResult]:
    """Architectures: PSNR at train-second budgets and at the end, time to `target`."""
    if values["model"].nunique() < 2:
        return []
    cols = [Column(f"PSNR@{s:g}s", f"psnr@{s:g}s", timed=True) for s in _present(seconds, values["train_seconds"].max())]
    cols += [Column(reading_name(reading, "end"), f"{reading}@end")] + target_columns(target)
    return _add_reached(by_timing_group(values, "table_d", "Table D: architectures; PSNR at train-second budgets "
                                        "(the last recorded PSNR within the budget)", cols,
                                        keys=_setting_keys(values, ["model"]), **kw), [target])


def table_ablation(values: pd.DataFrame, checkpoints: Sequence[int] = (250, 1000, 5000), target: float = 30.0,
                   reading: str = "best", **kw) -> list[TableResult]:
    """The nint family by label (ξ, α, λ, switches, single arms) against nint."""
    part = values[values["strategy"].isin(ABLATION)]
    if part["label"].nunique() < 2:
        return []
    cols = psnr_columns(part, checkpoints, reading)
    cols += [Column(f"SSIM{_end(part)}", "final_ssim", 3)] + target_columns(target)
    kw["references"] = ("nint",)
    return _add_reached(by_timing_group(part, "ablation", "Ablation: NINT hybrid parameters", cols,
                                        keys=_setting_keys(part), **kw), [target])


# --- rendering -----------------------------------------------------------------------------------------------
def _key_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def text_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text: Stats as means, comparisons as 'Δ [lo, hi], k/n better, p', missing as '—'."""
    out = table.copy().astype(object)
    out.index = pd.MultiIndex.from_tuples([tuple(map(_key_text, idx)) for idx in table.index], names=table.index.names)
    for col in table.columns:
        def fmt(v):
            if isinstance(v, (Stat, Comparison, CensoredMedian)):
                return str(v)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return "—"
            if isinstance(v, (bool, np.bool_)):
                return "yes" if v else "no"
            if isinstance(v, float):
                return f"{v:.4g}"
            return str(v)
        out[col] = [fmt(v) for v in table[col]]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    flat = table.reset_index()
    esc = [[str(v).replace("|", "\\|") for v in row] for row in flat.astype(str).to_numpy()]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc]) + "\n"


CSV_PARTS = {Stat: ("mean", "k", "n"), CensoredMedian: ("value", "censored", "bound", "reached", "n"),
             Comparison: ("mean", "lo", "hi", "n", "wins", "p", "p_holm", "interval")}


def to_csv(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers for machines: a Stat becomes <col> (+ _k, _n), a CensoredMedian <col> (+ _censored, _bound,
    _reached, _n), a Comparison <col> (+ _lo, _hi, _n, _wins, _p, _p_holm, _interval)."""
    out = {}
    for col in table.columns:
        kinds = {type(v) for v in table[col] if type(v) in CSV_PARTS}
        if kinds:
            parts = CSV_PARTS[kinds.pop()]
            for part in parts:
                name = col if part == parts[0] else f"{col}_{part}"
                out[name] = [getattr(v, part) if v is not None else None for v in table[col]]
        else:
            out[col] = list(table[col])
    return pd.DataFrame(out, index=table.index)


LATEX_TEXT = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
              "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "×": r"$\times$",
              "≤": r"$\le$", "≥": r"$\ge$", "−": "$-$", "–": "--", "—": "---", "…": r"\ldots{}", "ξ": r"$\xi$",
              "α": r"$\alpha$", "λ": r"$\lambda$", "ρ": r"$\rho$", "±": r"$\pm$", "·": r"$\cdot$", ">": r"$>$",
              "<": r"$<$", "|": r"$|$"}


def latex_escape(text: str) -> str:
    """Plain text as LaTeX that pdflatex compiles: special characters escaped, the report's symbols in math
    mode; any other non-ASCII character becomes '?' rather than an error."""
    return "".join(LATEX_TEXT.get(ch, ch if ch.isascii() else "?") for ch in str(text))


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A table environment with a plain tabular (no extra packages)."""
    flat = table.reset_index()
    head = " & ".join(latex_escape(c) for c in flat.columns) + r" \\"
    body = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in flat.astype(str).to_numpy()]
    return "\n".join([r"\begin{table}[ht]", r"\centering", r"\caption{" + latex_escape(caption) + "}",
                      r"\label{" + label.replace("_", "-") + "}", r"\begin{tabular}{" + "l" * len(flat.columns) + "}",
                      r"\hline", head, r"\hline", *body, r"\hline", r"\end{tabular}", r"\end{table}", ""])


def write_table(table: pd.DataFrame, name: str, caption: str, folder: Path, note: str = "") -> str:
    """tables/<name>.md, .tex and .csv (each written whole, then renamed); returns the Markdown."""
    from .store import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    shown = text_table(table)
    md = to_markdown(shown)
    atomic_write_text(f"{caption}\n\n{md}" + (f"\n{note}\n" if note else ""), folder / f"{name}.md")
    atomic_write_text(to_latex(shown, f"{caption}. {note}".strip(" ."), f"tab:{name}"), folder / f"{name}.tex")
    atomic_write_text(to_csv(table).to_csv(), folder / f"{name}.csv")
    return md


def comparison_note(table: pd.DataFrame, reference: str) -> str:
    """What a comparison cell means, naming the interval actually used."""
    methods = sorted({c.interval for col in table.columns for c in table[col] if isinstance(c, Comparison)
                      and c.n} - {"none"})
    names = {"t": "Student-t interval", "bca": "BCa bootstrap interval (scipy.stats.bootstrap)",
             "t (BCa not computable)": "Student-t interval where BCa was not computable"}
    how = " / ".join(names.get(m, m) for m in methods) or "no interval"
    return (f"Each cell: the strategy against `{reference}` on the same images, paired on (image, seed) with seeds "
            f"averaged per image: mean Δ (quality) or geometric mean ratio (iterations, seconds; < 1 is faster) "
            f"[95% {how} over images; none below 3 images, then '(n = k)'], images where it is better / paired "
            "images, and the two-sided Wilcoxon signed-rank p, Holm-corrected across the rows of the column. "
            "Ratios to a target use only the images where both reached it.")


# --- figures -------------------------------------------------------------------------------------------------
SMALL_MULTIPLES = 5  # more variants than this: one panel per variant (against the baseline) instead of one plot


def _variant_names(values: pd.DataFrame) -> pd.Series:
    """A short name per run: the varying settings, then the label ('siren 3×64 · nint')."""
    return values[_setting_keys(values)].map(_key_text).agg(" · ".join, axis=1)


def _hue_order(names) -> list[str]:
    """The baseline first, then alphabetical, in every figure alike."""
    return sorted(set(names), key=lambda n: (n.split(" · ")[-1] != BASELINE, n))


def figure_context(values: pd.DataFrame) -> str:
    """'kodak · 768×512, 512×768 px · r = 0.2': suite, image sizes and sampling ratios of the runs shown."""
    def listing(items, unit=""):
        items = list(dict.fromkeys(items))
        return ", ".join(map(str, items[:3])) + (", …" if len(items) > 3 else "") + unit

    sizes = [f"{int(w)}×{int(h)}" for h, w in zip(values["height"], values["width"]) if pd.notna(h) and pd.notna(w)]
    parts = [listing(values["suite"]), listing(sizes, " px") if sizes else "",
             "r = " + listing(f"{r:g}" for r in sorted(values["mt_ratio"].unique()))]
    return " · ".join(p for p in parts if p)


READING_TEXT = {"best": "best-so-far PSNR", "at": "PSNR at each iteration", "last5": "PSNR at each iteration"}


def curve_frame(values: pd.DataFrame, metrics: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """(variant, image, x, y) on a common grid of ≤ CURVE_POINTS x values, seeds averaged per image, up to the
    end of the variant's shortest run. y "psnr_best" is the best PSNR so far of each run."""
    variant = dict(zip(values["run_id"], _variant_names(values)))
    image = dict(zip(values["run_id"], values["image"]))
    source = "psnr" if y == "psnr_best" else y
    m = metrics[metrics["run_id"].isin(variant)].dropna(subset=[source]).sort_values(["run_id", "iteration"])
    if y == "psnr_best":
        m = m.assign(psnr_best=m.groupby("run_id")["psnr"].cummax())
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
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})  # same data, same bytes
    import matplotlib.pyplot as plt

    plt.close(fig)
    return folder / f"{name}.png"


def _band(part: pd.DataFrame, x: str, y: str, resamples: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame([bootstrap_ci(g.to_numpy(), resamples, seed=seed) for _, g in part.groupby(x)[y]],
                        index=sorted(part[x].unique()), columns=["mean", "lo", "hi"])


def curve_plot(frame: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, title: str, resamples: int = RESAMPLES,
               seed: int = 0):
    """One axis for a few variants; with more than SMALL_MULTIPLES, one panel per variant, each against the
    baseline dashed in black, on shared axes (bands of eight strategies merge into one block)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = _hue_order(frame["variant"])
    colors = dict(zip(order, sns.color_palette(n_colors=len(order))))
    bands = {v: _band(frame[frame["variant"] == v], x, y, resamples, seed) for v in order}

    def draw(ax, variant, color, label=True, dashed=False):
        band = bands[variant]
        ax.plot(band.index, band["mean"], color=color, label=variant if label else None, linestyle="--" if dashed else "-")
        ax.fill_between(band.index, band["lo"], band["hi"], color=color, alpha=0.2, linewidth=0)

    if len(order) <= SMALL_MULTIPLES:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for variant in order:
            draw(ax, variant, colors[variant])
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize="small")
        fig.suptitle(title, fontsize="medium")
        return fig
    base = next((v for v in order if v.split(" · ")[-1] == BASELINE), None)
    panels = [v for v in order if v != base]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.6), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    for ax, variant in zip(axes.flat, panels):
        if base is not None:
            draw(ax, base, "black", label=False, dashed=True)
        draw(ax, variant, colors[variant], label=False)
        ax.set_title(variant, fontsize="small")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.suptitle(title + (f"\n(dashed black: {base})" if base else ""), fontsize="medium")
    return fig


def curve_figures(values: pd.DataFrame, metrics: pd.DataFrame, folder: Path, seed: int = 0,
                  resamples: int = RESAMPLES, reading: str = "best") -> list[Path]:
    """PSNR (the report's reading) and SSIM vs iteration over all runs given, and vs train-seconds once per
    timing group (none for groups that shared a device): mean over images with a 95% bootstrap band.

    The bands use bootstrap_ci (vectorised) rather than seaborn's estimator, which loops in Python per
    resample and takes minutes on a full suite."""
    paths = []
    psnr_y = "psnr_best" if reading == "best" else "psnr"
    groups = sorted(values["timing_group"].unique())
    for y, ylabel in ((psnr_y, f"{READING_TEXT[reading]} (dB)"), ("ssim", "SSIM")):
        views = [("iteration", "iteration", values, "", "")]
        for i, group in enumerate(groups, 1):
            if not is_shared(group):
                views.append(("train_seconds", "train-seconds", values[values["timing_group"] == group],
                              "" if len(groups) == 1 else f"_t{i}", f"\ntiming group: {group}"))
        for x, xlabel, part, suffix, extra in views:
            frame = curve_frame(part, metrics, x, y)
            if frame.empty:
                continue
            title = (f"{ylabel} vs {xlabel} · {figure_context(part)}\nmean over {frame['image'].nunique()} images, "
                     f"95% bootstrap band{extra}")
            fig = curve_plot(frame, x, y, xlabel, ylabel, title, resamples, seed)
            paths.append(_save(fig, folder, f"{'psnr' if y == psnr_y else y}_vs_"
                                            f"{'seconds' if x == 'train_seconds' else 'iteration'}{suffix}"))
    return paths


def final_psnr_figure(values: pd.DataFrame, folder: Path, seed: int = 0, reading: str = "best") -> Path:
    """PSNR at the end (the report's reading) per image and variant (dots; 95% CI over seeds when several)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = values.assign(variant=_variant_names(values).to_numpy())
    width = max(6.0, 0.6 * frame["image"].nunique() * max(1.0, frame["variant"].nunique() / 3))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    sns.pointplot(data=frame, x="image", y=f"{reading}@end", hue="variant", hue_order=_hue_order(frame["variant"]),
                  dodge=0.5 if frame["variant"].nunique() > 1 else False, linestyle="none", errorbar=("ci", 95),
                  seed=seed, ax=ax)
    name = reading_name(reading, "end").replace(" ≤end", " at the end")
    ax.set(xlabel="image", ylabel=f"{name} (dB)", title=f"{name} per image · {figure_context(values)}")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small", ncols=2 if frame["variant"].nunique() > SMALL_MULTIPLES else 1)
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

    The fit loop hands every step's batch to `on_select`, so the masks are exactly what it trained on (a
    reused batch on non-recompute steps included)."""
    import datasets
    from strategies import resolve

    from .config import RunConfig
    from .fit import fit
    from .runner import parse_strategies

    (name, params), = parse_strategies(selector)
    _, full = resolve(name, params)
    height, width = image.shape[:2]
    wanted, masks = set(steps), {}

    def on_select(step, batch):
        if step in wanted:
            masks[step] = batch_mask(batch, height, width)

    cfg = RunConfig(image="selection-map", image_sha256=datasets.pixels_sha256(image), strategy=name, params=full,
                    model=model, model_params=dict(model_params or {}), mt_ratio=mt_ratio, iters=max(steps) + 1,
                    eval_every=max(steps) + 1, seed=seed)
    fit(cfg, image, "cpu", on_select=on_select)
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
    h, w = image.shape[:2]
    fig.suptitle(f"Pixels selected (red) at each step: a separate {max(steps) + 1}-step CPU refit of a {w}×{h} image "
                 "(not the benchmark's runs)", fontsize="medium")
    return _save(fig, folder, "selection_maps")


# --- Optuna --------------------------------------------------------------------------------------------------
def objective_label(study) -> str:
    """What the study's value is, from the settings `tune` stores with it (e.g. 'mean PSNR at iteration 2000
    (dB)'; the PSNR objectives read the PSNR at that point, not the best so far)."""
    s = study.user_attrs.get("settings") or {}
    objective = s.get("objective")
    if objective == "psnr-at-iters":
        return f"mean PSNR at iteration {s.get('iters')} (dB)"
    if objective == "psnr-at-seconds":
        return f"mean PSNR at {s.get('budget_seconds')} train-seconds (dB)"
    if objective == "time-to-psnr":
        return f"mean train-seconds to {s.get('target_db')} dB (s)"
    return f"objective of study {study.study_name}"


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
        target = objective_label(study)
        plots = [("optuna_history", lambda: ovm.plot_optimization_history(study, target_name=target))]
        if len(params) >= 2 and len(complete) >= 2:
            plots.append(("optuna_importance", lambda: ovm.plot_param_importances(study, target_name=target)))
        else:
            lines.append(f"Parameter importances skipped: they need ≥ 2 parameters and ≥ 2 complete trials "
                         f"(here {len(params)} and {len(complete)}).")
        plots.append(("optuna_slice", lambda: ovm.plot_slice(study, params=["mt_ratio"] if "mt_ratio" in params else None,
                                                          target_name=target)))
        for fname, plot in plots:
            ax = plot()
            fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).figure
            paths.append(_save(fig, folder, fname))
    plt.close("all")
    return "\n".join(lines), paths


# --- incomplete runs -----------------------------------------------------------------------------------------
def incomplete_runs(results: str | Path, scan=None) -> pd.DataFrame:
    """Store.incomplete() with what is known of each: status (failed, pruned, damaged files, or orphan metrics),
    label, error."""
    from .store import Store

    store = Store(results, readonly=True)
    scan = scan or store.scan()
    ids = store.incomplete(scan)
    runs = scan.runs.set_index("run_id")
    rows = []
    for run_id in ids:
        if run_id in scan.damaged:
            known = runs.loc[run_id] if run_id in runs.index else {}
            rows.append({"run_id": run_id, "status": "damaged (left out)", "label": known.get("label", ""),
                         "image": known.get("image", ""), "seed": known.get("seed", ""), "error": scan.damaged[run_id]})
        elif run_id in runs.index:
            r = runs.loc[run_id]
            rows.append({"run_id": run_id, "status": r["status"], "label": r["label"], "image": r["image"],
                         "seed": r["seed"], "error": "" if pd.isna(r["error"]) else str(r["error"]).split(" | ")[0][:160]})
        else:
            m = store.metrics({run_id}, scan)
            first = m.iloc[0] if len(m) else {}
            rows.append({"run_id": run_id, "status": "orphan (metrics, no run row: killed mid-write)",
                         "label": first.get("strategy", ""), "image": first.get("image", ""),
                         "seed": first.get("seed", ""), "error": ""})
    return pd.DataFrame(rows, columns=["run_id", "status", "label", "image", "seed", "error"])


# --- the report ----------------------------------------------------------------------------------------------
def _failed(runs: pd.DataFrame) -> set[tuple]:
    """(label, image, seed) of the run rows (every status) that did not finish, so a left-out pair can say why."""
    from .store import FINISHED

    bad = runs[~runs["status"].isin(FINISHED)]
    return {(lbl, img, int(s)) for lbl, img, s in zip(bad["label"], bad["image"], bad["seed"]) if s == s}


def _sections(result: TableResult, folder: Path) -> tuple[list[str], dict[str, dict]]:
    """Write a table of means, its per-image table and its comparisons; their Markdown and their entries."""
    written: dict[str, dict] = {}
    cells = [v for col in result.means.columns for v in result.means[col]]
    means_note = result.note
    if any(isinstance(v, Stat) for v in cells):
        means_note += (" Cells: mean over images (seeds averaged per image); '(k/n)': only k of the n runs have a "
                       "value; '—': none has.")
    if any(isinstance(v, CensoredMedian) for v in cells):
        means_note += (" Iterations and seconds to a target: the median over all runs, a run that never reached "
                       "it counted as later than every run that did ('>T': the median is such a run, T the "
                       "smallest budget of those runs); a target counts as reached on the first evaluated row "
                       "whose PSNR ≥ target, so the resolution is the run's --psnr-every ("
                       + ", ".join(sorted({g.split("PSNR every ")[1].split(",")[0] for g in
                                           [result.timing or ""] if "PSNR every " in g}) or ["see the runs"])
                       + " iterations here).")
    doc = [f"## {result.caption}", "", write_table(result.means, result.name, result.caption, folder, means_note),
           means_note, ""]
    written[result.name] = {"kind": "means", "of": result.name, "caption": result.caption, "note": means_note,
                            "table": result.means}
    for ref, table in result.comparisons.items():
        name, caption = f"{result.name}_vs_{_slug(ref)}", f"{result.caption}: paired comparison with {ref}"
        note = comparison_note(table, ref)
        doc += [f"### {caption}", "", write_table(table, name, caption, folder, note), note, ""]
        written[name] = {"kind": "comparison", "of": result.name, "reference": ref, "caption": caption, "note": note,
                         "table": table}
    name, caption = f"{result.name}_per_image", f"{result.caption}: per image and seed"
    note = "One row per run; `in means`: whether the run's (image, seed) pair is in the table's means."
    write_table(result.per_image, name, caption, folder, note)
    doc += [f"Per image: [tables/{name}.md](tables/{name}.md) (and .csv).", ""]
    written[name] = {"kind": "per_image", "of": result.name, "caption": caption, "note": note, "table": result.per_image}
    return doc, written


def build_report(results: str | Path, out: str | Path | None = None, study: str | None = None,
                 study_name: str | None = None, selection_maps: bool = False, maps_image_spec: str = "astronaut",
                 maps_size: int = 32, maps_steps: Sequence[int] = (0, 10, 50, 99),
                 maps_strategies: Sequence[str] | None = None, iter_checkpoints: Sequence[int] = (250, 1000, 5000),
                 size_checkpoints: Sequence[int] = (500, 1000, 2500), seconds: Sequence[float] = (60.0, 120.0),
                 targets: Sequence[float] = (30.0, 35.0), arch_target: float = 25.0, resamples: int = RESAMPLES,
                 seed: int = 0, baseline: str | None = None, reading: str = "best",
                 interval: str = "t", html: bool = True, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Write every table and figure (of the runs of `labels` alone, when given). Returns a dict:

    report    path of report.md;  markdown: its text
    tables    {name: TableResult}: each table of means with its per-image table, its comparisons with each
              reference ({label: DataFrame of Comparison cells}), its (image, seed) units, the pairs left out
              and why, its note and timing group
    written   {file stem: {"kind": means | comparison | per_image, "of": table name, "reference" (comparisons),
              "caption", "note", "table": DataFrame}}: every table file written, in report order; render a cell
              with str(), read numbers from its fields (to_csv flattens them)
    figures   [png paths];  incomplete: DataFrame of failed/orphaned runs
    html      path of index.html (benchmark/html_report.py), or None without `html`
    """
    from .store import Store, atomic_write_text, check_same_setup

    results = Path(results)
    out = Path(out) if out else results / "report"
    store = Store(results, readonly=True)  # the report writes into --out alone
    scan = store.report_problems()
    runs = scan.finished
    if runs.empty:
        raise BenchError(f"{results} holds no finished runs; run the benchmark with --out {results} first")
    store_labels = sorted(runs["label"].unique())
    left_out = []
    if labels is not None:
        unknown = [lbl for lbl in labels if lbl not in store_labels]
        if unknown or not labels:
            what = f"{', '.join(unknown)}: not a label of {results}" if unknown else f"names no label of {results}"
            raise BenchError(f"--labels {what}; it has " + ", ".join(store_labels))
        runs = runs[runs["label"].isin(labels)]
        left_out = [lbl for lbl in store_labels if lbl not in labels]
    metrics = store.metrics(set(runs["run_id"]), scan)
    check_same_setup(runs)
    if resamples < 1:
        raise BenchError(f"--resamples must be >= 1, got {resamples}")
    if reading not in READINGS:
        raise BenchError(f"--psnr-reading must be one of {', '.join(READINGS)}, got {reading!r}")
    if interval not in INTERVALS:
        raise BenchError(f"--interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if baseline is not None and baseline not in set(runs["label"]):
        raise BenchError(f"--baseline {baseline!r} is not a label of {results}; it has "
                         + ", ".join(sorted(runs["label"].unique())))
    if study is not None:  # a wrong --study fails now, not after every table and figure is written
        from .tune import open_storage

        open_storage(study, create=False)
    prepare_out(out)
    all_targets = sorted({*targets, arch_target, 30.0})
    values = run_values(runs, metrics, sorted({*iter_checkpoints, *size_checkpoints}), seconds, all_targets)
    baseline = baseline or BASELINE
    references = [baseline] + ([SECOND_REFERENCE] if SECOND_REFERENCE != baseline else [])
    kw = {"references": references, "failed": _failed(scan.runs), "interval": interval, "seed": seed}
    groups = sorted(values["timing_group"].unique())
    built = per_suite(values, lambda part: (
        table_a(part, iter_checkpoints, reading, **kw) + table_readings(part, iter_checkpoints, **kw)
        + table_b(part, targets, **kw) + table_c(part, size_checkpoints, reading, **kw)
        + table_d(part, seconds, arch_target, reading, **kw)
        + table_ablation(part, iter_checkpoints, 30.0, reading, **kw)))
    readings = {"best": "the best PSNR so far (the NINT/INT releases' reading)", "at": "the PSNR at that iteration",
                "last5": "the median PSNR over the last 5% of iterations up to it"}
    doc = [f"# Report of `{results}`", "",
           f"{len(runs)} finished runs ({runs['status'].eq('diverged').sum()} diverged), "
           f"{runs['image'].nunique()} image(s), {runs['seed'].nunique()} seed(s), labels: "
           + ", ".join(f"`{lbl}`" for lbl in sorted(runs["label"].unique())) + "."
           + (f" Left out by `--labels`: {', '.join(f'`{lbl}`' for lbl in left_out)}." if left_out else ""), "",
           f"PSNR columns read {readings[reading]} (`--psnr-reading`); `psnr_readings` shows all three. Strategies "
           f"are compared with `{baseline}`" + (f" and with `{SECOND_REFERENCE}`" if len(references) > 1 else "")
           + " per image (benchmark/paired.py). Timing groups (times are compared within one only): "
           + "; ".join(f"`{g}`" for g in groups) + ".", ""]
    if scan.damaged or scan.foreign:
        doc += [f"Left out: {len(scan.damaged)} run(s) whose files are damaged (see Incomplete runs)"
                + "".join(f"; ignored {what}" for what in scan.foreign) + ".", ""]
    tables, written = {}, {}
    for result in built:
        tables[result.name] = result
        section, files = _sections(result, out / "tables")
        doc += section
        written.update(files)
    figures_dir = out / "figures"
    shown = values[values["status"] == "ok"]
    suites = sorted(values["suite"].astype(str).unique())
    mains = [t for t in built if t.name in {"table_a", *(f"table_a_{_slug(x)}" for x in suites)}]
    if mains:  # the figures show Table A's rows over Table A's image set (each suite's own, when several)
        keep = np.zeros(len(shown), dtype=bool)
        for main in mains:
            rows = shown["label"].isin(set(main.means.index.get_level_values("label")))
            if main.suite is not None:
                rows &= shown["suite"].astype(str) == main.suite
            keep |= rows.to_numpy() & _in_units(shown, set(main.units))
        shown = shown[keep]
    figures = (curve_figures(shown, metrics, figures_dir, seed, resamples, reading)
               + [final_psnr_figure(shown, figures_dir, seed, reading)])
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
    missing = incomplete_runs(results, scan)
    doc += ["## Incomplete runs", ""]
    doc += [to_markdown(missing.set_index("run_id")) if len(missing) else "None: every run of the store finished.", ""]
    report = out / "report.md"
    markdown = "\n".join(doc)
    atomic_write_text(markdown, report)
    page = None
    if html:
        from .html_report import store_header, write_html

        shown_tables = {stem: (text_table(entry["table"]), entry["caption"]) for stem, entry in written.items()
                        if entry["kind"] != "per_image"}
        page = write_html(out, values.assign(variant=_variant_names(values).to_numpy()), metrics, shown_tables,
                          None, figures, store_header(results, runs, doc[4] if len(doc) > 4 else ""), seed)
    return {"report": report, "markdown": markdown, "tables": tables, "written": written, "figures": figures,
            "incomplete": missing, "html": page}


def prepare_out(out: Path) -> None:
    """Create the report folder, or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder; choose a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise out_error(out, exc) from None
    if not os.access(out, os.W_OK):
        raise BenchError(f"--out {out} is not writable; choose another --out (e.g. --out /tmp/report)")


def out_error(out: Path, exc: OSError) -> BenchError:
    from .store import NO_SPACE

    if exc.errno in NO_SPACE:
        return BenchError(f"no space left on the device while writing the report to --out {out}; free some space "
                          "or choose another --out")
    return BenchError(f"cannot write the report to --out {out}: {exc.strerror or exc}; choose another --out "
                      "(e.g. --out /tmp/report)")


def parser(prog: str = "nint-bench report") -> argparse.ArgumentParser:
    p = ArgParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
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
    p.add_argument("--labels", help="report only these labels, comma-separated as the tables name them (e.g. "
                   "'nint,nint[xi=0.5],standard'); default: every label of the store")
    p.add_argument("--baseline", help="the label every strategy is compared with (default "
                   f"{BASELINE}; the report also compares with {SECOND_REFERENCE} when it ran)")
    p.add_argument("--psnr-reading", default="best", choices=READINGS, help="PSNR of Tables A, C, D and the "
                   "ablation: best so far (default, the papers' reading), at the iteration, or the median of the "
                   "last 5%% of iterations")
    p.add_argument("--interval", default="t", choices=INTERVALS, help="95%% interval of a paired mean over "
                   "images: Student-t (default) or BCa bootstrap (falls back to t where it cannot be computed)")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of the figures' bands")
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


def main(argv: list[str], prog: str = "nint-bench report") -> int:
    import matplotlib

    matplotlib.use("Agg")
    args = parser(prog).parse_args(argv)
    steps = _numbers(args.maps_steps, "--maps-steps", int)
    if args.selection_maps and not steps:
        raise BenchError("--maps-steps names no step; e.g. --maps-steps 0,10,50,99")
    if args.maps_size < 4:
        raise BenchError(f"--maps-size must be >= 4 pixels, got {args.maps_size}")
    from .runner import split_top

    out = Path(args.out) if args.out else Path(args.results) / "report"
    try:
        result = build_report(
            args.results, out, args.study, args.study_name, args.selection_maps, args.maps_image, args.maps_size,
            steps, split_top(args.maps_strategies) if args.maps_strategies else None,
            _numbers(args.iters, "--iters", int), _numbers(args.size_iters, "--size-iters", int),
            _numbers(args.seconds, "--seconds"), _numbers(args.targets, "--targets"), args.arch_target,
            args.resamples, args.seed, args.baseline, args.psnr_reading, args.interval,
            args.html, split_top(args.labels) if args.labels is not None else None)
    except OSError as exc:  # a full disk or a folder that became unwritable while the report was written
        raise out_error(out, exc) from None
    print(f"report: {result['report']} ({len(result['tables'])} tables, {len(result['figures'])} figures, "
          f"{len(result['incomplete'])} incomplete runs)" + (f"; page: {result['html']}" if result["html"] else ""))
    return 0
