"""``branchnet export``: a tree.json as a graph file (docs/design.md, "Command line"), as a library call."""

from __future__ import annotations

import os
from pathlib import Path

from branchnet.errors import unknown_choice
from branchnet.tree import load_tree
from branchnet.tree.export import FORMATS, default_export_path, export_tree


def export_graph(tree: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None) -> Path:
    """Write the tree of ``tree`` (a tree.json) as ``fmt`` (:data:`~branchnet.tree.export.FORMATS`,
    case-insensitive) to ``out`` (default: beside the tree, :func:`~branchnet.tree.export.default_export_path`);
    returns the path. :class:`BadInput` for an unknown format or a file that is not a tree."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise unknown_choice("export format", fmt, FORMATS)
    loaded = load_tree(tree)
    return export_tree(loaded, out if out is not None else default_export_path(tree, fmt), fmt)
