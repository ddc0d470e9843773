"""The runner hands each job one device token and gives it back; the joblib (several workers) path works."""
from __future__ import annotations

import queue

import pandas as pd
import torch

import datasets
from benchmark import runner
from benchmark.runner import build_jobs, execute, parse_strategies, run_jobs
from conftest import tiny_image


def jobs(n_seeds=2, strategies="uniform,int"):
    refs = [datasets.ImageRef("tiny", loader=tiny_image)]
    return build_jobs(refs, parse_strategies(strategies), list(range(n_seeds)), iters=4, eval_every=2,
                      model_params={"depth": 2, "width": 8}, lpips=False, suite="test")


def test_each_job_holds_one_device_token_and_returns_it(tmp_path, monkeypatch):
    seen = []
    real_fit = runner.fit

    def fake_fit(cfg, img, device, lpips_metric=None, callback=None):
        seen.append(device)
        assert device not in tokens_now()  # the token is out of the queue while the job runs
        return real_fit(cfg, img, "cpu")

    tokens = queue.Queue()
    for d in ("cuda:0", "cuda:1"):
        tokens.put(d)
    tokens_now = lambda: list(tokens.queue)  # noqa: E731
    monkeypatch.setattr(runner, "fit", fake_fit)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "fake GPU")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(runner, "gpu_processes_at_start", lambda dev, mode: None)  # no CUDA context here
    rows = [execute(j, str(tmp_path / "r"), tokens) for j in jobs()]
    assert [r["status"] for r in rows] == ["ok"] * 4, rows[0]["error"]
    assert seen == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]  # tokens cycle: every job got one, all returned
    assert sorted(tokens_now()) == ["cuda:0", "cuda:1"]
    assert {r["device"] for r in rows} == {"cuda:0", "cuda:1"}


def test_parallel_workers_run_every_job_once(tmp_path):
    todo = jobs(n_seeds=2)
    rows = run_jobs(todo, tmp_path / "r", devices=["cpu"], workers_per_device=2, progress=False)
    assert sorted(r["run_id"] for r in rows) == sorted(j.cfg.run_id for j in todo)
    assert all(r["status"] == "ok" and r["execution_mode"] == "shared-2" for r in rows)
    runs = pd.read_parquet(tmp_path / "r" / "runs")
    assert len(runs) == len(todo) == runs["run_id"].nunique()
