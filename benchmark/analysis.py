"""Pure functions over the stored metrics: time/iterations to a PSNR target, the run summary table, the three
PSNR readings (at an iteration, best so far, median of the last 5%) and the timing group of a run."""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


def first_reaching(metrics: pd.DataFrame, target_db: float) -> pd.DataFrame:
    """Per run: the first row whose PSNR reaches `target_db` (iteration, train_seconds), NaN if never."""
    reached = metrics[metrics["psnr"] >= target_db]
    first = reached.sort_values("iteration").groupby("run_id", sort=False).first()[["iteration", "train_seconds"]]
    runs = pd.Index(metrics["run_id"].unique(), name="run_id")
    return first.reindex(runs)


def run_finals(runs: pd.DataFrame, metrics: pd.DataFrame, target_db: float = 30.0) -> pd.DataFrame:
    """One row per run: final PSNR/SSIM/LPIPS, ms/iteration, and iterations/seconds to `target_db`."""
    hit = first_reaching(metrics, target_db).rename(
        columns={"iteration": "iters_to_target", "train_seconds": "seconds_to_target"})
    cols = ["run_id", "label", "image", "seed", "final_psnr", "final_ssim", "final_lpips", "ms_per_iter"]
    return runs[cols].merge(hit, left_on="run_id", right_index=True, how="left")


def summary_table(runs: pd.DataFrame, metrics: pd.DataFrame, target_db: float = 30.0) -> pd.DataFrame:
    """Per strategy, means over images and seeds. Time to target is averaged over the runs that reached it,
    and `reached` says how many did, so a strategy that never reaches it is visible, not dropped."""
    finals = run_finals(runs, metrics, target_db)
    g = finals.groupby("label", sort=True)
    tag = f"{target_db:g}dB"
    table = pd.DataFrame({
        "runs": g.size(),
        "psnr": g["final_psnr"].mean(),
        "ssim": g["final_ssim"].mean(),
        "lpips": g["final_lpips"].mean(),
        "ms/it": g["ms_per_iter"].mean(),
        f"s_to_{tag}": g["seconds_to_target"].mean(),
        f"it_to_{tag}": g["iters_to_target"].mean(),
        "reached": g["seconds_to_target"].apply(lambda s: f"{int(np.isfinite(s).sum())}/{len(s)}"),
    })
    table.index.name = "strategy"
    return table


# --- PSNR readings -------------------------------------------------------------------------------------------
READINGS = ("best", "at", "last5")  # best-so-far (the papers' reading), at the iteration, median of the last 5%
LAST_SHARE = 0.05


def window_start(n: int) -> int:
    """First iteration of the last-5% window (0.95·n, n]."""
    return int(math.floor((1.0 - LAST_SHARE) * n)) + 1


def reading_name(reading: str, n: int | str) -> str:
    """The column header of a PSNR reading at iteration n ("end": at each run's own last iteration)."""
    if reading == "at":
        return f"PSNR at {n}"
    if reading == "best":
        return f"best PSNR ≤{n}"
    if n == "end":
        return "median PSNR last 5%"
    return f"median PSNR {window_start(int(n))}–{n}"


def psnr_readings(metrics: pd.DataFrame, iters: Sequence[int]) -> pd.DataFrame:
    """Per run (index run_id): `at@N`, `best@N`, `last5@N` for each N in `iters`, and the same at the run's
    last iteration (`at@end`, `best@end`, `last5@end`). Only rows with a recorded PSNR count (--psnr-every);
    a run shorter than N has no reading at N."""
    m = metrics.dropna(subset=["psnr"]).sort_values(["run_id", "iteration"])
    runs = pd.Index(metrics["run_id"].unique(), name="run_id")
    last = metrics.groupby("run_id")["iteration"].max().reindex(runs)
    out = pd.DataFrame(index=runs)
    for n in iters:
        long_enough = last >= n
        upto = m[m["iteration"] <= n]
        at = m[m["iteration"] == n].groupby("run_id")["psnr"].first()
        best = upto.groupby("run_id")["psnr"].max()
        window = upto[upto["iteration"] >= window_start(n)].groupby("run_id")["psnr"].median()
        for name, series in (("at", at), ("best", best), ("last5", window)):
            out[f"{name}@{n}"] = series.reindex(runs).where(long_enough)
    end = m.groupby("run_id")["iteration"].transform("max")
    out["at@end"] = m[m["iteration"] == end].groupby("run_id")["psnr"].first().reindex(runs)
    out["best@end"] = m.groupby("run_id")["psnr"].max().reindex(runs)
    start = end.map(window_start)
    out["last5@end"] = m[m["iteration"] >= start].groupby("run_id")["psnr"].median().reindex(runs)
    return out


# --- timing groups -------------------------------------------------------------------------------------------
def timing_group(row: Mapping[str, Any]) -> str:
    """The conditions a run's train-seconds were measured under, as one readable key: GPU, execution mode,
    TF32, compile mode, bf16 scoring, graph steps, PSNR period and how the time was obtained (`timing`:
    measured, or a profile; measured when the run does not say). Times of different groups are not
    comparable: a table of times holds one group."""
    def text(key: str) -> str:
        value = row.get(key)
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

    cfg = json.loads(text("config") or "{}")
    timing = text("timing") or cfg.get("timing") or "measured"
    device = text("device") or "cpu"
    gpu = text("gpu_name") or ("CPU" if device.startswith("cpu") else device)
    compile_mode = cfg.get("compile", False)
    parts = [gpu, text("execution_mode") or "exclusive",
             "tf32" if cfg.get("tf32") else "fp32",
             "eager" if compile_mode is False else f"compile {'default' if compile_mode is True else compile_mode}",
             *(["bf16 scoring"] if cfg.get("bf16_scoring") else []),
             *(["graph steps"] if cfg.get("graph_steps") else []),
             f"PSNR every {cfg.get('psnr_every', 1)}", timing]
    return ", ".join(parts)


def is_shared(group: str) -> bool:
    """Runs that shared their device (execution mode shared-K): their seconds include waiting for others."""
    return group.split(", ")[1].startswith("shared")
