"""The Optuna study: resume after a real SIGKILL, pruning, objective values and penalties, bad input."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from benchmark import study_storage, tune
from benchmark.errors import BenchError
from benchmark.fit import RunStopped
from benchmark.store import Store
from conftest import ROOT

TINY = ["--suite", "builtin", "--images", "astronaut", "--max-size", "16", "--model-param", "depth=2",
        "--model-param", "width=32", "--strategy", "uniform", "--no-lpips"]


def _trials(journal):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=names[0], storage=storage).trials if names else []


def _complete(trials):
    return [t for t in trials if t.state == TrialState.COMPLETE]


def test_killed_study_resumes_to_the_total_without_duplicates(tmp_path):
    out = tmp_path / "tune"
    # 500 iterations: a trial lasts about a second, long enough for the kill to land inside the third
    cmd = [sys.executable, "run_benchmark.py", "tune", *TINY, "--iters", "500", "--pruner", "none",
           "--n-trials", "4", "--out", str(out)]
    journal = out / "study.journal"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:  # 2 trials done and the third under way
            trials = _trials(journal) if journal.exists() else []
            if len(_complete(trials)) >= 2 and any(t.state == TrialState.RUNNING and "run_ids" in t.user_attrs
                                                   for t in trials):
                break
            time.sleep(0.05)
        time.sleep(0.1)
        assert proc.poll() is None, f"tune ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()  # reaped, so its pid is gone
    before = _trials(journal)
    assert 2 <= len(_complete(before)) < 4

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _trials(journal)
    complete = _complete(after)
    assert len(complete) == 4  # the total asked for, not 4 more
    assert [t.number for t in complete[:len(_complete(before))]] == [t.number for t in _complete(before)]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4  # no parameter set twice
    assert not [t for t in after if t.state == TrialState.RUNNING]
    killed = [t for t in after if t.state == TrialState.FAIL]
    assert len(killed) == 1  # the trial under way: failed on resume and its parameters tried again
    assert any(r.user_attrs.get("retry_of") == killed[0].number and r.params == killed[0].params for r in complete)
    assert "left running by a killed process" in rerun.stderr
    run_ids = [r for t in complete for r in t.user_attrs["run_ids"]]
    assert len(run_ids) == len(set(run_ids)) == 4
    runs = Store(out).runs()
    assert sorted(runs["run_id"]) == sorted(run_ids) and (runs["status"] == "ok").all()
    assert f"best trial #" in rerun.stdout and "optuna-dashboard" in rerun.stdout


def test_recovery_fails_only_trials_of_dead_workers(monkeypatch):
    import socket

    study = optuna.create_study()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone
    killed, alive, unclaimed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), study.ask(), study.ask()
    killed.set_user_attr("worker", f"{dead.pid}@{socket.gethostname()}")
    alive.set_user_attr("worker", f"{os.getpid()}@{socket.gethostname()}")
    assert tune.recover_killed_trials(study) == [killed.number]  # the unclaimed one is too young to judge
    states = {t.number: t.state for t in study.trials}
    assert states[killed.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == killed.params
    assert waiting[0].user_attrs["retry_of"] == killed.number
    monkeypatch.setattr(tune, "UNCLAIMED_SECONDS", -1.0)
    assert tune.recover_killed_trials(study) == [unclaimed.number]


def _study_with(values_per_trial, direction="maximize", startup=2):
    study = optuna.create_study(direction=direction, pruner=optuna.pruners.MedianPruner(n_startup_trials=startup))
    dist = {"mt_ratio": optuna.distributions.FloatDistribution(0.05, 1.0)}
    for i, curve in enumerate(values_per_trial):
        study.add_trial(optuna.trial.create_trial(params={"mt_ratio": 0.1 + 0.1 * i}, distributions=dist,
                                                  value=curve[max(curve)], intermediate_values=curve))
    return study


def test_pruning_callback_stops_a_clearly_worse_run():
    study = _study_with([{100: 30.0, 200: 33.0}, {100: 29.0, 200: 32.0}])
    good = tune.pruning_callback(study.ask(), step_offset=0)
    good(100, 31.0)
    good(200, 34.0)  # better than the median: goes on
    bad = tune.pruning_callback(study.ask(), step_offset=0)
    with pytest.raises(RunStopped):
        bad(100, 12.0)


def test_pruning_for_a_minimised_objective_reports_minus_psnr():
    # time-to-psnr minimises, so −PSNR is reported: a low PSNR is a high (bad) intermediate value
    study = _study_with([{100: -30.0}, {100: -29.0}], direction="minimize")
    tune.pruning_callback(study.ask(), 0, sign=-1.0)(100, 31.0)
    with pytest.raises(RunStopped):
        tune.pruning_callback(study.ask(), 0, sign=-1.0)(100, 12.0)


def test_a_pruned_trial_stores_its_run_as_pruned(tmp_path):
    args = tune.parser().parse_args([*TINY, "--iters", "300", "--out", str(tmp_path / "res")])
    plan = tune.make_plan(args)
    study = _study_with([{100: 99.0, 400: 99.0}], startup=1)  # an earlier trial far above anything reachable
    study.optimize(tune.objective_fn(plan, "cpu", study), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [100]
    runs = Store(plan.out).runs()
    assert list(runs["status"]) == ["pruned"] and runs["run_id"].iloc[0] == trial.user_attrs["run_ids"][0]
    assert study.user_attrs[f"trial_{trial.number}"] == trial.user_attrs["run_ids"]


def test_objective_values_and_penalties():
    t = np.arange(11)
    m = pd.DataFrame({"run_id": "r", "iteration": t, "train_seconds": t * 0.5, "psnr": 20.0 + t})
    assert tune.run_value(m, "psnr-at-iters", 10) == 30.0
    assert tune.run_value(m, "psnr-at-seconds", 10, budget_seconds=2.0) == 24.0  # 4 iterations fit in 2 s
    assert tune.run_value(m, "time-to-psnr", 10, target_db=25.0) == 2.5
    assert tune.run_value(m, "time-to-psnr", 10, target_db=35.0) == 2.0 * 5.0  # never: twice a full run
    stopped = m[m["iteration"] <= 4]  # e.g. diverged at 4: the penalty projects its pace to all 10 iterations
    assert tune.run_value(stopped, "time-to-psnr", 10, target_db=35.0) == 2.0 * 5.0
    diverged = m.assign(psnr=np.where(t >= 6, np.nan, m["psnr"]))
    assert tune.run_value(diverged, "psnr-at-iters", 10) == 0.0


def test_resuming_with_other_settings_is_refused(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    base = [*TINY, "--iters", "300", "--out", str(tmp_path)]
    tune.load_study(tune.make_plan(tune.parser().parse_args(base)), storage, "s", "none", 0)
    tune.load_study(tune.make_plan(tune.parser().parse_args(base)), storage, "s", "none", 0)  # same: fine
    changed = tune.make_plan(tune.parser().parse_args([*base, "--max-size", "12"]))
    with pytest.raises(BenchError, match="other settings.*max_size"):
        tune.load_study(changed, storage, "s", "none", 0)


def test_an_rdb_url_is_a_storage_too(tmp_path):
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    plan = tune.make_plan(tune.parser().parse_args([*TINY, "--iters", "300", "--out", str(tmp_path)]))
    study = tune.load_study(plan, storage, "s", "median", 5)
    assert isinstance(storage, optuna.storages.RDBStorage) and study.user_attrs["settings"]["iters"] == 300
    with pytest.raises(BenchError, match="cannot open storage"):
        tune.open_storage("nosuchdriver://x/y")


@pytest.mark.parametrize("extra, message", [
    (["--search", "depth"], "cannot search 'depth'"),
    (["--strategy", "uniform", "--search", "xi"], "has no parameter 'xi'"),
    (["--search", "mt_ratio=0.5:0.1"], "low must be below high"),
    (["--search", "lr=0:0.1"], "log scale"),
    (["--objective", "psnr-at-seconds"], "needs a positive --budget-seconds"),
    (["--objective", "fastest"], "invalid choice"),
    (["--strategy", "nint[xi=0.5|0.7]"], "exactly one strategy"),
    (["--n-trials", "0"], "--n-trials must be >= 1"),
    (["--devices", "cuda:7"], "not available"),
    (["--devices", "cpu,cpu"], "names cpu twice"),
])
def test_bad_input_is_one_line(tmp_path, extra, message):
    with pytest.raises(BenchError, match=message) as err:
        tune.main(["--suite", "builtin", "--images", "astronaut", "--max-size", "8", "--out", str(tmp_path), *extra])
    assert "\n" not in str(err.value)


# --- storage damage, start races, interruption ----------------------------------------------------------------------
def _tiny_study(tmp_path, n_trials: int) -> int:
    return tune.main([*TINY, "--iters", "20", "--pruner", "none", "--n-trials", str(n_trials),
                      "--out", str(tmp_path / "tune")])


def test_a_torn_last_line_is_cut_and_the_study_goes_on(tmp_path, capsys):
    journal = tmp_path / "tune" / "study.journal"
    assert _tiny_study(tmp_path, 1) == 0
    whole = journal.read_bytes()
    torn = b'{"op_code":5,"worker_id":"x","trial_id":0,"param_na'  # killed mid-append
    journal.write_bytes(whole + torn)
    assert len(_complete(_trials(journal))) == 1  # Optuna's reader skips the torn line...
    capsys.readouterr()

    assert _tiny_study(tmp_path, 2) == 0  # ...and the next append would glue onto it: cut first
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: study journal")]
    assert warnings == [f"warning: study journal {journal}: a torn last line ({len(torn)} bytes) was cut off (a "
                        "writer was killed mid-line, or the disk was full); the bytes are kept in "
                        f"{journal}.torn, the study is readable and appendable"]
    assert (tmp_path / "tune" / "study.journal.torn").read_bytes() == torn + b"\n"
    assert journal.read_bytes().startswith(whole) and journal.read_bytes().endswith(b"\n")
    assert len(_complete(_trials(journal))) == 2


def test_a_journal_glued_onto_a_torn_line_is_repaired_on_open(tmp_path):
    path = tmp_path / "study.journal"
    storage = tune.open_storage(str(path))
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 0.25})
    lines = path.read_bytes().splitlines(keepends=True)
    torn = b'{"op_code":4,"worker_id":"dead","study_id":0,"user_'
    assert len(lines) >= 3
    path.write_bytes(b"".join(lines[:-2]) + torn + b"".join(lines[-2:]))  # an older append glued onto torn bytes
    with pytest.raises(Exception):
        optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path))))  # unreadable as it is
    with pytest.raises(BenchError, match=r"is damaged \(1 piece\(s\) that are no operation\); run tune"):
        tune.open_storage(str(path), create=False)  # a reader says so and leaves it alone
    repaired = tune.open_storage(str(path))
    assert b"".join(lines) == path.read_bytes()  # the glued operation kept, the torn bytes out
    assert (tmp_path / "study.journal.torn").read_bytes() == torn + b"\n"
    study = optuna.load_study(study_name="s", storage=repaired)
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # appendable again
    assert [(t.state, t.params) for t in study.trials] == [(TrialState.COMPLETE, {"x": 0.5}),
                                                           (TrialState.COMPLETE, {"x": 0.25})]
    assert study_storage.split_damage(path.read_bytes())[1] == []


RACE = """
import sys, time
sys.path.insert(0, {root!r})
from benchmark.study_storage import open_storage, retry_start_race  # optuna alone: no torch to import
from benchmark.errors import BenchError
import optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
from pathlib import Path
folder, me = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{{me}}").touch()  # both past their imports, then both start at the same moment
while len(list(folder.glob("ready-*"))) < 2:
    time.sleep(0.001)
