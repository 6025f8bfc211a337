"""The candidates CSV, the higher-order approximation and branched trees as candidates."""

from __future__ import annotations

import itertools
import math

import pytest

from branchnet.errors import BadInput
from branchnet.selection import (Candidate, CandidateTable, add_tree_candidate, group_name,
                                 higher_order_approximation, read_candidates, select_networks,
                                 tree_candidate, write_candidates)
from branchnet.selection.synthetic import paper_like_table

GOOD = """name,cost,seg,depth,normals
seg+depth+normals,1,0.51,0.22,0.13
seg+depth,1,0.50,0.21,
seg,1,0.49,,
depth@0.5,0.5,,0.24,
normals@0.5,0.5,,,0.13
"""


def write(tmp_path, text, name="c.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- reading and writing -----------------------------------------------------------------
def test_read_candidates(tmp_path):
    table = read_candidates(write(tmp_path, GOOD))
    assert table.tasks == ("seg", "depth", "normals")
    assert table.names == ("seg+depth+normals", "seg+depth", "seg", "depth@0.5", "normals@0.5")
    assert table.candidate("seg+depth").losses == {"seg": 0.50, "depth": 0.21}
    assert table.candidate("depth@0.5").cost == 0.5
    matrix = table.loss_matrix()
    assert matrix.shape == (5, 3) and math.isinf(matrix[2, 1]) and matrix[0, 2] == 0.13


def test_read_tolerates_spaces_bom_and_blank_lines(tmp_path):
    text = "\ufeff name , cost , a , b \n\n x , 1 , 0.5 , \n y,2,,0.25\n\n"
    table = read_candidates(write(tmp_path, text))
    assert table.tasks == ("a", "b") and table.names == ("x", "y")
    assert table.candidate("y").losses == {"b": 0.25}


def test_write_read_round_trip_is_exact(tmp_path):
    table = paper_like_table(4, seed=2)
    table = table.with_candidates([Candidate("odd, \"name\"", 0.1 + 0.2, {"t0": 1 / 3})])
    path = write_candidates(tmp_path / "out" / "c.csv", table)
    assert read_candidates(path) == table
    assert not list((tmp_path / "out").glob(".*tmp*"))  # the temporary file is gone


@pytest.mark.parametrize("text, fragments", [
    ("", ["empty"]),
    ("\n\n", ["empty"]),
    ("cost,name,a\nx,1,1\n", ["line 1", "name,cost"]),
    ("network,cost,a\nx,1,1\n", ["line 1", "name,cost"]),
    ("name,cost\nx,1\n", ["line 1", "no task columns"]),
    ("name,cost,a,a\nx,1,1,1\n", ["line 1", "'a' appears twice"]),
    ("name,cost,a,\nx,1,1,1\n", ["line 1", "column 4"]),
    ("name,cost,a\n", ["no networks"]),
    ("name,cost,a\nx,abc,1\n", ["line 2", "column 'cost'", "'abc' is not a number"]),
    ("name,cost,a\nx,-1,1\n", ["line 2", "column 'cost'", "negative"]),
    ("name,cost,a\nx,,1\n", ["line 2", "column 'cost'", "empty"]),
    ("name,cost,a\nx,1,zero\n", ["line 2", "column 'a'", "'zero' is not a number"]),
    ("name,cost,a\nx,1,-0.5\n", ["line 2", "column 'a'", "negative"]),
    ("name,cost,a\nx,1,nan\n", ["line 2", "column 'a'", "not a finite number"]),
    ("name,cost,a\nx,inf,1\n", ["line 2", "column 'cost'", "not a finite number"]),
    ("name,cost,a,b\nx,1,1,1\ny,1,2,\nx,2,1,1\n", ["line 4", "'x' already appears on line 2"]),
    ("name,cost,a\n,1,1\n", ["line 2", "name", "empty"]),
    ("name,cost,a,b\nx,1,1\n", ["line 2", "3 cells", "header has 4"]),
    ("name,cost,a,b\nx,1,1,\n", ["column 'b'", "no network solves"]),
    ("name,cost,a,b\nx,1,1,\ny,1,,\n", ["line 3", "'y' solves no task"]),
])
def test_bad_csv(tmp_path, text, fragments):
    with pytest.raises(BadInput) as err:
        read_candidates(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read_candidates(tmp_path / "nope.csv")


def test_table_built_in_code_is_validated():
    with pytest.raises(BadInput, match="appears twice"):
        CandidateTable(("a",), (Candidate("x", 1, {"a": 1}), Candidate("x", 1, {"a": 2})))
    with pytest.raises(BadInput, match="not a task column"):
        CandidateTable(("a",), (Candidate("x", 1, {"b": 1}),))
    with pytest.raises(BadInput, match="no network solves task 'b'"):
        CandidateTable(("a", "b"), (Candidate("x", 1, {"a": 1}),))
    with pytest.raises(BadInput, match="cost"):
        CandidateTable(("a",), (Candidate("x", -1, {"a": 1}),))


def test_group_name():
    assert group_name(["seg", "depth"]) == "seg+depth"
    assert group_name(["seg"], 0.5) == "seg@0.5"


# -- higher-order approximation (Sec. 3.3.2) ------------------------------------------------
def pairs_table(tasks=("a", "b", "c", "d"), pair_cost=1.0):
    candidates = [Candidate(t, 1.0, {t: 1.0 + i}) for i, t in enumerate(tasks)]
    for i, (t, u) in enumerate(itertools.combinations(tasks, 2)):
        candidates.append(Candidate(f"{t}+{u}", pair_cost, {t: 0.1 * (i + 1), u: 0.05 * (i + 2)}))
    return CandidateTable(tuple(tasks), tuple(candidates))


def test_hoa_averages_the_pair_networks():
    table = pairs_table()
    filled = higher_order_approximation(table)
    pair = {frozenset(c.losses): c for c in table.candidates if len(c.losses) == 2}
    new = filled.candidates[len(table.candidates):]
    assert len(new) == 4 + 1  # C(4,3) + C(4,4)
    for cand in new:
        group = tuple(cand.losses)
        assert cand.name == "+".join(group) and cand.cost == 1.0
        for t in group:
            expected = sum(pair[frozenset((t, u))].losses[t] for u in group if u != t) / (len(group) - 1)
            assert cand.losses[t] == pytest.approx(expected, rel=1e-15)
    assert filled.candidate("a+b+c").losses["a"] == pytest.approx((0.1 + 0.2) / 2)


def test_hoa_keeps_trained_groups_and_respects_max_size():
    table = pairs_table().with_candidates([Candidate("a+b+c", 1.0, {"a": 9, "b": 9, "c": 9})])
    filled = higher_order_approximation(table, max_size=3)
    assert filled.candidate("a+b+c").losses == {"a": 9, "b": 9, "c": 9}  # the trained one stays
    assert sorted(c.name for c in filled.candidates[len(table.candidates):]) == ["a+b+d", "a+c+d", "b+c+d"]


def test_hoa_then_select():
    filled = higher_order_approximation(pairs_table())
    assert select_networks(filled, 1).networks[0].count("+") == 3  # only a 4-task network fits


def test_hoa_needs_every_pair():
    table = pairs_table()
    table = CandidateTable(table.tasks, tuple(c for c in table.candidates if c.name != "b+d"))
    with pytest.raises(BadInput, match="pair b and d"):
        higher_order_approximation(table)


def test_hoa_pair_widths():
    table = pairs_table().with_candidates([Candidate("a+b@0.5", 0.5, {"a": 0.3, "b": 0.4})])
    with pytest.raises(BadInput, match="both solve the pair"):
        higher_order_approximation(table)
    filled = higher_order_approximation(table, pair_cost=1.0)
    assert filled.candidate("a+b+c").losses["a"] == pytest.approx((0.1 + 0.2) / 2)


def test_hoa_group_cost():
    table = pairs_table()
    mixed = CandidateTable(table.tasks, tuple(Candidate(c.name, 1.2 if c.name == "a+b" else c.cost, c.losses)
                                              for c in table.candidates))
    with pytest.raises(BadInput, match="costs differ"):
        higher_order_approximation(mixed)
    filled = higher_order_approximation(mixed, group_cost=lambda group: 1 + 0.05 * len(group))
    assert filled.candidate("a+b+c+d").cost == pytest.approx(1.2)
    with pytest.raises(BadInput, match="max_size"):
        higher_order_approximation(table, max_size=2)


# -- a branched tree as a candidate -----------------------------------------------------------
TREE = {"tasks": ["seg", "depth", "normals"], "locations": ["l1", "l2"],
        "partitions": [[["seg", "depth", "normals"]], [["seg"], ["depth", "normals"]]],
        "params": 11176512, "flops": 3.0e9, "dissimilarity": 0.4}


def test_tree_candidate_from_flops():
    cand = tree_candidate(TREE, {"seg": 0.48, "depth": 0.2, "normals": 0.12}, reference_flops=2.0e9)
    assert cand.cost == 1.5 and cand.name == "branched-11.2M"
    assert cand.losses == {"seg": 0.48, "depth": 0.2, "normals": 0.12}


def test_add_tree_candidate_competes_in_selection(tmp_path):
    table = read_candidates(write(tmp_path, GOOD))
    with_tree = add_tree_candidate(table, TREE, {"seg": 0.40, "depth": 0.15, "normals": 0.10}, cost=1.2,
                                   name="tree")
    assert with_tree.names[-1] == "tree" and with_tree.tasks == table.tasks
    assert select_networks(with_tree, 1.5).networks == ("tree",)
    path = write_candidates(tmp_path / "with_tree.csv", with_tree)
    assert read_candidates(path) == with_tree


def test_tree_candidate_adds_new_task_columns(tmp_path):
    table = read_candidates(write(tmp_path, GOOD))
    tree = {"tasks": ["seg", "edges"], "partitions": [[["seg", "edges"]]], "params": None, "flops": None}
    grown = add_tree_candidate(table, tree, {"seg": 0.5, "edges": 0.3}, cost=1.0)
    assert grown.tasks == ("seg", "depth", "normals", "edges") and grown.names[-1] == "branched"


@pytest.mark.parametrize("losses, kwargs, fragment", [
    ({"seg": 0.4, "depth": 0.2}, {"cost": 1}, "no loss for task(s) normals"),
    ({"seg": 0.4, "depth": 0.2, "normals": 0.1, "edges": 1}, {"cost": 1}, "edges, which the tree does not solve"),
    ({"seg": 0.4, "depth": 0.2, "normals": 0.1}, {}, "cost is unknown"),
    ({"seg": 0.4, "depth": 0.2, "normals": -0.1}, {"cost": 1}, "loss on 'normals'"),
    ({"seg": 0.4, "depth": 0.2, "normals": 0.1}, {"cost": -1}, "cost -1.0"),
])
def test_tree_candidate_bad_input(losses, kwargs, fragment):
    with pytest.raises(BadInput) as err:
        tree_candidate(TREE, losses, **kwargs)
    assert fragment in str(err.value)


def test_tree_candidate_name_clash(tmp_path):
    table = read_candidates(write(tmp_path, GOOD))
    with pytest.raises(BadInput, match="already in the table"):
        add_tree_candidate(table, TREE, {"seg": 0.4, "depth": 0.2, "normals": 0.1}, cost=1, name="seg")


def test_tree_with_bad_partition():
    tree = dict(TREE, partitions=[[["seg", "depth"]]])
    with pytest.raises(BadInput, match="partition 0"):
        tree_candidate(tree, {"seg": 0.4, "depth": 0.2, "normals": 0.1}, cost=1)
