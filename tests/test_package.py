"""The package: `pip install -e .` gives a `nint-bench` command that is the same program as run_benchmark.py.

Installed into a throw-away virtual environment that sees the system's packages (torch & co. are not
downloaded again), so the test neither needs the network nor changes the Python it runs under."""
from __future__ import annotations

import subprocess
import sys
import venv

from conftest import ROOT


def test_pip_install_gives_the_nint_bench_command(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--disable-pip-version-check", "-e", str(ROOT)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    command = env_dir / "bin" / "nint-bench"
    shown = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: nint-bench [-h] COMMAND ...")
    wrapper = subprocess.run([sys.executable, "run_benchmark.py", "--help"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert shown.stdout.replace("nint-bench", "P") == wrapper.stdout.replace("python3 run_benchmark.py", "P")
    # from any folder: the presets are found next to the package
    listed = subprocess.run([str(command), "list", "presets"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert listed.returncode == 0 and "nint-table-a" in listed.stdout, listed.stderr[-2000:]
