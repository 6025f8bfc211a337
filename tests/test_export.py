"""Graph exports of a tree: the networkx graph, the file formats, reading back, the CLI."""

import json
import re

import networkx as nx
import numpy as np
import pytest

from branchnet.errors import BadInput
from branchnet.tree.export import (FORMATS, default_export_path, export_tree, graph_tree, read_graph, to_dot, to_mermaid,
                              tree_graph)
from branchnet.tree import load_tree, make_tree, save_tree
from conftest import assert_one_line_error

TASKS = ["seg", "depth", "normals", "edge", "sal"]
LOCATIONS = ["layer1", "layer2", "layer3", "layer4"]
PARTITIONS = [[["seg", "depth", "normals", "edge", "sal"]],
              [["seg", "normals", "sal"], ["depth", "edge"]],
              [["seg", "normals", "sal"], ["depth"], ["edge"]],
              [["seg", "normals"], ["sal"], ["depth"], ["edge"]]]


@pytest.fixture
def tree():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(4, 5, 5))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(4):
        np.fill_diagonal(a[d], 1.0)
    return make_tree(PARTITIONS, TASKS, LOCATIONS, a, stage_params=[200_000, 1_200_000, 7_100_000, 15_000_000],
                     head_params=[500_000, 400_000, 300_000, 200_000, 100_000],
                     stage_flops=[1e9, 2e9, 3e9, 4e9], head_flops=[1e8] * 5,
                     budget={"params": 90e6, "flops": None}, backbone="resnet50", method="exact")


def test_graph_structure(tree):
    g = tree_graph(tree)
    stages = [n for n, d in g.nodes(data=True) if d["kind"] == "stage"]
    heads = [n for n, d in g.nodes(data=True) if d["kind"] == "head"]
    assert len(stages) == sum(tree.group_counts) and len(heads) == len(TASKS)
    assert nx.is_arborescence(g) and g.in_degree("input") == 0
    assert all(g.out_degree(h) == 0 for h in heads)
    for node in g:
        assert re.fullmatch(r"[A-Za-z0-9_]+", node), node  # safe for DOT, GML, Mermaid
    # every stage node holds its group, its stage's cost, and feeds exactly its sub-groups
    for node in stages:
        data = g.nodes[node]
        d = data["stage"]
        assert data["tasks"] in tree.partitions[d]
        assert data["params"] == tree.costs["stage_params"][d] and data["flops"] == tree.costs["stage_flops"][d]
        children = [g.nodes[c] for c in g.successors(node)]
        covered = sorted(t for c in children for t in c["tasks"])
        assert covered == sorted(data["tasks"])
    assert g.nodes["head_4"]["task"] == "sal" and g.nodes["head_4"]["params"] == 100_000
    # the total cost of the nodes is the tree's params
    assert sum(d["params"] for n, d in g.nodes(data=True) if d["kind"] != "input") == tree.params


@pytest.mark.parametrize("fmt", ["json", "graphml", "gml"])
def test_exports_read_back_to_the_same_tree(tmp_path, tree, fmt):
    path = export_tree(tree, tmp_path / f"tree{default_export_path('tree.json', fmt).name[4:]}", fmt)
    back = read_graph(path, fmt)
    assert back.to_json() == tree.to_json()


def test_graph_round_trip_in_memory(tree):
    assert graph_tree(tree_graph(tree)).to_json() == tree.to_json()


def test_dot_and_mermaid_text(tmp_path, tree):
    dot = to_dot(tree_graph(tree))
    assert dot.startswith("digraph branchnet {") and dot.rstrip().endswith("}")
    assert "input -> s0_g0;" in dot and "s3_g3 -> head_4;" in dot and ":" not in dot.split("{", 1)[1]
    mermaid = to_mermaid(tree_graph(tree))
    assert mermaid.startswith("flowchart LR") and "s3_g0 --> head_0" in mermaid
    assert export_tree(tree, tmp_path / "t.dot", "dot").read_text().count("->") == tree_graph(tree).number_of_edges()


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_drawings(tmp_path, tree, fmt, magic):
    path = export_tree(tree, tmp_path / f"t.{fmt}", fmt)
    data = path.read_bytes()
    assert magic in data[:400]


def test_default_paths():
    assert default_export_path("runs/x/tree.json", "graphml").name == "tree.graphml"
    assert default_export_path("runs/x/tree.json", "json").name == "tree.graph.json"
    assert default_export_path("t.json", "mermaid").name == "t.mmd"


def test_unknown_format(tmp_path, tree):
    with pytest.raises(BadInput, match="unknown export format 'pdf'"):
        export_tree(tree, tmp_path / "t.pdf", "pdf")


def test_reading_a_foreign_graph_is_bad_input(tmp_path):
    path = tmp_path / "g.graphml"
    nx.write_graphml(nx.path_graph(3), path)
    with pytest.raises(BadInput, match="tasks"):
        read_graph(path)


def test_cli_export(cli, tmp_path, tree):
    src = save_tree(tmp_path / "tree.json", tree)
    for fmt in FORMATS:
        result = cli("export", src, "--format", fmt)
        assert result.code == 0, result.err
        assert result.out == ""
        assert default_export_path(src, fmt).is_file()
    assert load_tree(src).to_json() == tree.to_json()  # the json export did not overwrite tree.json
    result = cli("export", src, "--format", "graphml", "--out", tmp_path / "custom.graphml")
    assert result.code == 0 and read_graph(tmp_path / "custom.graphml").to_json() == tree.to_json()


def test_cli_export_bad_input(cli, tmp_path, tree):
    src = save_tree(tmp_path / "tree.json", tree)
    assert_one_line_error(cli("export", src, "--format", "pdf"), "unknown export format")
    obj = json.loads(src.read_text())
    obj["partitions"][2] = [["seg", "normals", "sal", "depth"], ["edge"]]  # does not refine stage 1
    src.write_text(json.dumps(obj))
    assert_one_line_error(cli("export", src, "--format", "dot"), "nest")
    obj["partitions"][2] = [["seg", "normals", "sal"], ["depth"]]  # misses edge
    src.write_text(json.dumps(obj))
    assert_one_line_error(cli("export", src, "--format", "dot"), "misses task(s) edge")
    assert not (tmp_path / "tree.dot").exists()
    assert_one_line_error(cli("export", tmp_path / "none.json", "--format", "dot"), "does not exist")
