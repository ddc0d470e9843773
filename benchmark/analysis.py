"""Pure functions over the stored metrics: time/iterations to a PSNR target and the run summary table."""
from __future__ import annotations

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
