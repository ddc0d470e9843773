"""Experiment files: YAML files whose keys are the long options of `run` (`mt-ratio: 0.2` or `mt_ratio: 0.2`).

The named protocols of the papers are such files in the repository's `experiments/` folder; `--preset NAME`
reads `experiments/NAME.yaml`, `--config FILE` any file, and explicit flags override both. Besides the long
options a file may hold `description` (one line, shown by `list presets`) and `model_params` (a mapping, or a
list of mappings: each one a model variant of its own, e.g. a depth × width grid). A list value of an option
that takes a comma-separated list (strategies, seeds, model, images, devices) is joined with commas, so a long
list of strategy selectors reads one per line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BenchError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
EXTRA_KEYS = ("description", "model_params")  # keys that are not options of `run`
LIST_KEYS = ("strategies", "seeds", "model", "images", "devices")  # comma-separated options


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The settings of one experiment file: keys with underscores (`mt_ratio`), lists of LIST_KEYS joined."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"experiment file not found: {path}; check the path of --config") from None
    except OSError as exc:
        raise BenchError(f"cannot read experiment file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise BenchError(f"{path} is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}; "
                         "write one `option: value` per line, e.g. `mt-ratio: 0.2`") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchError(f"{path} must hold `option: value` lines (a YAML mapping), got a {type(data).__name__}")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in settings:
            raise BenchError(f"{path} sets {key!r} twice (as {name.replace('_', '-')} and {name})")
        if name in LIST_KEYS and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        settings[name] = value
    return settings


def _load_all() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        settings = load_experiment(path)
        out[path.stem] = {"doc": str(settings.pop("description", "")), "settings": settings,
                          "path": path}
    return out


PRESETS: dict[str, dict[str, Any]] = _load_all()


def get(name: str) -> dict[str, Any]:
    try:
        return PRESETS[name]
    except KeyError:
        raise BenchError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
