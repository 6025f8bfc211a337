"""``branchnet select`` on the command line: outputs, files, and one-line bad-input errors."""

from __future__ import annotations

import json

import pytest

from branchnet.selection import read_candidates, select_networks, write_candidates
from branchnet.selection.synthetic import paper_like_table
from conftest import assert_one_line_error

CSV = """name,cost,seg,depth,normals
seg+depth+normals,1,0.51,0.22,0.13
seg+depth,1,0.50,0.21,
depth+normals,1,,0.20,0.125
seg,1,0.49,,
depth,1,,0.23,
normals,1,,,0.12
seg@0.5,0.5,0.53,,
depth@0.5,0.5,,0.24,
normals@0.5,0.5,,,0.13
"""


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "candidates.csv"
    path.write_text(CSV)
    return path


def test_select_prints_networks_assignment_cost_and_loss(cli, csv_path):
    result = cli("select", "--candidates", csv_path, "--budget", "2")
    assert result.code == 0, result.err
    for text in ("depth+normals", "seg", "cost 2", "total loss 0.815", "serves"):
        assert text in result.out


def test_select_json_alone_on_stdout(cli, csv_path):
    result = cli("select", "--candidates", csv_path, "--budget", "2", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)  # nothing else on stdout
    assert list(data) == ["budget", "cost", "total_loss", "networks", "assignment", "optimal", "lower_bound", "gap"]
    assert data == {"budget": 2.0, "cost": 2.0, "total_loss": 0.815, "networks": ["depth+normals", "seg"],
                    "assignment": {"seg": "seg", "depth": "depth+normals", "normals": "depth+normals"},
                    "optimal": True, "lower_bound": 0.815, "gap": 0.0}


def test_select_json_matches_the_library(cli, tmp_path):
    table = paper_like_table(5, seed=1)
    path = write_candidates(tmp_path / "c.csv", table)
    result = cli("select", "--candidates", path, "--budget", "2.5", "--json")
    assert json.loads(result.out) == select_networks(read_candidates(path), 2.5).to_json()


def test_select_out_file(cli, csv_path, tmp_path):
    out = tmp_path / "sel" / "selection.json"
    result = cli("select", "--candidates", csv_path, "--budget", "1.5", "--out", out)
    assert result.code == 0, result.err
    assert json.loads(out.read_text())["networks"] == ["seg+depth", "normals@0.5"]


def test_select_max_loss(cli, csv_path):
    plain = json.loads(cli("select", "--candidates", csv_path, "--budget", "1.5", "--json").out)
    assert plain["networks"] == ["seg+depth", "normals@0.5"]  # normals at 0.13
    result = cli("select", "--candidates", csv_path, "--budget", "1.5", "--json", "--max-loss", "normals=0.125")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["networks"] == ["depth+normals", "seg@0.5"] and data["total_loss"] == pytest.approx(0.855)


