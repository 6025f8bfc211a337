"""The floors of docs/architecture.md hold: every module of branchnet/ is on a floor, no module
imports one on a higher floor (imports inside functions count too), no two packages import each
other round about, registry entries named by "module:attribute" obey the same order, and every
alias of a moved path is documented in "Moved modules" and gives the new object."""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "branchnet"
DOC = ROOT / "docs" / "architecture.md"


def floors() -> dict[str, int]:
    """Package or top-level module name -> floor, from the ```floors block of docs/architecture.md."""
    block = re.search(r"```floors\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/architecture.md has no ```floors block"
    found: dict[str, int] = {}
    for line in block.group(1).splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        for name in words[1:]:
            assert name not in found, f"{name} is on two floors"
            found[name] = int(words[0])
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package(module: str) -> str:
    """``branchnet.train.engine`` -> ``train``; ``branchnet.runs`` -> ``runs``; ``branchnet`` -> ``branchnet``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported branchnet module) of every import statement of ``module``, at any depth."""
    path = MODULES[module]
    base = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - node.level + 1]
                source = ".".join(parts + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found += [(node.lineno, f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source)
                      for a in node.names]
    return [(line, name) for line, name in found if name == "branchnet" or name.startswith("branchnet.")]


def alias_strings(tree: ast.AST) -> set[int]:
    """ids of the string constants that name where a moved path went (``alias_module`` calls,
    ``_MOVED`` tables): aliases point wherever the code moved, by design."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "alias_module":
            ids.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MOVED" for t in node.targets):
            ids.update(id(n) for n in ast.walk(node.value))
    return ids


def test_every_module_is_on_a_floor():
    known = floors()
    missing = sorted({package(m) for m in MODULES} - set(known))
    assert not missing, f"place these in the ```floors block of docs/architecture.md: {missing}"


def test_no_module_imports_upward():
    known = floors()
    upward = []
    for module in MODULES:
        mine = package(module)
        for line, target in imports(module):
            other = package(target)
            if other != mine and known[other] > known[mine]:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target} "
                              f"(floor {known[other]} above {mine}'s {known[mine]})")
    assert not upward, "\n".join(upward)


def test_packages_import_each_other_one_way():
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        for _, target in imports(module):
            if package(target) != package(module):
                edges.setdefault(package(module), set()).add(package(target))
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import circle: " + " -> ".join(path[path.index(node):] + [node])
        if node in done:
            return
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_registry_targets_stay_on_or_below_their_registry():
    """An entry ``"branchnet.x.y:attr"`` is imported when first used: an import like any other."""
    known = floors()
    upward = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt = alias_strings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in exempt:
                match = re.fullmatch(r"(branchnet(?:\.\w+)+):\w+", node.value)
                if match and known[package(match.group(1))] > known[package(module)]:
                    upward.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert not upward, "\n".join(upward)


# ---------------------------------------------------------------------------------- moved paths


def moved_rows() -> list[tuple[str, str]]:
    """(old, new) of the "Moved modules (0.3.0)" table of docs/architecture.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Moved modules (0.3.0)"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^\| `([\w.]+)` \| `([\w.]+)` \|$", section, re.M)


def resolve(path: str):
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        parent, _, name = path.rpartition(".")
        return getattr(importlib.import_module(parent), name)


@pytest.mark.parametrize("old,new", moved_rows())
def test_a_moved_path_still_gives_the_new_object(old, new):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert resolve(old) is resolve(new)


def code_aliases() -> set[tuple[str, str]]:
    """(old, new) of every alias in the code: ``alias_module`` calls, ``_MOVED`` tables and the
    names of the modules that only re-export (they warn at import and list ``__all__``)."""
    found = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "alias_module":
                found.add((module, node.args[1].value))
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MOVED" for t in node.targets):
                for key, value in zip(node.value.keys, node.value.values):
                    target, _, renamed = value.value.partition(":")
                    found.add((f"{module}.{key.value}", f"{target}.{renamed or key.value}"))
        warns = any(isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                    and getattr(n.value.func, "attr", None) == "warn" for n in tree.body)
        if warns:
            names = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                         and any(getattr(t, "id", None) == "__all__" for t in n.targets))
            imported = {a.asname or a.name: f"{n.module}.{a.name}" for n in tree.body
                        if isinstance(n, ast.ImportFrom) for a in n.names}
            found.update((f"{module}.{e.value}", imported[e.value]) for e in names.elts)
    return found


def test_every_alias_in_the_code_is_documented():
    missing = code_aliases() - set(moved_rows())
    assert not missing, f"add to docs/architecture.md, 'Moved modules (0.3.0)': {sorted(missing)}"
