"""Trees (docs/design.md "Tree"): costs and dissimilarity from the definitions, tree.json I/O."""

import json

import numpy as np
import pytest

from branchnet.errors import BadInput
from branchnet.tree import (Tree, check_partitions, load_tree, make_tree, save_tree, separate_tree, shared_tree,
                            tree_dissimilarity, tree_flops, tree_params)

TASKS = ["seg", "depth", "normals", "edge"]
LOCATIONS = ["layer1", "layer2", "layer3"]
PARTITIONS = [[["seg", "depth", "normals", "edge"]],
              [["seg", "depth", "normals"], ["edge"]],
              [["seg", "normals"], ["depth"], ["edge"]]]


def random_affinity(rng, depth, n):
    a = rng.uniform(-1, 1, size=(depth, n, n))
    a = (a + a.transpose(0, 2, 1)) / 2
    for d in range(depth):
        np.fill_diagonal(a[d], 1.0)
    return a


def test_params_and_flops_follow_the_definition():
    stage = [10, 200, 3000]
    head = [1, 2, 3, 4]
    # k = (1, 2, 3): 1*10 + 2*200 + 3*3000 + (1+2+3+4)
    assert tree_params(PARTITIONS, TASKS, stage, head) == 10 + 400 + 9000 + 10
    assert tree_flops(PARTITIONS, TASKS, [1.5, 2.5, 3.5], [0.5] * 4) == pytest.approx(1.5 + 5 + 10.5 + 2)


def test_dissimilarity_follows_the_definition():
    rng = np.random.default_rng(0)
    a = random_affinity(rng, 3, 4)
    dist = 1 - a
    i = {t: k for k, t in enumerate(TASKS)}
    # stage 0: one group of all four tasks
    s0 = max(dist[0, x, y] for x in range(4) for y in range(4) if x < y)
    # stage 1: {seg, depth, normals} and the singleton {edge} (counts 0), mean of 2 groups
    g = [i["seg"], i["depth"], i["normals"]]
    s1 = max(dist[1, x, y] for x in g for y in g if x < y) / 2
    # stage 2: {seg, normals}, {depth}, {edge}: mean of 3 groups
    s2 = dist[2, i["seg"], i["normals"]] / 3
    assert tree_dissimilarity(PARTITIONS, TASKS, a) == pytest.approx(s0 + s1 + s2, abs=1e-12)


def test_shared_and_separate_ends():
    rng = np.random.default_rng(1)
    a = random_affinity(rng, 3, 4)
    shared = shared_tree(TASKS, LOCATIONS, a, [1, 2, 3], [1, 1, 1, 1])
    separate = separate_tree(TASKS, LOCATIONS, a, [1, 2, 3], [1, 1, 1, 1])
    assert shared.partitions == [[TASKS]] * 3 and shared.params == 6 + 4
    assert separate.partitions == [[[t] for t in TASKS]] * 3 and separate.params == 4 * 6 + 4
    assert separate.dissimilarity == 0.0
    assert shared.dissimilarity == pytest.approx(sum((1 - a[d])[np.triu_indices(4, 1)].max() for d in range(3)))


def test_partitions_are_made_canonical():
    messy = [[["edge", "normals", "depth", "seg"]], [["edge"], ["normals", "seg", "depth"]],
             [["edge"], ["depth"], ["normals", "seg"]]]
    assert check_partitions(messy, TASKS) == PARTITIONS


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    tree = make_tree(PARTITIONS, TASKS, LOCATIONS, random_affinity(rng, 3, 4), [10, 20, 30], [1, 1, 1, 1],
                     budget={"params": 100, "flops": None}, backbone="resnet50", method="exact")
    path = save_tree(tmp_path / "tree.json", tree)
    obj = json.loads(path.read_text())
    for key in ("tasks", "locations", "partitions", "params", "flops", "dissimilarity", "budget"):
        assert key in obj
    assert obj["backbone"] == "resnet50" and obj["params"] == 10 + 40 + 90 + 4
    loaded = load_tree(path)
    assert loaded.to_json() == tree.to_json()
    assert isinstance(loaded, Tree) and loaded.group_counts == [1, 2, 3]


def test_unknown_keys_survive(tmp_path):
    obj = {"tasks": TASKS, "locations": LOCATIONS, "partitions": PARTITIONS, "params": 1, "flops": None,
           "dissimilarity": 0.5, "budget": {"params": 2, "flops": None}, "note_for_me": {"x": 1}}
    (tmp_path / "t.json").write_text(json.dumps(obj))
    tree = load_tree(tmp_path / "t.json")
    save_tree(tmp_path / "u.json", tree)
    assert json.loads((tmp_path / "u.json").read_text())["note_for_me"] == {"x": 1}


def _write(tmp_path, **changes):
    obj = {"tasks": TASKS, "locations": LOCATIONS, "partitions": PARTITIONS, "params": 1, "flops": None,
           "dissimilarity": 0.5, "budget": {"params": 2, "flops": None}}
    obj.update(changes)
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


@pytest.mark.parametrize("changes, fragment", [
    ({"partitions": [[["seg", "depth", "normals", "edge"]], [["seg", "depth"], ["normals", "edge"]],
                     [["seg", "edge"], ["depth"], ["normals"]]]}, "nest"),
    ({"partitions": [[["seg", "depth", "normals"]], [["seg", "depth", "normals"]], [["seg"], ["depth", "normals"]]]},
     "misses task(s) edge"),
    ({"partitions": [[["seg", "depth", "normals", "edge", "seg"]], [["seg", "depth", "normals", "edge"]],
                     [["seg", "depth", "normals", "edge"]]]}, "twice"),
    ({"partitions": [[["seg", "depth", "normals", "edge", "sky"]], [["seg", "depth", "normals", "edge"]],
                     [["seg", "depth", "normals", "edge"]]]}, "sky"),
    ({"tasks": ["seg", "depth", "seg", "edge"]}, "named twice"),
    ({"locations": ["layer1", "layer2"]}, "one partition per location"),
    ({"partitions": [[[]], [TASKS], [TASKS]]}, "empty"),
    ({"partitions": "nope"}, "partition"),
    ({"params": "many"}, "params"),
])
def test_bad_tree_files(tmp_path, changes, fragment):
    path = _write(tmp_path, **changes)
    with pytest.raises(BadInput) as err:
        load_tree(path)
    message = str(err.value)
    assert "\n" not in message and fragment.lower() in message.lower(), message


def test_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text('{"tasks": [1, 2')
    with pytest.raises(BadInput, match="invalid JSON at line 1"):
        load_tree(path)
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match="JSON object"):
        load_tree(path)
    with pytest.raises(BadInput, match="does not exist"):
        load_tree(tmp_path / "nope.json")
    path.write_text(json.dumps({"tasks": TASKS, "locations": LOCATIONS}))
    with pytest.raises(BadInput, match="missing key 'partitions'"):
        load_tree(path)
