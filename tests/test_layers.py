"""The package's layers import one way: front end -> data -> compiler -> storage -> training ->
tools -> command line. Every import counts, also those inside functions; the front end never
imports torch (`check` and `fmt` start without it); no two modules import each other, even
through others."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "assembler"

# Lowest first. A module may import its own layer and the layers before it.
LAYERS = [
    ("front end", {"errors", "ir", "parser", "printer", "ops", "settings", "graph", "resolve", "lower", "edits",
                   "summary", "draw", "grammar", "frontend", "checks", "faults", "locate"}),
    ("data", {"data"}),
    ("compiler", {"modules", "matching", "compiler", "variants", "inference", "lowering", "pseudograd"}),
    ("storage", {"atomic", "store", "cache", "checkpoint", "assemble"}),
    ("training", {"train"}),
    ("tools", {"analysis", "interop"}),
    ("testing", {"testing"}),
    ("command line", {"cli", "demo", "__main__", "__init__"}),
]
NO_TORCH = {"front end"}


def layer_of(module: str) -> int:
    head = module.split(".")[1] if module.count(".") else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else parts
    return ".".join(parts)


def imports(path: Path, module: str) -> set[str]:
    """Every module an assembler module imports, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    return out


FILES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
MODULES = set(FILES)


def edges() -> list[tuple[str, str]]:
    out = []
    for module, path in FILES.items():
        for target in imports(path, module):
            hit = max((m for m in MODULES if target == m or target.startswith(m + ".")), key=len, default=None)
            if hit and hit != module and not module.startswith(hit + ".") and hit != "assembler":
                out.append((module, hit))
    return out


def test_layers_import_one_way():
    wrong = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
             for a, b in edges() if layer_of(b) > layer_of(a)]
    assert not wrong, "\n".join(wrong)


PENDING = pytest.mark.xfail(strict=True, reason="lower.python_reserved imports torch and resolve/edits import each "
                            "other until the front-end restructuring (issue 18) lands")


@PENDING
def test_the_front_end_never_imports_torch():
    wrong = [f"{m} imports {t}" for m, p in FILES.items() if LAYERS[layer_of(m)][0] in NO_TORCH
             for t in imports(p, m) if t.split(".")[0] in ("torch", "safetensors")]
    assert not wrong, "\n".join(wrong)


@PENDING
def test_no_import_cycles():
    g = nx.DiGraph(edges())
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1]
    assert not cycles, "\n".join(" -> ".join(c + c[:1]) for c in cycles[:10])
