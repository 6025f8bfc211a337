"""The release's tab-separated tables (--format standley), --test scoring, HOA on any table."""

from __future__ import annotations

import json
import math

import pytest

from branchnet.errors import BadInput
from branchnet.selection import select_networks
from branchnet.selection.higher_order import predict_from_pairs
from branchnet.selection.standley import RELEASE_TASKS, read_standley
from branchnet.selection.tables import match_tables, read_table, rescore
from conftest import assert_one_line_error

# Three tasks a, b, c: the first line the half-size networks, then a, b, c, ab, ac, bc, abc.
VAL = ("0.30\t0.50\t0.20\n"
       "0.25\t\t\n"
       "\t0.45\t\n"
       "\t\t0.18\n"
       "0.22\t0.47\t\n"
       "0.26\t\t0.15\n"
       "\t0.40\t0.19\n"
       "0.23\t0.44\t0.17\n")
TEST = ("0.31\t0.52\t0.21\r\n"
        "0.26\t\t\r\n"
        "\t0.46\t\r\n"
        "\t\t0.17\r\n"
        "0.21\t0.48\t\r\n"
        "0.27\t\t0.16\r\n"
        "\t0.41\t0.18\r\n"
        "0.24\t0.43\t0.19")  # Windows line ends, no newline at the end
