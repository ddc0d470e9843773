"""results/README.md's findings cite their numbers as links to report tables: each must equal its table."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

RESULTS = Path(__file__).resolve().parent.parent / "results"
# [0.54](store/report/tables/x.csv "row | column")
CITATION = re.compile(r'\[([^\[\]]+)\]\(([^\s)]+\.csv) "([^"|]+?) \| ([^"]+)"\)')


def citations(text: str) -> list[tuple[str, str, str, str]]:
    return CITATION.findall(text)


def number(text: str) -> tuple[float, int]:
    """'−0.66' -> (-0.66, 2), '+1.35' -> (1.35, 2), '6' -> (6.0, 0)."""
    clean = text.replace("−", "-").replace("+", "").replace("×", "").strip()
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return float(clean), decimals


def test_the_citation_pattern_reads_a_link():
    found = citations('NINT is [−0.66](a/t.csv "nint | Δ best PSNR ≤5000") dB')
    assert found == [("−0.66", "a/t.csv", "nint", "Δ best PSNR ≤5000")]
    assert number("−0.66") == (-0.66, 2) and number("6") == (6.0, 0)


def test_every_cited_number_equals_its_report_table():
    text = (RESULTS / "README.md").read_text()
    found = citations(text)
    assert len(found) >= 20, "results/README.md cites fewer numbers than its findings hold"
    for shown, path, row, column in found:
        table = pd.read_csv(RESULTS / path, index_col="label")
        assert row in table.index and column in table.columns, f"{path} has no cell ({row}, {column})"
        value, decimals = number(shown)
        assert round(float(table.loc[row, column]), decimals) == pytest.approx(value), (path, row, column, shown)
