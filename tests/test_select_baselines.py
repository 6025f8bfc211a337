"""The sweep's baselines (random and worst selection, Standley et al. Sec. 4.3) against their definitions."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from branchnet.errors import BadInput
from branchnet.selection import Candidate, CandidateTable
from branchnet.selection.baselines import (draw_random_selections, expected_random_loss, is_maximal,
                                           random_baseline, worst_selection)
from branchnet.selection.solution import fits

TINY = CandidateTable(("a", "b", "c"), (
    Candidate("a+b+c", 1.0, {"a": 0.3, "b": 0.5, "c": 0.4}),
    Candidate("a+b", 1.0, {"a": 0.2, "b": 0.45}),
    Candidate("c", 1.0, {"c": 0.3}),
    Candidate("a@0.5", 0.5, {"a": 0.35}),
    Candidate("b@0.5", 0.5, {"b": 0.6}),
    Candidate("c@0.5", 0.5, {"c": 0.35}),
))


def by_permutations(table: CandidateTable, budget: float) -> float:
    """The definition, literally: every order of the networks equally likely; take each that fits; keep
    the orders whose draw covers every task; the mean of their total loss."""
    costs, losses = table.costs(), table.loss_matrix()
    totals = []
    for order in itertools.permutations(range(len(costs))):
        left, taken = budget, []
        for n in order:
            if fits(costs[n], left):
                taken.append(n)
                left -= costs[n]
        served = losses[taken].min(axis=0)
        if np.isfinite(served).all():
            totals.append(math.fsum(served))
    return math.fsum(totals) / len(totals)


@pytest.mark.parametrize("budget", [1.0, 1.5, 2.0, 3.0])
def test_exact_expectation_is_the_definition(budget):
    assert expected_random_loss(TINY, budget) == pytest.approx(by_permutations(TINY, budget), abs=1e-12)


@pytest.mark.parametrize("budget", [1.5, 2.0, 2.5])
def test_monte_carlo_mean_against_exact_enumeration(budget):
    exact = expected_random_loss(TINY, budget)
    baseline = random_baseline(TINY, budget, draws=4000, seed=3)
    assert baseline.draws == 4000 and baseline.seed == 3
    assert abs(baseline.mean_total_loss - exact) < 4 * baseline.std_error
    assert baseline.std_error < 0.01
    again = random_baseline(TINY, budget, draws=4000, seed=3)
    assert again == baseline  # seeded: the same draws


def test_draws_are_valid_and_maximal():
    costs = TINY.costs()
    draws, rejected = draw_random_selections(TINY, 2.0, draws=300, seed=1)
    assert len(draws) == 300 and rejected > 0  # e.g. a@0.5 + b@0.5 + c@0.5 + a+b leaves nothing uncovered,
    for rows in draws:                          # but a+b + a@0.5 + b@0.5 leaves c uncovered
        assert fits(math.fsum(costs[rows]), 2.0) and is_maximal(costs, rows, 2.0)
        assert np.isfinite(TINY.loss_matrix()[rows].min(axis=0)).all()


def test_a_budget_that_rarely_covers_stops_with_fewer_draws():
    table = CandidateTable(("a", "b"), tuple(
        [Candidate(f"a{i}", 1.0, {"a": 1.0}) for i in range(30)] + [Candidate("ab", 1.0, {"a": 1, "b": 1})]))
    draws, rejected = draw_random_selections(table, 1.0, draws=50, seed=0, max_tries=200)
    assert 0 < len(draws) < 50 and len(draws) + rejected == 200


def test_random_baseline_scores_the_same_draws_on_a_test_table():
    test = CandidateTable(TINY.tasks, tuple(Candidate(c.name, c.cost, {t: 2 * v for t, v in c.losses.items()})
                                            for c in reversed(TINY.candidates)))
    baseline = random_baseline(TINY, 2.0, draws=200, seed=0, test=test)
    assert baseline.test_mean_total_loss == pytest.approx(2 * baseline.mean_total_loss)


def test_no_covering_draw_is_bad_input():
    with pytest.raises(BadInput, match="covers every task"):
        expected_random_loss(TINY, 0.5)
    with pytest.raises(BadInput, match="covers every task"):
        worst_selection(TINY, 0.5)


def brute_worst(table: CandidateTable, budget: float) -> float:
    costs, losses = table.costs(), table.loss_matrix()
    best = -math.inf
    for size in range(1, len(costs) + 1):
        for rows in itertools.combinations(range(len(costs)), size):
            rows = list(rows)
            if not fits(math.fsum(costs[rows]), budget) or not is_maximal(costs, rows, budget):
                continue
            served = losses[rows].min(axis=0)
            if np.isfinite(served).all():
                best = max(best, math.fsum(served))
    return best


def test_worst_selection_against_brute_force():
    rng = random.Random(11)
    checked = 0
    for _ in range(40):
        tasks = [f"t{i}" for i in range(rng.randint(2, 4))]
        cands = []
        for i in range(rng.randint(3, 8)):
            solved = rng.sample(tasks, rng.randint(1, len(tasks)))
            cands.append(Candidate(f"n{i}", rng.choice([0.5, 1.0, 1.0, 1.5]), {t: rng.randint(1, 9) / 10 for t in solved}))
        for t in tasks:
            cands.append(Candidate(f"only-{t}", 1.0, {t: 0.5}))
        table = CandidateTable(tuple(tasks), tuple(cands))
        budget = rng.choice([1.0, 1.5, 2.0, 3.0])
        expected = brute_worst(table, budget)
        if expected == -math.inf:
            continue
        worst = worst_selection(table, budget)
        assert worst.total_loss == pytest.approx(expected, abs=1e-9)
        checked += 1
    assert checked > 25


def test_worst_is_above_the_random_mean():
    for budget in (1.0, 1.5, 2.0, 3.0):
        worst = worst_selection(TINY, budget).total_loss
        assert expected_random_loss(TINY, budget) <= worst + 1e-12


# -- in the sweep ---------------------------------------------------------------------------------
@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "tiny.csv"
    lines = ["name,cost,a,b,c"]
    for c in TINY.candidates:
        lines.append(",".join([c.name, f"{c.cost:g}", *(f"{c.losses[t]:g}" if t in c.losses else "" for t in TINY.tasks)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sweep_json_has_changes_and_baselines(cli, csv_path, tmp_path):
    result = cli("select", "--candidates", csv_path, "--sweep", "1:3:0.5", "--random", "500", "--seed", "7",
                 "--json", "--plot", tmp_path / "p.png")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    nets = [d["networks"] for d in data]
    assert [d["changed"] for d in data] == [True] + [a != b for a, b in zip(nets[1:], nets)]
    assert data[3]["changed"] is False  # budgets 2 and 2.5 choose the same networks
    for d in data:
        assert d["random"]["draws"] == 500 and d["random"]["seed"] == 7 and d["random"]["rejected"] >= 0
        exact = expected_random_loss(TINY, d["budget"])
        assert abs(d["random"]["mean_total_loss"] - exact) < 5 * max(d["random"]["std_error"] or 0, 1e-12)
        assert d["worst"]["total_loss"] == pytest.approx(brute_worst(TINY, d["budget"]))
        assert d["total_loss"] <= d["random"]["mean_total_loss"] + 1e-12 <= d["worst"]["total_loss"] + 1e-9
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_table_marks_changes_and_lists_networks(cli, csv_path, tmp_path):
    result = cli("select", "--candidates", csv_path, "--sweep", "1:2:0.5", "--random", "100",
                 "--plot", tmp_path / "p.png")
    assert result.code == 0, result.err
    assert "random (mean)" in result.out and "worst" in result.out
    assert "a+b+c (a, b, c)" in result.out  # one network per line, with the tasks it serves
    assert "100 random selections per budget (seed 0" in result.out
    rows = [line for line in result.out.splitlines() if line.startswith("│") and line.split("│")[1].strip()]
    assert [row.split("│")[2].strip() for row in rows] == ["*", "*", "*"]


def test_sweep_without_baselines(cli, csv_path, tmp_path):
    data = json.loads(cli("select", "--candidates", csv_path, "--sweep", "1:2:1", "--no-baselines", "--json",
                          "--plot", tmp_path / "p.png").out)
    assert all("random" not in d and "worst" not in d and "changed" in d for d in data)


def test_bad_random_count(cli, csv_path):
    from conftest import assert_one_line_error

    assert_one_line_error(cli("select", "--candidates", csv_path, "--sweep", "1:2:1", "--random", "0"), "--random")
    assert_one_line_error(cli("select", "--candidates", csv_path, "--sweep", "1:2:1", "--seed", "-1"), "--seed")
