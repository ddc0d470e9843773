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


def shows(text: str, value: float) -> bool:
    """Whether `value` rounds to the number shown: '−0.66', '+1.35', '6', or p as the report writes it
    ('1.7e-06', '6e-06': rounded to the mantissa's digits)."""
    clean = text.replace("−", "-").replace("+", "").replace("×", "").strip()
    if "e" in clean:
        mantissa = clean.split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return float(f"{value:.{digits}e}") == pytest.approx(float(clean))
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    return round(value, decimals) == pytest.approx(float(clean))


def test_the_citation_pattern_reads_a_link():
    found = citations('NINT is [−0.66](a/t.csv "nint | Δ best PSNR ≤5000") dB')
    assert found == [("−0.66", "a/t.csv", "nint", "Δ best PSNR ≤5000")]
    assert shows("−0.66", -0.6612) and shows("6", 6.2) and not shows("−0.66", -0.6671)
    assert shows("1.7e-06", 1.6689e-06) and shows("6e-06", 5.96e-06) and not shows("1.7e-06", 1.6689e-05)


def test_every_cited_number_equals_its_report_table():
    text = (RESULTS / "README.md").read_text()
    found = citations(text)
    assert len(found) >= 20, "results/README.md cites fewer numbers than its findings hold"
    for shown, path, row, column in found:
        table = pd.read_csv(RESULTS / path, index_col="label")
        assert row in table.index and column in table.columns, f"{path} has no cell ({row}, {column})"
        assert shows(shown, float(table.loc[row, column])), (path, row, column, shown)