t0 = max(p.stat().st_mtime for p in folder.glob("ready-*")) + 0.5
for i in range({n}):
    while time.time() < t0 + i * 0.3:
        time.sleep(0.001)
    try:
        storage = open_storage(f"sqlite:///{{folder}}/db{{i}}.sqlite")
        retry_start_race(lambda: optuna.create_study(storage=storage, study_name="s", load_if_exists=True))
        print("ok")
    except BenchError as exc:
        print("error:", exc)
"""


def test_workers_starting_together_on_a_new_sqlite_study(tmp_path):
    """Without the retry, about 8 of 10 of these starts fail one of the two (UNIQUE constraint failed:
    alembic_version.version_num, or a table that already exists)."""
    n = 10
    script = tmp_path / "race.py"
    script.write_text(RACE.format(root=str(ROOT), n=n))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(k)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for out, err in outs:
        assert out.split() == ["ok"] * n, (out, err[-2000:])


def test_retry_gives_up_in_one_line(monkeypatch):
    monkeypatch.setattr(study_storage, "RDB_RETRY_SECONDS", 0.0)
    calls = []

    def always_racing():
        calls.append(1)
        raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")

    with pytest.raises(RuntimeError):
        study_storage.retry_start_race(always_racing)
    assert len(calls) == study_storage.RDB_START_ATTEMPTS
    calls.clear()
    with pytest.raises(ValueError):
        study_storage.retry_start_race(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("other")))
    assert len(calls) == 1  # anything else is not retried


def test_sigint_fails_the_trial_in_one_line(tmp_path):
    out = tmp_path / "tune"
    journal = out / "study.journal"
    cmd = [sys.executable, "run_benchmark.py", "tune", *TINY, "--iters", "100000", "--pruner", "none",
           "--n-trials", "3", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # a trial fitting its run
            if journal.exists() and any(t.state == TrialState.RUNNING and "run_ids" in t.user_attrs
                                        for t in _trials(journal)):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == ["interrupted: trial(s) 0 marked failed, their parameters queued again; "
                                           "finished trials and runs are stored; rerun the same command to resume"]
    assert "Traceback" not in stderr + stdout
    trials = _trials(journal)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].system_attrs["fixed_params"] == pytest.approx(trials[0].params)  # as rounded for the run
