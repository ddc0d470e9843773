"""The argparse pieces every command shares: one-line usage errors and help that shows the defaults."""
from __future__ import annotations

import argparse

from .errors import BenchError


class ArgParser(argparse.ArgumentParser):
    """Usage errors as one BenchError line (`argument --iters: invalid int value: 'x'; see --help`); the CLI
    prints it and exits with status 2."""

    def error(self, message: str):
        raise BenchError(f"{message}; see --help")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (so they paste), and `(default: …)` after every option that has a
    meaningful default; an option whose help already says its default, or whose default is unset/off, gets none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS or default == []
        if "%(default)" in text or "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"
