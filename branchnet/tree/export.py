"""A tree as a graph (networkx) and in graph file formats: JSON, GraphML, GML, DOT, Mermaid, PNG, SVG.

The graph (:func:`tree_graph`) is a rooted tree like the paper's Fig. 2:

* ``input``: the image, the root;
* one node per group g of each stage d, id ``s{d}_g{j}`` (j: the group's index in the
  canonical partition), with attributes ``kind="stage"``, ``stage`` (d), ``location``,
  ``tasks`` (list of names), ``params`` and ``flops`` of that one copy of the stage
  (None when the tree does not carry per-stage costs);
* one leaf per task head, id ``head_{i}`` (i: the task's index), with ``kind="head"``,
  ``task``, ``tasks`` ([task]), ``params`` and ``flops`` of the head;
* edges from each node to the nodes it feeds (parent -> child).

Ids hold only letters, digits and ``_`` so they survive DOT, GML and Mermaid unquoted.
Graph attributes carry the tree's fields (tasks, locations, params, flops,
dissimilarity, budget, ...), so GraphML, GML and JSON files read back to the same
:class:`~branchnet.tree.Tree` (:func:`read_graph`). In GraphML and GML, whose attribute
values must be scalars, lists and objects are stored as JSON text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import networkx as nx

from branchnet.errors import BadInput, unknown_choice
from branchnet.atomic import atomic_path, atomic_write_text
from branchnet.tree import Tree, tree_from_json

FORMATS = ("json", "graphml", "gml", "dot", "mermaid", "png", "svg")
#: File suffix of each format (json gets ``.graph.json`` so it never overwrites tree.json).
SUFFIXES = {"json": ".graph.json", "graphml": ".graphml", "gml": ".gml", "dot": ".dot",
            "mermaid": ".mmd", "png": ".png", "svg": ".svg"}

_TREE_KEYS = ("tasks", "locations", "params", "flops", "dissimilarity", "budget", "backbone", "method",
              "notes", "costs")


def stage_id(stage: int, group: int) -> str:
    return f"s{stage}_g{group}"


def head_id(task_index: int) -> str:
    return f"head_{task_index}"


def tree_graph(tree: Tree) -> nx.DiGraph:
    """The tree as a networkx DiGraph (see the module docstring for nodes and attributes)."""
    costs = tree.costs or {}

    def cost(key: str, index: int) -> float | None:
        values = costs.get(key)
        return None if values is None else values[index]

    graph = nx.DiGraph()
    graph.graph.update({key: value for key, value in tree.to_json().items() if key != "partitions"})
    graph.add_node("input", kind="input", label="input", tasks=list(tree.tasks))
    parent_of = {t: "input" for t in tree.tasks}
    for d, partition in enumerate(tree.partitions):
        current = {}
        for j, group in enumerate(partition):
            node = stage_id(d, j)
            graph.add_node(node, kind="stage", stage=d, group=j, location=tree.locations[d], tasks=list(group),
                           params=cost("stage_params", d), flops=cost("stage_flops", d),
                           label=f"{tree.locations[d]}: {', '.join(group)}")
            graph.add_edge(parent_of[group[0]], node)
            for t in group:
                current[t] = node
        parent_of = current
    for i, t in enumerate(tree.tasks):
        node = head_id(i)
        graph.add_node(node, kind="head", task=t, tasks=[t], params=cost("head_params", i),
                       flops=cost("head_flops", i), label=f"{t} head")
        graph.add_edge(parent_of[t], node)
    return graph


def graph_tree(graph: nx.DiGraph, source: str = "graph") -> Tree:
    """Rebuild the :class:`Tree` from a graph made by :func:`tree_graph` (or read from a file)."""
    attrs = dict(graph.graph)
    for key, value in list(attrs.items()):
        if isinstance(value, str) and key in _TREE_KEYS and key not in ("backbone", "method"):
            try:
                attrs[key] = json.loads(value)
            except json.JSONDecodeError:
                raise BadInput(f"{source}: graph attribute '{key}' is not valid JSON") from None
    if "tasks" not in attrs or "locations" not in attrs:
        raise BadInput(f"{source}: the graph lacks the 'tasks'/'locations' graph attributes of a branchnet tree; "
                       "export it with `branchnet export`")
    depth = len(attrs["locations"]) if isinstance(attrs["locations"], list) else 0
    partitions: list[list[list[str]]] = [[] for _ in range(depth)]
    for node, data in graph.nodes(data=True):
        if data.get("kind") != "stage":
            continue
        tasks = data.get("tasks")
        if isinstance(tasks, str):
            tasks = json.loads(tasks)
        stage = int(data.get("stage", -1))
        if not 0 <= stage < depth or not isinstance(tasks, list):
            raise BadInput(f"{source}: node {node} has no valid 'stage'/'tasks'")
        partitions[stage].append((int(data.get("group", 0)), tasks))  # type: ignore[arg-type]
    ordered = [[tasks for _, tasks in sorted(level)] for level in partitions]
    obj = {key: attrs[key] for key in _TREE_KEYS if key in attrs}
    obj["partitions"] = ordered
    for key, value in attrs.items():
        if key not in obj and key not in ("name", "node_default", "edge_default"):
            obj[key] = value
    return tree_from_json(obj, source)


def _scalar_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy whose attribute values are scalars (lists, dicts and None as JSON text)."""
    def flat(data: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in data.items():
            if isinstance(value, (list, dict)) or value is None:
                out[key] = json.dumps(value)
            elif isinstance(value, bool):
                out[key] = int(value)
            else:
                out[key] = value
        return out

    copy = nx.DiGraph()
    copy.graph.update(flat(graph.graph))
    for node, data in graph.nodes(data=True):
        copy.add_node(node, **flat(data))
    copy.add_edges_from(graph.edges())
    return copy


def _unflatten_nodes(graph: nx.DiGraph) -> nx.DiGraph:
    for _, data in graph.nodes(data=True):
        for key in ("tasks", "params", "flops"):
            if isinstance(data.get(key), str):
                try:
                    data[key] = json.loads(data[key])
                except json.JSONDecodeError:
                    pass
    return graph


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text of the tree graph (left to right, boxes for stages, ellipses for heads)."""
    def esc(text: Any) -> str:
        return str(text).replace("\\", "\\\\").replace('"', '\\"')

    lines = ["digraph branchnet {", "  rankdir=LR;", "  node [fontname=Helvetica, fontsize=10];"]
    for node, data in graph.nodes(data=True):
        kind = data.get("kind")
        if kind == "stage":
            label = esc(data["location"]) + "\\n" + "\\n".join(esc(t) for t in data["tasks"])
            lines.append(f'  {node} [shape=box, style=rounded, label="{label}"];')
        elif kind == "head":
            lines.append(f'  {node} [shape=ellipse, label="{esc(data["task"])}"];')
        else:
            lines.append(f'  {node} [shape=circle, label="input"];')
    for a, b in graph.edges():
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: nx.DiGraph) -> str:
    """Mermaid flowchart text of the tree graph (renders in Markdown: a ```mermaid block)."""
    def text(value: str) -> str:
        return value.replace('"', "#quot;")

    lines = ["flowchart LR"]
    for node, data in graph.nodes(data=True):
        kind = data.get("kind")
        if kind == "input":
            lines.append(f'  {node}(("input"))')
        elif kind == "stage":
            label = f"{data['location']}<br/>" + "<br/>".join(text(t) for t in data["tasks"])
            lines.append(f'  {node}["{label}"]')
        else:
            lines.append(f'  {node}(["{text(data["task"])}"])')
    for a, b in graph.edges():
        lines.append(f"  {a} --> {b}")
    return "\n".join(lines) + "\n"


def _layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """x = depth (input 0, stages 1..D, heads D+1); y: leaves in DFS order, parents centred."""
    pos: dict[str, tuple[float, float]] = {}
    leaves = [n for n in nx.dfs_preorder_nodes(graph, "input") if graph.out_degree(n) == 0]
    rank = {n: i for i, n in enumerate(leaves)}
    depth = max((d.get("stage", -1) for _, d in graph.nodes(data=True)), default=-1) + 1

    def place(node: str) -> float:
        data = graph.nodes[node]
        x = 0 if data.get("kind") == "input" else (depth + 1 if data.get("kind") == "head" else data["stage"] + 1)
        children = list(graph.successors(node))
        y = -float(rank[node]) if not children else sum(place(c) for c in children) / len(children)
        pos[node] = (float(x), y)
        return y

    place("input")
    return pos


def draw(graph: nx.DiGraph, path: str | os.PathLike) -> Path:
    """Draw the tree (PNG or SVG by the suffix) with matplotlib, like the paper's Fig. 2.

    Uses Graphviz's ``dot`` instead when it is installed (nicer boxes and routing).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if shutil.which("dot"):
        with atomic_path(path) as tmp:
            subprocess.run(["dot", f"-T{fmt}", "-o", str(tmp)], input=to_dot(graph).encode(), check=True,
                           capture_output=True)
        return path
    from branchnet.plotting import plt, save_figure

    pos = _layout(graph)
    leaves = sum(1 for n in graph if graph.out_degree(n) == 0)
    depth = max(x for x, _ in pos.values())
    fig, ax = plt.subplots(figsize=(2.2 * (depth + 1), max(2.5, 0.45 * leaves + 1)))
    for a, b in graph.edges():
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.plot([x0, (x0 + x1) / 2, (x0 + x1) / 2, x1], [y0, y0, y1, y1], color="0.55", lw=1, zorder=1)
    colors = {"input": "#dddddd", "stage": "#cfe3f7", "head": "#fde2c4"}
    for node, data in graph.nodes(data=True):
        x, y = pos[node]
        kind = data.get("kind")
        if kind == "stage":
            tasks = data["tasks"]
            label = ", ".join(tasks) if len(tasks) <= 3 else f"{len(tasks)} tasks"
            label = f"{data['location']}\n{label}"
        elif kind == "head":
            label = data["task"]
        else:
            label = "input"
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=2,
                bbox=dict(boxstyle="round,pad=0.3", fc=colors.get(kind, "white"), ec="0.4", lw=0.8))
    stages = sorted({(d["stage"], d["location"]) for _, d in graph.nodes(data=True) if d.get("kind") == "stage"})
    ax.set_xticks([0] + [s + 1 for s, _ in stages] + [depth])
    ax.set_xticklabels(["input"] + [loc for _, loc in stages] + ["heads"], fontsize=8)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.6, depth + 0.6)
    ax.set_ylim(-leaves + 0.4, 0.6)
    title = graph.graph.get("params")
    if title is not None:
        ax.set_title(f"params {title:,}  ·  dissimilarity {graph.graph.get('dissimilarity', float('nan')):.3f}",
                     fontsize=9)
    return save_figure(fig, path)


def default_export_path(tree_path: str | os.PathLike, fmt: str) -> Path:
    """``tree.json`` -> ``tree.graphml`` etc. beside it (``tree.graph.json`` for JSON)."""
    tree_path = Path(tree_path)
    stem = tree_path.name[:-5] if tree_path.name.endswith(".json") else tree_path.stem
    return tree_path.with_name(stem + SUFFIXES[fmt])


def export_tree(tree: Tree, path: str | os.PathLike, fmt: str) -> Path:
    """Write ``tree`` to ``path`` in format ``fmt`` (one of :data:`FORMATS`), atomically."""
    if fmt not in FORMATS:
        raise unknown_choice("export format", fmt, FORMATS)
    graph = tree_graph(tree)
    path = Path(path)
    if fmt == "json":
        data = nx.node_link_data(graph, edges="edges")
        return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    if fmt == "graphml":
        with atomic_path(path) as tmp:
            nx.write_graphml(_scalar_graph(graph), tmp)
        return path
    if fmt == "gml":
        with atomic_path(path) as tmp:
            nx.write_gml(_scalar_graph(graph), tmp)
        return path
    if fmt == "dot":
        if importlib.util.find_spec("pydot") is None:
            return atomic_write_text(path, to_dot(graph))
        from networkx.drawing.nx_pydot import write_dot

        dot_graph = _scalar_graph(graph)
        dot_graph.graph.clear()  # tree fields as graph attributes are not valid DOT
        for node, data in dot_graph.nodes(data=True):
            data["shape"] = {"input": "circle", "stage": "box", "head": "ellipse"}[data["kind"]]
        with atomic_path(path) as tmp:
            write_dot(dot_graph, tmp)
        return path
    if fmt == "mermaid":
        return atomic_write_text(path, to_mermaid(graph))
    return draw(graph, path)


def read_graph(path: str | os.PathLike, fmt: str | None = None) -> Tree:
    """Read a JSON (node-link), GraphML or GML export back into the :class:`Tree`.

    ``fmt`` defaults to the file suffix. Raises :class:`BadInput` for unreadable files.
    """
    path = Path(path)
    if fmt is None:
        fmt = {".graphml": "graphml", ".gml": "gml", ".json": "json"}.get(path.suffix.lower(), "")
    if fmt not in ("json", "graphml", "gml"):
        raise BadInput(f"{path}: can read back json, graphml or gml exports, not '{fmt or path.suffix}'")
    if not path.is_file():
        raise BadInput(f"graph file {path} does not exist")
    try:
        if fmt == "json":
            graph = nx.node_link_graph(json.loads(path.read_text(encoding="utf-8")), directed=True,
                                       multigraph=False, edges="edges")
        elif fmt == "graphml":
            graph = nx.read_graphml(path)
        else:
            graph = nx.read_gml(path)
    except RecursionError:
        raise BadInput(f"graph file {path} is nested far too deeply to be a {fmt} export") from None
    except (OSError, ValueError, KeyError, nx.NetworkXError) as exc:
        raise BadInput(f"graph file {path} is not a readable {fmt} export ({type(exc).__name__}: "
                       f"{str(exc)[:100]})") from None
    return graph_tree(_unflatten_nodes(graph), f"graph file {path}")
