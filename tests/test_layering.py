"""Layers: the front end (parsing, checking, formatting, editing, drawing, the strategies)
never imports torch or the torch side of the package, not even inside a function, so `check`
and `fmt` start instantly; the torch side keeps what it needs in sync with it."""

from __future__ import annotations

import ast
import keyword
import subprocess
import sys

import pytest

from conftest import ROOT, SPECS

PACKAGE = ROOT / "assembler"
#: Modules that may import torch: the compiler layer, checkpoints, training, data, the CLI.
TORCH_SIDE = {"compiler", "checkpoint", "cli", "modules", "lowerings", "matching", "demo", "__main__", "data",
              "train", "analysis", "interop", "inference", "testing.checks"}
FORBIDDEN = ("torch",) + tuple(f"assembler.{m}" for m in TORCH_SIDE)


def _module(path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def front_end_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module(path)
        if not any(name == m or name.startswith(m + ".") for m in TORCH_SIDE):
            yield path


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


def _imports(path) -> list[tuple[int, str]]:
    """Every module an import statement anywhere in the file names (relative ones resolved)."""
    package = ["assembler"] + _module(path).split(".")[:-1] if _module(path) else ["assembler"]
    if path.name == "__init__.py":
        package = ["assembler"] + [p for p in _module(path).split(".") if p]
    out = []
    for node in _executed(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from . import compiler`
    return [(line, m.strip(".")) for line, m in out]


@pytest.mark.parametrize("path", list(front_end_files()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_front_end_imports_no_torch(path):
    bad = [f"line {line}: {m}" for line, m in _imports(path)
           if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{path.name} imports the torch side: {bad}"


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