NAMES = ["a@0.5", "b@0.5", "c@0.5", "a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]


@pytest.fixture
def tables(tmp_path):
    val, test = tmp_path / "results.txt", tmp_path / "results_test.txt"
    val.write_text(VAL)
    test.write_text(TEST)
    return val, test


def test_reader_names_costs_and_losses(tables):
    table = read_standley(tables[0], ["a", "b", "c"])
    assert table.tasks == ("a", "b", "c")
    assert list(table.names) == NAMES
    assert [c.cost for c in table.candidates] == [0.5] * 3 + [1.0] * 7
    assert table.candidate("b@0.5").losses == {"b": 0.5}
    assert table.candidate("a+c").losses == {"a": 0.26, "c": 0.15}
    assert table.candidate("a+b+c").losses == {"a": 0.23, "b": 0.44, "c": 0.17}
    assert list(read_standley(tables[1], ["a", "b", "c"]).names) == NAMES  # the same networks, line for line


def test_release_task_names_are_the_default(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("0.1\t0.2\t0.3\t0.4\t0.5\n0.1\t0.2\t0.3\t0.4\t0.5\n\n")
    table = read_standley(path)
    assert table.tasks == RELEASE_TASKS
    assert table.names[-1] == "+".join(RELEASE_TASKS) and table.names[0] == "segmentation@0.5"


def test_repeated_networks_get_numbered(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("0.3\t0.4\n0.2\t\n0.21\t\n\t0.3\n")
    assert read_standley(path, ["x", "y"]).names == ("x@0.5", "y@0.5", "x", "x#2", "y")


@pytest.mark.parametrize("text, tasks, fragments", [
    ("", ["a"], ["empty"]),
    ("0.1\t0.2\t0.3\n0.1\t0.2\n", ["a", "b", "c"], ["line 2", "2 tab-separated cells", "first line has 3"]),
    ("0.1\t0.2\t0.3\n0.1\tlow\t\n", ["a", "b", "c"], ["line 2", "column 2 (b)", "'low' is not a number"]),
    ("0.1\t0.2\t0.3\n0.1\t-0.2\t\n", ["a", "b", "c"], ["line 2", "column 2 (b)", "negative"]),
    ("0.1\t0.2\t0.3\n0.1\tnan\t\n", ["a", "b", "c"], ["line 2", "finite"]),
    ("0.1\t0.2\t0.3\n\t\t\n", ["a", "b", "c"], ["line 2", "every cell is blank"]),
    ("0.1\t0.2\t0.3\n", ["a", "b", "c", "d"], ["3 task columns", "fewer than the 4", "a, b, c, d"]),
    ("0.1\t0.2\t0.3\n", ["a", "b"], ["3 task columns", "more than the 2"]),
    ("0.1\t0.2\t0.3\n", None, ["3 task columns", "release's", "--tasks"]),
    ("0.1\t0.2\t0.3\n", ["a", "b", "a"], ["'a' is named twice"]),
    ("0.1\t0.2\t\n0.1\t\t\n", ["a", "b", "c"], ["column 3 (c)", "no network solves"]),
    ("name,cost,a\nx,1,0.1\n", ["a"], ["looks like a candidates CSV", "leave out --format standley"]),
])
def test_bad_tables(tmp_path, text, tasks, fragments):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        read_standley(path, tasks)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def test_read_table_formats(tables, tmp_path):
    with pytest.raises(BadInput, match="--format standley"):
        read_table(tables[0], "csv")
    with pytest.raises(BadInput, match="--tasks names the columns"):
        read_table(tmp_path / "c.csv", "csv", ["a"])
    with pytest.raises(BadInput, match="unknown table format 'tsv'"):
        read_table(tables[0], "tsv")


def test_test_scoring_by_hand(tables):
    val, test = (read_standley(p, ["a", "b", "c"]) for p in tables)
    selection = select_networks(val, 2)
    assert selection.networks == ("b+c", "a+b+c") and selection.total_loss == pytest.approx(0.80)
    assert selection.assignment == {"a": "a+b+c", "b": "b+c", "c": "a+b+c"}
    scored = rescore(selection, test)
    # On the test table each task goes to the chosen network that is best there:
    # a: a+b+c 0.24; b: min(b+c 0.41, a+b+c 0.43); c: min(b+c 0.18, a+b+c 0.19).
    assert scored.total_loss == math.fsum([0.24, 0.41, 0.18])
    assert scored.assignment == {"a": "a+b+c", "b": "b+c", "c": "b+c"}
    assert scored.networks == selection.networks and scored.cost == selection.cost


def test_match_tables_says_what_is_missing(tables, tmp_path):
    val = read_standley(tables[0], ["a", "b", "c"])
    short = tmp_path / "short.txt"
    short.write_text("".join(VAL.splitlines(keepends=True)[:6]))  # without b+c and a+b+c
    with pytest.raises(BadInput, match=r"2 of the 10 candidate networks are missing there: b\+c, a\+b\+c"):
        match_tables(val, read_standley(short, ["a", "b", "c"]))
    other = read_standley(tables[1], ["a", "b", "x"])
    with pytest.raises(BadInput, match="lacks task c and has task x"):
        match_tables(val, other)


# -- HOA on any table ---------------------------------------------------------------------------
def test_hoa_replaces_larger_groups_by_the_pair_average(tables):
    val = read_standley(tables[0], ["a", "b", "c"])
    hoa = predict_from_pairs(val)
    assert hoa.predicted == ("a+b+c",) and hoa.dropped == 1 and hoa.missing_pairs == ()
    predicted = hoa.table.candidate("a+b+c")
    # direct: each task's mean over the pair networks inside the group
    assert predicted.losses == {"a": (0.22 + 0.26) / 2, "b": (0.47 + 0.40) / 2, "c": (0.15 + 0.19) / 2}
    assert predicted.cost == 1.0
    assert hoa.table.names[:-1] == tuple(NAMES[:-1])  # the networks of 1-2 tasks as measured


def test_hoa_with_a_missing_pair_averages_the_pairs_there_are(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("".join(line for i, line in enumerate(VAL.splitlines(keepends=True)) if i != 6))  # no b+c
    hoa = predict_from_pairs(read_standley(path, ["a", "b", "c"]))
    assert hoa.missing_pairs == (("b", "c"),)
    assert hoa.table.candidate("a+b+c").losses == {"a": (0.22 + 0.26) / 2, "b": 0.47, "c": 0.15}


def test_hoa_prices_groups_like_branchnet_when_pair_costs_differ():
    from branchnet.selection import Candidate, CandidateTable

    # encoder 1.0, heads 0.01 / 0.02 / 0.03: a network costs 1 + its heads
    heads = {"a": 0.01, "b": 0.02, "c": 0.03, "d": 0.04}
    cands = [Candidate(t, 1 + h, {t: 0.5}) for t, h in heads.items()]
    cands += [Candidate(f"{x}+{y}", 1 + heads[x] + heads[y], {x: 0.4, y: 0.45})
              for x, y in [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]]
    hoa = predict_from_pairs(CandidateTable(tuple(heads), tuple(cands)))
    assert hoa.table.candidate("a+b+c").cost == pytest.approx(1.06)
    assert hoa.table.candidate("a+b+c+d").cost == pytest.approx(1.10)


def test_hoa_bad_input():
    from branchnet.selection import Candidate, CandidateTable

    two = CandidateTable(("a", "b"), (Candidate("a+b", 1, {"a": 1, "b": 1}),))
    with pytest.raises(BadInput, match="at least three tasks"):
        predict_from_pairs(two)
    only_big = CandidateTable(("a", "b", "c"), (Candidate("a+b+c", 1, {"a": 1, "b": 1, "c": 1}),
                                                 Candidate("a+b", 1, {"a": 1, "b": 1})))
    with pytest.raises(BadInput, match="no network of one or two tasks solves 'c'"):
        predict_from_pairs(only_big)


# -- command line ---------------------------------------------------------------------------------
def test_cli_standley_with_test(cli, tables):
    val, test = tables
    result = cli("select", "--candidates", val, "--format", "standley", "--tasks", "a,b,c", "--test", test,
                 "--budget", "2", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert list(data) == ["budget", "cost", "total_loss", "networks", "assignment", "optimal", "lower_bound", "gap",
                          "test_total_loss", "test_assignment"]
    assert data["networks"] == ["b+c", "a+b+c"]
    assert data["test_total_loss"] == pytest.approx(0.83)
    assert data["test_assignment"] == {"a": "a+b+c", "b": "b+c", "c": "b+c"}
    plain = cli("select", "--candidates", val, "--format", "standley", "--tasks", "a,b,c", "--test", test,
                "--budget", "2")
    assert "test loss 0.83" in plain.out and "test network" in plain.out


def test_cli_csv_with_test_matched_by_name(cli, tmp_path):
    val, test = tmp_path / "val.csv", tmp_path / "test.csv"
    val.write_text("name,cost,a,b\nab,1,0.3,0.4\na,1,0.2,\nb,1,,0.5\n")
    test.write_text("name,cost,a,b\nb,1,,0.45\nextra,1,0.1,\nab,1,0.35,0.42\na,1,0.25,\n")  # other order
    data = json.loads(cli("select", "--candidates", val, "--test", test, "--budget", "2", "--json").out)
    assert data["networks"] == ["ab", "a"]
    assert data["test_total_loss"] == pytest.approx(0.25 + 0.42)
    assert data["test_assignment"] == {"a": "a", "b": "ab"}


def test_cli_hoa_marks_predicted_networks(cli, tables):
    val, test = tables
    result = cli("select", "--candidates", val, "--format", "standley", "--tasks", "a,b,c", "--test", test,
                 "--predict-higher-order", "--budget", "1", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["networks"] == ["a+b+c"] and data["predicted"] == ["a+b+c"]
    assert data["total_loss"] == pytest.approx(0.24 + 0.435 + 0.17)  # the prediction
    assert data["test_total_loss"] == pytest.approx(0.24 + 0.43 + 0.19)  # the measured network on test
    shown = cli("select", "--candidates", val, "--format", "standley", "--tasks", "a,b,c",
                "--predict-higher-order", "--budget", "1")
    assert "a+b+c (predicted)" in shown.out


@pytest.mark.parametrize("test_text, extra, fragments", [
    ("".join(VAL.splitlines(keepends=True)[:6]), [], ["--test", "missing there: b+c, a+b+c"]),
    ("0.1\t0.2\n0.1\t\n", [], ["2 task columns", "fewer than the 3"]),
    ("0.31\t0.52\t0.21\n0.26\tx\t\n", [], ["line 2", "not a number"]),
    (VAL, ["--tasks", "a,b,c,d"], ["3 task columns", "fewer than the 4"]),
])
def test_cli_bad_test_tables(cli, tables, tmp_path, test_text, extra, fragments):
    test = tmp_path / "t.txt"
    test.write_text(test_text)
    out, plot = tmp_path / "sel.json", tmp_path / "p.png"
    args = ["--tasks", "a,b,c"] if not extra else extra
    result = cli("select", "--candidates", tables[0], "--format", "standley", *args, "--test", test,
                 "--sweep", "1:2:0.5", "--out", out, "--plot", plot)
    assert_one_line_error(result, *fragments)
    assert result.out == "" and not out.exists() and not plot.exists()


def test_cli_bad_format_options(cli, tables, tmp_path):
    assert_one_line_error(cli("select", "--candidates", tables[0], "--budget", "1"), "--format standley")
    assert_one_line_error(cli("select", "--candidates", tables[0], "--format", "xls", "--budget", "1"),
                          "unknown table format 'xls'")
    csv = tmp_path / "c.csv"
    csv.write_text("name,cost,a\nx,1,0.1\n")
    assert_one_line_error(cli("select", "--candidates", csv, "--tasks", "a", "--budget", "1"), "--tasks")
