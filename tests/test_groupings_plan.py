"""The pieces of ``branchnet groupings`` that need no training: the plan, the ESA schedule, costs, HOA rows."""

from __future__ import annotations

import itertools
import math

import pytest

from branchnet.errors import BadInput
from branchnet.selection.esa import esa_schedule
from branchnet.selection.plan import Network, parse_widths, plan_networks
from branchnet.steps.grouping_costs import CostModel, WidthCosts
from branchnet.steps.groupings import _predict_higher_order
from branchnet.selection import Candidate, CandidateTable


def test_plan_has_every_group_up_to_k_then_the_other_widths():
    tasks = ["a", "b", "c", "d"]
    full = plan_networks(tasks, None, (1.0, 0.5))
    assert len(full) == 2 ** 4 - 1 + 4
    assert [n.name for n in full[:5]] == ["a", "b", "c", "d", "a+b"]
    assert [n.name for n in full[-4:]] == ["a@0.5", "b@0.5", "c@0.5", "d@0.5"]
    assert len(plan_networks(tasks, 2, (1.0,))) == 4 + 6
    every = plan_networks(tasks, 3, (1.0, 0.5, 0.25), widths_for="all")
    assert len(every) == 3 * (4 + 6 + 4)
    assert Network(("a", "b"), 0.25) in every
    hoa = plan_networks(tasks, 4, (1.0, 0.5), predict_higher_order=True)
    assert max(len(n.tasks) for n in hoa) == 2 and len(hoa) == 4 + 6 + 4


@pytest.mark.parametrize("n_train, batch, epochs", [(48, 16, 1), (48, 16, 3), (1000, 32, 10), (300, 7, 4),
                                                    (65, 64, 5)])
@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.34, 0.5, 0.999, 1.0])
def test_esa_schedule_runs_that_share_of_the_steps(n_train, batch, epochs, fraction):
    per_epoch = n_train // batch  # the training loader drops the last incomplete batch
    s = esa_schedule(n_train, per_epoch, epochs, fraction, batch)
    assert s.full_steps == epochs * per_epoch
    assert s.steps == s.epochs * s.batches
    if fraction == 1.0:
        assert (s.epochs, s.batches, s.train_images, s.subset) == (epochs, per_epoch, n_train, False)
        return
    target = max(1, math.floor(fraction * s.full_steps + 0.5))
    assert target <= s.steps < target + s.epochs  # within one batch per epoch above the target
    assert s.epochs == math.ceil(target / per_epoch) <= epochs and s.batches <= per_epoch
    if s.subset:
        assert s.train_images == s.batches * batch and s.train_images // batch == s.batches < per_epoch
    else:
        assert s.train_images == n_train and s.batches == per_epoch


def test_parse_widths():
    assert parse_widths("1,0.5") == (1.0, 0.5)
    assert parse_widths(" 0.25 , 1 ") == (0.25, 1.0)
    for bad in ("1,abc", "1,0", "1,1.5", "1,0.5,0.5", "0.5", "", "1,,0.5", "1,inf", "1,nan"):
        with pytest.raises(BadInput):
            parse_widths(bad)


def fake_costs(tasks):
    """Made-up stage/head costs at widths 1 and 0.5 (heads of different sizes)."""
    widths = {}
    for width in (1.0, 0.5):
        widths[width] = WidthCosts(width, tuple(int(1000 * width * (d + 1)) for d in range(4)), (1, 2, 3, 4),
                                   {t: 100 * (i + 1) for i, t in enumerate(tasks)}, {t: 7 for t in tasks})
    return CostModel(tuple(tasks), widths)


def test_cost_model_reference_is_the_mean_single_task_network():
    costs = fake_costs(["a", "b", "c"])
    # encoder 10000 at width 1, heads 100, 200, 300
    assert costs.reference_flops == pytest.approx(10200)
    assert costs.cost(["a", "b"]) == pytest.approx(10300 / 10200)
    assert costs.cost(["c"], 0.5) == pytest.approx(5300 / 10200)
    assert math.fsum(costs.cost([t]) for t in "abc") == pytest.approx(3)


def test_hoa_rows_for_every_width_are_pair_means_at_their_own_cost():
    tasks = ["a", "b", "c", "d"]
    costs = fake_costs(tasks)
    plan = plan_networks(tasks, 4, (1.0, 0.5), widths_for="all", predict_higher_order=True)
    rng = iter(range(1, 1000))
    trained = [Candidate(n.name, costs.cost(n.tasks, n.width), {t: next(rng) / 7 for t in n.tasks}) for n in plan]
    table = CandidateTable(tuple(tasks), tuple(trained))
    filled, rows = _predict_higher_order(table, plan, tasks, 4, (1.0, 0.5), "all", costs)
    predicted = filled.candidates[len(trained):]
    assert [c.name for c in predicted] == ["a+b+c", "a+b+d", "a+c+d", "b+c+d", "a+b+c+d",
                                           "a+b+c@0.5", "a+b+d@0.5", "a+c+d@0.5", "b+c+d@0.5", "a+b+c+d@0.5"]
    for cand in predicted:
        width = 0.5 if cand.name.endswith("@0.5") else 1.0
        group = cand.name.split("@")[0].split("+")
        assert cand.cost == pytest.approx(costs.cost(group, width))
        for t in group:
            pair_losses = [table.candidate(Network(tuple(sorted((t, u), key=tasks.index)), width).name).losses[t]
                           for u in group if u != t]
            assert cand.losses[t] == pytest.approx(sum(pair_losses) / len(pair_losses))
    assert [r["name"] for r in rows] == [c.name for c in predicted]
    assert rows[-1]["predicted_from"] == [f"{'+'.join(p)}@0.5" for p in itertools.combinations(tasks, 2)]

    # singles only at half width: no half-width groups to predict from
    plan = plan_networks(tasks, 3, (1.0, 0.5), predict_higher_order=True)
    table = CandidateTable(tuple(tasks), tuple(Candidate(n.name, 1.0, {t: 1.0 for t in n.tasks}) for n in plan))
    filled, _ = _predict_higher_order(table, plan, tasks, 3, (1.0, 0.5), "singles", costs)
    assert [c.name for c in filled.candidates[len(plan):]] == ["a+b+c", "a+b+d", "a+c+d", "b+c+d"]
