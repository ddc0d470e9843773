"""The command line: subcommands with `run` the default, help that shows defaults, `list`, a closed pipe,
experiment files (YAML) that equal the same flags, the presets as files, and the package's console command."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import run_benchmark
import strategies
from benchmark import cli, presets
from benchmark.errors import BenchError
from conftest import ROOT

TINY = ["--suite", "builtin", "--images", "astronaut", "--max-size", "16", "--iters", "3", "--model-param",
        "depth=2", "--model-param", "width=8", "--no-progress", "--no-lpips"]


def run_ids(argv: list[str]) -> list[str]:
    args, model_params = cli.parse_run(argv)
    jobs, _, _ = cli.plan_run(args, model_params)
    return sorted(j.cfg.run_id for j in jobs)


def test_top_help_lists_every_command_and_run_is_the_default(capsys):
    assert run_benchmark.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n    {name} " in out
    assert "python3 run_benchmark.py run --preset nint-table-a" in out
    assert "\\\n" not in out  # no line continuation left half-joined in an example
    # no command: the options are those of `run` (and `run` itself parses them the same way)
    assert run_ids(TINY + ["--strategies", "uniform"]) == run_ids(["--strategies", "uniform", *TINY])
    with pytest.raises(BenchError, match="unknown command 'kodak'; choose from run, tune, report, list"):
        cli.dispatch(["kodak"], "nint-bench")


@pytest.mark.parametrize("command, shown", [
    ("run", ["--iters ITERS         training iterations (default: 5000)", "(default: standard,uniform,int,nint)"]),
    ("tune", ["training iterations per run (default: 5000)", "--n-trials N_TRIALS", "(default: 20)",
              "(default: psnr-at-iters)"]),
    ("report", ["--results RESULTS"]),
    ("list", ["{strategies,suites,presets,models}"]),
])
def test_each_command_has_help_with_its_defaults(capsys, command, shown):
    with pytest.raises(SystemExit) as done:
        run_benchmark.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python3 run_benchmark.py {command} ")
    for text in shown:
        assert text in " ".join(out.split()) or text in out, text


def test_tune_help_is_short():
    lines = cli.HANDLERS  # the handler table names tune; its help is that of benchmark.tune.parser
    from benchmark import tune

    text = tune.parser("nint-bench tune").format_help()
    assert "tune" in lines and len(text.splitlines()) < 90 and "(default: 5000)" in text


def test_list_prints_one_row_per_name(capsys):
    assert run_benchmark.main(["list", "strategies"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == strategies.list_strategies()
    assert run_benchmark.main(["list", "presets"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == list(presets.PRESETS)
    assert all(len(r.split()) > 1 for r in rows)  # every preset says what it is
    assert run_benchmark.main(["--list-models"]) == 0  # the older spelling
    assert "siren" in capsys.readouterr().out
    assert run_benchmark.main(["list", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """The reader closes its end before the program writes: no traceback, exit status 0."""
    proc = subprocess.Popen([sys.executable, "run_benchmark.py", "list", "strategies"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
    shell = subprocess.run(f"{sys.executable} run_benchmark.py list strategies | head -2", shell=True, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode == 0 and len(shell.stdout.splitlines()) == 2 and shell.stderr == ""


# --- experiment files ---------------------------------------------------------------------------------------
def test_a_yaml_experiment_equals_the_same_flags(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent("""\
        # an experiment: the long options of `run`, with - or _
        suite: builtin
        images: [astronaut, coffee]
        strategies:
          - nint[xi=0.5|0.6]
          - uniform
        mt-ratio: 0.3
        iters: 3
        max_size: 16
        seeds: [0, 1]
        lr: 1e-3
        model-param: {depth: 2, width: 8}
        no-lpips: true
        """))
    flags = ["--suite", "builtin", "--images", "astronaut,coffee", "--strategies", "nint[xi=0.5|0.6],uniform",
             "--mt-ratio", "0.3", "--iters", "3", "--max-size", "16", "--seeds", "0,1", "--lr", "1e-3",
             "--model-param", "depth=2", "--model-param", "width=8", "--no-lpips"]
    from_file = run_ids(["--config", str(path)])
    assert from_file == run_ids(flags) and len(from_file) == 2 * 3 * 2
    # a flag given overrides the file
    assert run_ids(["--config", str(path), "--mt-ratio", "0.2"]) == run_ids([*flags, "--mt-ratio", "0.2"])
    assert run_ids(["--config", str(path), "--mt-ratio", "0.2"]) != from_file


def test_the_run_row_records_the_resolved_experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("strategies: uniform\nmt_ratio: 0.25\niters: 4\nmodel_params: {depth: 2, width: 8}\n")
    out = tmp_path / "r"
    assert run_benchmark.main(["--config", str(path), "--suite", "builtin", "--images", "astronaut",
                               "--max-size", "16", "--iters", "3", "--no-progress", "--no-lpips",
                               "--out", str(out)]) == 0
    row = pd.read_parquet(out / "runs").iloc[0]
    config = json.loads(row["config"])
    assert (config["mt_ratio"], config["iters"], config["model_params"], config["strategy"]) == (
        0.25, 3, {"depth": 2, "width": 8}, "uniform")  # the file's values, and the flag's iters


@pytest.mark.parametrize("text, message", [
    ("mt-ratoi: 0.2\n", "unknown key 'mt-ratoi'; use the long options of `run`"),
    ("iters: 2.5\n", "iters must be a int, got 2.5"),
    ("no-lpips: yes please\n", "no-lpips must be true or false, got 'yes please'"),
    ("strategies: [uniform\n", "is not valid YAML (line 2)"),
    ("- uniform\n", "must hold `option: value` lines (a YAML mapping), got a list"),
    ("compile: fast\n", "compile must be one of default, max-autotune, cudagraphs, reduce-overhead, got 'fast'"),
    ("model_params: 3\n", "model_params must be a mapping"),
    ("suite: {a: 1}\n", "suite takes one value like its flag --suite"),
])
def test_bad_experiment_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BenchError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        cli.plan_run(*cli.parse_run(["--config", str(path), *TINY]))
    with pytest.raises(BenchError, match="experiment file not found"):
        cli.parse_run(["--config", str(tmp_path / "nosuch.yaml")])


def test_presets_are_the_yaml_files_of_experiments():
    files = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    assert sorted(presets.PRESETS) == files and {"nint-table-a", "nint-ablation", "nint-sweeps", "demo"} <= set(files)
    ablation = strategies_of("nint-ablation")
    assert ablation == ["nint", "nint-released", "nint[ntk_share=0]", "nint[lam=0]", "nint[score=primal]",
                        "nint[decay=released]", "ntk-only", "int", "uniform", "standard"]
    assert presets.get("nint-ablation")["settings"]["iters"] == 2000
    assert "nint[xi=0.3|0.5|0.6|0.8|0.9]" in strategies_of("nint-sweeps")


def strategies_of(name: str) -> list[str]:
    from benchmark.runner import split_top

    return split_top(presets.get(name)["settings"]["strategies"])


def test_every_arm_of_the_ablation_is_a_distinct_valid_run():
    args, model_params = cli.parse_run(["--preset", "nint-ablation", *TINY])
    jobs, _, _ = cli.plan_run(args, model_params)
    labels = [j.cfg.label for j in jobs]
    assert len(set(j.cfg.run_id for j in jobs)) == len(jobs) == 10
    assert "nint[ntk_share=0]" in labels and jobs[0].cfg.iters == 3  # the flag beats the preset's 2000
    off = next(j.cfg for j in jobs if j.cfg.label == "nint[ntk_share=0]")
    cls, params = strategies.resolve(off.strategy, off.params)
    assert params["ntk_share"] == 0 and params["xi"] == 0.7


def test_a_preset_equals_its_file_given_as_config():
    path = ROOT / "experiments" / "nint-sweeps.yaml"
    assert run_ids(["--preset", "nint-sweeps", *TINY]) == run_ids(["--config", str(path), *TINY])


def test_preset_run_ids_did_not_change():
    """The presets were Python dicts before they were files: the same settings, so the same run ids."""
    args, model_params = cli.parse_run(["--preset", "evos-table1", "--suite", "builtin", "--images", "astronaut",
                                        "--max-size", "16"])
    jobs, _, _ = cli.plan_run(args, model_params)
    cfg = jobs[0].cfg
    assert (cfg.model_params, cfg.mt_ratio, cfg.lr, cfg.iters, cfg.eval_every) == (
        {"depth": 4, "bias_init": "default"}, 0.5, 1e-4, 5000, 500)
    args, model_params = cli.parse_run(["--preset", "nint-netsize", "--suite", "builtin", "--images", "astronaut",
                                        "--max-size", "16"])
    _, _, variants = cli.plan_run(args, model_params)
    assert [v for _, v in variants] == [{"depth": d, "width": w} for d in (3, 4, 5) for w in (64, 128, 256)]


# --- progress and failed starts -----------------------------------------------------------------------------
def test_a_long_run_shows_its_iteration_and_psnr_and_stores_the_same_metrics(tmp_path, capsys, monkeypatch):
    import functools

    import tqdm.auto

    from benchmark.runner import run_jobs

    # tqdm redraws at most every 0.1 s, and a fast CPU fits these 250 iterations in less: without its throttle
    # every update the bar gets is drawn, so what it shows does not depend on the machine's speed.
    monkeypatch.setattr(tqdm.auto, "tqdm", functools.partial(tqdm.auto.tqdm, mininterval=0))
    args, model_params = cli.parse_run([*TINY, "--strategies", "uniform", "--iters", "250", "--psnr-every", "5"])
    jobs, _, _ = cli.plan_run(args, model_params)
    run_jobs(jobs, tmp_path / "bar", ["cpu"], lpips_mode="off", progress=True)
    err = capsys.readouterr().err
    assert "iterations" in err and "200/250" in err and "PSNR " in err and " dB" in err
    run_jobs(jobs, tmp_path / "quiet", ["cpu"], lpips_mode="off", progress=False)
    assert capsys.readouterr().err == ""
    shown, quiet = (pd.read_parquet(tmp_path / d / "metrics") for d in ("bar", "quiet"))
    columns = ["iteration", "psnr", "ssim", "loss", "sampled_fraction"]
    pd.testing.assert_frame_equal(shown[columns], quiet[columns])  # the bar reads the PSNR, it adds none


def test_a_failed_start_leaves_no_results_directory(capsys, tmp_path):
    out = tmp_path / "r"
    args = [a for a in TINY if a != "--no-lpips"]
    assert run_benchmark.main([*args, "--lpips-weights", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2
    assert "LPIPS backbone weights not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert run_benchmark.main(["--suite", str(bad), *TINY[4:], "--out", str(out)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not out.exists()


def test_tune_without_suite_or_strategy_is_the_small_study(capsys):
    from benchmark import tune

    args = tune.parse_args([])
    assert (args.suite, args.strategy, args.iters, args.n_trials, args.max_size) == ("builtin", "nint", 300, 8, 64)
    assert "a small study" in capsys.readouterr().err
    args = tune.parse_args(["--n-trials", "3"])  # a flag still overrides the small study's setting
    assert args.n_trials == 3 and args.iters == 300
    args = tune.parse_args(["--suite", "builtin"])  # a real study: the full protocol's defaults
    assert (args.strategy, args.iters, args.n_trials, args.max_size) == ("nint", 5000, 20, 0)
    assert capsys.readouterr().err.count("a small study") == 1


def test_a_dry_run_counts_what_is_left_estimates_it_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    args = [*TINY, "--strategies", "uniform,int", "--out", str(out)]
    assert run_benchmark.main(["--dry-run", *args]) == 0
    text = capsys.readouterr().out
    assert f"{out}: 2 of 2 runs to do" in text and "estimate: none" in text and not out.exists()
    assert run_benchmark.main([*args, "--seeds", "0"]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert run_benchmark.main(["--dry-run", *args, "--seeds", "0,1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: 4 of 6 runs to do (dry run: nothing is written)"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert rows["uniform"][:2] == ["2", "1"] and rows["int"][:2] == ["2", "1"]
    wall = pd.read_parquet(out / "runs").set_index("label")["wall_seconds"]
    assert float(rows["int"][2]) == pytest.approx(round(2 * wall["int"] / 60, 1))
    assert lines[-1].startswith("estimate: ") and "min of wall clock" in lines[-1]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written


def test_a_time_limit_starts_no_run_that_would_not_end_in_time(tmp_path, capsys):
    """--time-limit stops between runs: with a store whose runs took longer than the limit allows, no run
    starts and the exit status is 3 (runs left); with time enough all run and it is 0."""
    out = tmp_path / "r"
    args = [*TINY, "--strategies", "uniform", "--out", str(out)]
    assert run_benchmark.main([*args, "--seeds", "0"]) == 0
    capsys.readouterr()
    wall = float(pd.read_parquet(out / "runs")["wall_seconds"].iloc[0])
    assert run_benchmark.main([*args, "--seeds", "0,1,2", "--time-limit", str(wall / 100)]) == 3
    err = capsys.readouterr().err
    assert "time limit: 2 of 2 runs not started (the next, uniform on astronaut, would not end in time); rerun" in err
    assert len(pd.read_parquet(out / "runs")) == 1
    assert run_benchmark.main([*args, "--seeds", "0,1,2", "--time-limit", "600"]) == 0
    assert len(pd.read_parquet(out / "runs")) == 3
    for bad, message in ((["--time-limit", "0"], "--time-limit must be a positive number of seconds, got 0.0"),
                         (["--time-limit", "60", "--workers-per-device", "2"], "--time-limit works with one run at a time")):
        assert run_benchmark.main([*args, *bad]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")
    fresh = tmp_path / "fresh"
    assert run_benchmark.main([*TINY, "--out", str(fresh), "--time-limit", "60", "--workers-per-device", "2"]) == 2
    assert not fresh.exists()  # refused before the store is made