def test_sweep_table_and_plot(cli, csv_path, tmp_path):
    plot = tmp_path / "sweep.png"
    result = cli("select", "--candidates", csv_path, "--sweep", "1:3:0.5", "--plot", plot)
    assert result.code == 0, result.err
    for budget in ("1", "1.5", "2", "2.5", "3"):
        assert f"│ {budget:>6} │" in result.out
    assert "seg+depth+normals (seg, depth, normals)" in result.out
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_sweep_default_plot_path_and_json_list(cli, csv_path):
    result = cli("select", "--candidates", csv_path, "--sweep", "1:2:0.5", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [d["budget"] for d in data] == [1.0, 1.5, 2.0]
    assert (csv_path.parent / "candidates-sweep.png").exists()


def test_budget_with_sweep_keeps_the_single_json(cli, csv_path, tmp_path):
    result = cli("select", "--candidates", csv_path, "--budget", "2", "--sweep", "1:2:1", "--json",
                 "--plot", tmp_path / "p.png")
    assert result.code == 0, result.err
    assert json.loads(result.out)["budget"] == 2.0


# -- bad input: exit 2, one line naming the line/column/option ---------------------------------
@pytest.mark.parametrize("text, fragments", [
    ("", ["empty"]),
    ("name,depth,seg\nx,1,1\n", ["line 1", "name,cost"]),
    ("name,cost,seg\nx,cheap,1\n", ["line 2", "column 'cost'", "not a number"]),
    ("name,cost,seg\nx,-2,1\n", ["line 2", "column 'cost'", "negative"]),
    ("name,cost,seg\nx,1,-1\n", ["line 2", "column 'seg'", "negative"]),
    ("name,cost,seg\nx,1,NaN\n", ["line 2", "column 'seg'", "finite"]),
    ("name,cost,seg\nx,1,0.3\nx,1,0.2\n", ["line 3", "'x' already appears"]),
    ("name,cost,seg,seg\nx,1,0.3,0.2\n", ["line 1", "'seg' appears twice"]),
    ("name,cost,seg,depth\nx,1,0.3,\n", ["column 'depth'", "no network solves"]),
])
def test_bad_csv_is_one_line(cli, tmp_path, text, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    out = tmp_path / "selection.json"
    result = cli("select", "--candidates", path, "--budget", "2", "--out", out)
    assert_one_line_error(result, *fragments)
    assert result.out == "" and not out.exists()


@pytest.mark.parametrize("args, fragments", [
    (["--budget", "0.5"], ["below the minimum 1", "at least 1"]),
    (["--budget", "abc"], ["--budget", "not a number"]),
    (["--budget", "-1"], ["--budget"]),
    ([], ["--budget", "--sweep"]),
    (["--sweep", "1:5"], ["--sweep", "START:STOP:STEP"]),
    (["--sweep", "3:1:0.5"], ["--sweep", "below START"]),
    (["--sweep", "0.5:2:0.5"], ["below the minimum 1"]),
    (["--sweep", "1:2:x"], ["--sweep step"]),
    (["--budget", "2", "--max-loss", "sge=0.3"], ["unknown task", "did you mean 'seg'"]),
    (["--budget", "2", "--max-loss", "seg"], ["--max-loss 'seg'", "TASK=VALUE"]),
    (["--budget", "2", "--max-loss", "seg=low"], ["--max-loss", "not a number"]),
    (["--budget", "2", "--max-loss", "seg=0.6", "--max-loss", "seg=0.5"], ["twice"]),
    (["--budget", "2", "--max-loss", "seg=0.1"], ["'seg'", "limit 0.1", "0.49"]),
    (["--budget", "1", "--max-loss", "seg=0.495"], ["task 'seg'", "within budget 1", "at least 2"]),
])
def test_bad_options_are_one_line(cli, csv_path, tmp_path, args, fragments):
    out = tmp_path / "selection.json"
    plot = tmp_path / "sweep.png"
    result = cli("select", "--candidates", csv_path, "--out", out, "--plot", plot, *args)
    assert_one_line_error(result, *fragments)
    assert not out.exists() and not plot.exists()


def test_missing_candidates_file(cli, tmp_path):
    assert_one_line_error(cli("select", "--candidates", tmp_path / "none.csv", "--budget", "1"), "does not exist")


# -- --time-limit: the best selection found, with its proven gap ---------------------------------
@pytest.fixture
def hard_csv(tmp_path):
    """All 255 groups of 8 tasks, each network paying 1.3 % per extra task: budget 3 takes many nodes."""
    from branchnet.selection import Candidate, CandidateTable

    table = paper_like_table(8, seed=0)
    table = CandidateTable(table.tasks, tuple(Candidate(c.name, c.cost * (1 + 0.013 * (len(c.losses) - 1)),
                                                        c.losses) for c in table.candidates))
    return write_candidates(tmp_path / "hard.csv", table)


def test_time_limit_returns_the_best_found_marked_not_optimal(cli, hard_csv):
    # Not timed: a limit of a nanosecond passes before the search's second node.
    full = json.loads(cli("select", "--candidates", hard_csv, "--budget", "3", "--json").out)
    assert full["optimal"] is True and full["gap"] == 0.0 and full["lower_bound"] == full["total_loss"]
    result = cli("select", "--candidates", hard_csv, "--budget", "3", "--json", "--time-limit", "1e-9")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["optimal"] is False and data["gap"] >= 0.0
    assert data["lower_bound"] <= full["total_loss"] <= data["total_loss"]
    assert data["gap"] == pytest.approx((data["total_loss"] - data["lower_bound"]) / data["total_loss"])
    table = read_candidates(hard_csv)
    assert data["cost"] <= 3 and set(data["assignment"]) == set(table.tasks)
    assert set(data["assignment"].values()) <= set(data["networks"])
    text = cli("select", "--candidates", hard_csv, "--budget", "3", "--time-limit", "1e-9")
    assert text.code == 0 and "not proven optimal" in text.out and "lower bound" in text.out


def test_time_limit_in_a_sweep_marks_each_budget(cli, hard_csv, tmp_path):
    result = cli("select", "--candidates", hard_csv, "--sweep", "2:3:1", "--time-limit", "1e-9", "--no-baselines",
                 "--plot", tmp_path / "p.png", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [d["optimal"] for d in data] == [False, False] and all(d["gap"] >= 0 for d in data)
    text = cli("select", "--candidates", hard_csv, "--sweep", "2:3:1", "--time-limit", "1e-9", "--no-baselines",
               "--plot", tmp_path / "p.png")
    assert "(gap " in text.out and "not proven optimal" in text.out


@pytest.mark.parametrize("value, fragment", [("0", "positive"), ("-1", "positive"), ("abc", "not a number"),
                                             ("nan", "positive"), ("inf", "positive")])
def test_bad_time_limit_is_one_line(cli, csv_path, tmp_path, value, fragment):
    out = tmp_path / "selection.json"
    result = cli("select", "--candidates", csv_path, "--budget", "2", "--out", out, f"--time-limit={value}")
    assert_one_line_error(result, "--time-limit", fragment)
    assert not out.exists()


def test_progress_shows_incumbent_bound_and_gap_on_stderr(cli, hard_csv, monkeypatch):
    import branchnet.selection.live as live
    import branchnet.selection.partition_search as search

    monkeypatch.setenv("BRANCHNET_QUIET", "0")
    monkeypatch.setattr(live, "LOG_EVERY", 0.0)  # stderr is no terminal here: a line per report
    monkeypatch.setattr(search, "PROGRESS_EVERY", 0.0)
    result = cli("select", "--candidates", hard_csv, "--budget", "3")
    assert result.code == 0, result.err
    line = next(line for line in result.err.splitlines() if line.startswith("searching"))
    for fragment in ("budget 3:", "best total loss", "lower bound", "gap", "nodes"):
        assert fragment in line
    for quiet in (["--json"], ["--quiet"]):
        result = cli("select", "--candidates", hard_csv, "--budget", "3", *quiet)
        assert result.code == 0 and "searching" not in result.err
