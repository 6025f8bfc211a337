"""Budget parsing (docs/design.md: a number with an optional K/M/G/T suffix, powers of 1000)."""

import pytest

from branchnet.errors import BadInput
from branchnet.units import format_count, parse_budget


@pytest.mark.parametrize("text, value", [
    ("120M", 120e6), ("1.5G", 1.5e9), ("2e6", 2e6), ("120000000", 120e6), ("3", 3.0),
    ("0.5", 0.5), ("7k", 7000.0), ("1T", 1e12), (" 40G ", 40e9), (5, 5.0),
])
def test_parse_budget(text, value):
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["120X", "-5M", "abc", "0", "", "M", "1.2.3", "nan", "inf", "0M"])
def test_parse_budget_rejects(text):
    with pytest.raises(BadInput):
        parse_budget(text)


def test_format_count():
    assert format_count(11176512) == "11.2M"
    assert format_count(999) == "999"
    assert format_count(None) == "-"
