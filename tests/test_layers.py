"""The package's layers import one way: front end -> data -> compiler -> storage -> training ->
tools -> command line. Every import counts, also those inside functions; the front end never
imports torch (`check` and `fmt` start without it); no two modules import each other, even
through others."""

from __future__ import annotations

import ast
import keyword
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from conftest import SPECS

PACKAGE = Path(__file__).resolve().parent.parent / "assembler"

# Lowest first. A module may import its own layer and the layers before it.
LAYERS = [
    ("front end", {"allocator", "errors", "ir", "parser", "printer", "ops", "settings", "graph", "resolve", "lower", "edits",
                   "summary", "draw", "grammar", "checks", "faults", "locate", "builtin_ops", "draw_layout",
                   "fastparse", "imports", "keys", "lexer", "lower_blocks", "lower_merges", "lower_refs", "parse_errors", "passes",
                   "scope", "signature", "skips", "verify", "visit", "weightings", "optypes"}),
    ("data", {"data"}),
    ("compiler", {"modules", "matching", "compiler", "variants", "inference", "inference_fuse", "measure", "lowerings",
                  "pseudograd"}),
    ("storage", {"atomic", "store", "cache", "checkpoint", "assemble"}),
    ("training", {"train"}),
    ("tools", {"analysis", "interop"}),
    ("testing", {"testing"}),  # testing.checks compiles; the strategies are torch-free (below)
    ("command line", {"cli", "commands", "demo", "__main__", "__init__"}),
]
NO_TORCH = {"front end"}
TORCH_FREE = {"assembler.testing", "assembler.testing.strategies", "assembler.testing.shapes", "assembler.testing.generator",
              "assembler.testing.gen_parts", "assembler.testing.sequences"}  # strategies users import


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
    for node in _executed(tree):
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


def _executed(tree):
    """The nodes of a module, leaving out `if TYPE_CHECKING:` blocks (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


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


def test_the_front_end_never_imports_torch():
    torch_side = {m for m in MODULES if LAYERS[layer_of(m)][0] not in NO_TORCH}
    wrong = [f"{m} imports {t}" for m, p in FILES.items() if LAYERS[layer_of(m)][0] in NO_TORCH or m in TORCH_FREE
             for t in imports(p, m)
             if t.split(".")[0] in ("torch", "safetensors") or (t in torch_side and t not in TORCH_FREE)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    g = nx.DiGraph(edges())
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1]
    assert not cycles, "\n".join(" -> ".join(c + c[:1]) for c in cycles[:10])


def test_import_check_format_and_strategies_load_no_torch(tmp_path):
    script = f"""
import sys
import assembler
from assembler.cli import main
spec = assembler.load({str(SPECS / 'tailor.net')!r})
assembler.format(spec)
assembler.edits.insert_adapter(spec, "student", after="c2", chain="relu")
import assembler.testing, assembler.draw
assembler.draw.to_svg(assembler.check(spec), ["student"])
for args in (["check", "-q", {str(SPECS / 'compat.net')!r}], ["fmt", "--check", {str(SPECS / 'compat.net')!r}]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, e.code
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_torch_backed_names_load_on_first_use():
    import assembler
    assert callable(assembler.compile) and assembler.Assembly.__name__ == "Assembly"
    assert set(assembler.__all__) <= set(dir(assembler))


def test_reserved_names_are_those_of_the_pinned_torch():
    """`scope.PYTHON_RESERVED` is written out so that checking needs no torch; it must be the
    set the compiled networks really reserve."""
    from torch import fx

    from assembler.scope import python_reserved
    real = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
        n for n in dir(fx.GraphModule) if not n.startswith("__"))
    assert python_reserved() == real, (sorted(real - python_reserved()), sorted(python_reserved() - real))
