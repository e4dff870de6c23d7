"""Pictures of networks (`assembler.draw`): well-formed SVG and DOT over the example specs, the
visual language (frozen and trainable fills, proxies, shared and imported marks), learned alphas
and lambdas as widths, escaping."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest

import assembler
from assembler import draw
from assembler.graph import Checked, CheckedNetwork, GraphNode, Module

from conftest import SPECS
NS = {"s": "http://www.w3.org/2000/svg"}
ALPHAS = {"student.c1.gate": [0.8, 0.2], "student.c2.gate": [0.6, 0.1, 0.3],
          "student.c3.gate": [0.05, 0.15, 0.5, 0.3], "student.c4.gate": [0.7, 0.05, 0.05, 0.2]}
CASES = [("compat.net", ["a", "b", "ab"]), ("tailor.net", ["student"]), ("tailor.net", ["teacher", "student"]),
         ("transplant.net", ["student"]), ("l2tww.net", ["tgt"]), ("l2tww.net", ["src", "tgt"])]


@pytest.fixture(scope="module")
def specs() -> dict[str, Checked]:
    return {f: assembler.check(assembler.load(SPECS / f)) for f in {f for f, _ in CASES}}


def _svg(checked, networks, weights=None) -> ET.Element:
    return ET.fromstring(draw.to_svg(checked, networks, weights))


def _boxes(root) -> dict[tuple[str, str], ET.Element]:
    return {(g.get("data-network"), g.get("data-binding")): g for g in root.iterfind(".//s:g[@data-binding]", NS)}


def _rect(g) -> tuple[float, ...]:
    r = g.find("s:rect", NS)
    return tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))


@pytest.mark.parametrize("spec, networks", CASES)
def test_svg_is_well_formed_and_shows_every_binding(specs, spec, networks):
    checked = specs[spec]
    root = _svg(checked, networks)
    boxes = _boxes(root)
    expected = {(n, b) for n in networks if n in checked.networks for b in checked.networks[n].bindings}
    assert expected <= set(boxes)
    text = "".join(root.itertext())
    assert all(b in text for _, b in expected)
    width, height = float(root.get("width")), float(root.get("height"))
    rects = [_rect(g) for g in boxes.values()]
    for x, y, w, h in rects:  # inside the picture, and no two boxes overlap
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
    for (x1, y1, w1, h1), (x2, y2, w2, h2) in itertools.combinations(rects, 2):
        assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
    assert width < 2500 and height < 1500


@pytest.mark.parametrize("spec, networks", CASES)
def test_dot_names_every_binding(specs, spec, networks):
    checked = specs[spec]
    dot = draw.to_dot(checked, networks)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    for n in networks:
        for b in checked.networks[n].bindings if n in checked.networks else ():
            assert f'"{n}.{b}" [label=' in dot


def _fill(boxes, key):
    return boxes[key].find("s:rect", NS).get("fill")


def test_frozen_and_trainable_parts_differ(specs):
    boxes = _boxes(_svg(specs["tailor.net"], ["student"]))
    assert "frozen" in boxes[("student", "c2")].get("class")
    assert "trainable" in boxes[("student", "logits")].get("class")
    assert _fill(boxes, ("student", "c2")) != _fill(boxes, ("student", "logits"))
    assert boxes[("student", "c2")].find("s:rect", NS).get("stroke-dasharray")  # frozen: dashed border
    assert "imported from pre" in "".join(boxes[("student", "c2")].itertext())
    boxes = _boxes(_svg(specs["transplant.net"], ["student"]))
    kinds = {b: boxes[("student", b)].get("class").split()[1] for b in ("f", "h", "y")}
    assert kinds == {"f": "frozen", "h": "adapter", "y": "frozen"}
    assert len({_fill(boxes, ("student", b)) for b in "fhy"}) == 2
    assert "cats.three.f" in "".join(boxes[("student", "f")].itertext())


def test_shared_modules_have_a_double_border(specs):
    boxes = _boxes(_svg(specs["compat.net"], ["a", "b", "ab"]))
    for net in ("a", "b"):
        assert len(boxes[(net, "r")].findall("s:rect", NS)) == 2
        assert "shared rot" in "".join(boxes[(net, "r")].itertext())
        assert len(boxes[(net, "y")].findall("s:rect", NS)) == 1
    assert "a.f → b.y" in "".join(boxes[("ab", "y")].itertext())
    dot = draw.to_dot(specs["compat.net"], ["a"])
    assert re.search(r'"a\.r" \[[^\n]*peripheries=2', dot)


def test_gate_paths_take_widths_from_alphas(specs):
    root = _svg(specs["tailor.net"], ["student"], {"gates": ALPHAS, "edges": None})
    for key, alphas in ALPHAS.items():
        binding = key.split(".")[1]
        paths = root.findall(f".//s:path[@data-to='{binding}']", NS)
        assert len(paths) == len(alphas)
        assert sorted(float(p.get("data-alpha")) for p in paths) == sorted(alphas)
        by_alpha = sorted(paths, key=lambda p: float(p.get("data-alpha")))
        widths = [float(p.get("stroke-width")) for p in by_alpha]
        assert widths == sorted(widths) and len(set(widths)) == len({*alphas})
    proxy = root.find(".//s:path[@class='link proxy']", NS)
    main = root.find(".//s:path[@class='link main']", NS)
    assert proxy.get("stroke") != main.get("stroke")
    # c2 is fed by c1 twice: its main path and a proxy
    kinds = sorted(p.get("class") for p in root.findall(".//s:path[@data-from='c1'][@data-to='c2']", NS))
    assert kinds == ["link main", "link proxy"]
    dot = draw.to_dot(specs["tailor.net"], ["student"], {"gates": ALPHAS})
    assert re.search(r'"student\.x" -> "student\.c1" \[[^\n]*penwidth=5\.55', dot)


def test_matching_edges_are_dashed_and_weighted(specs):
    checked = specs["l2tww.net"]
    lams = [0.1 * (i + 1) for i in range(len(checked.edges))]
    root = _svg(checked, ["src", "tgt"], {"gates": {}, "edges": lams})
    edges = root.findall(".//s:path[@class='match']", NS)
    assert len(edges) == len(checked.edges) == 12
    assert all(e.get("stroke-dasharray") for e in edges)
    widths = [float(e.get("stroke-width")) for e in edges]
    assert widths == sorted(widths) and len(set(widths)) == 12
    assert "meta" in "".join(root.itertext())
    assert {b for n, b in _boxes(root) if n == "src"} == {"x", "c1", "c2", "c3", "c4", "logits"}
    stubs = _svg(checked.model_copy(update={"imported": {}}), ["src", "tgt"])  # without the imported spec
    assert {b for n, b in _boxes(stubs) if n == "src"} == {"c2", "c3", "c4"}
    dot = draw.to_dot(checked, ["src", "tgt"])
    assert dot.count("style=dashed") == 12 and '"src.c3" -> "tgt.b2"' in dot


def test_matching_edges_skipped_without_both_ends(specs):
    checked = specs["l2tww.net"]
    root = _svg(checked, ["tgt"])
    assert not root.findall(".//s:path[@class='match']", NS)
    assert "style=dashed" not in draw.to_dot(checked, ["tgt"])
    with pytest.raises(ValueError):
        draw.to_svg(checked, ["nope"])


def test_text_is_escaped():
    bad = 'a<&>"b\\'
    net = CheckedNetwork(name=bad, inputs={"x": (1,)}, outputs=(bad,), bindings={"x": "x", bad: bad}, nodes=(
        GraphNode(name="x", op="input", shape=(1,), binding="x", role="input"),
        GraphNode(name=bad, op="linear", args={"out": '<&>"'}, inputs=("x",), shape=(2,), binding=bad,
                  module="m", trainable=True)))
    module = Module(key="m", op="linear", args={}, in_shape=(1,), trainable=True, role="layer", params=4)
    checked = Checked(filename="t.net", networks={bad: net}, modules={"m": module})
    svg = draw.to_svg(checked, [bad])
    root = ET.fromstring(svg)
    assert ('a<&>"b\\', bad) in _boxes(root)
    assert 'linear <&>"' in "".join(root.itertext())
    assert "<&>" not in svg
    dot = draw.to_dot(checked, [bad])
    assert '"a<&>\\"b\\\\.a<&>\\"b\\\\"' in dot  # the node id: quote and backslash escaped
    assert '"' not in re.sub(r'"(?:[^"\\]|\\.)*"', "", dot)  # every quoted string is closed


def test_an_import_reached_by_matching_edges_is_drawn_whole(tmp_path, monkeypatch):
    """`graph l2tww.net` shows the imported source network beside the target, with every
    matching edge between them; `-n src` draws the import alone."""
    from click.testing import CliRunner

    from assembler.cli import main
    checked = assembler.check(assembler.load(SPECS / "l2tww.net"))
    assert draw.default_networks(checked) == ["src", "tgt"]
    root = _svg(checked, draw.default_networks(checked))
    boxes = _boxes(root)
    assert {b for n, b in boxes if n == "src"} == {"x", "c1", "c2", "c3", "c4", "logits"}
    assert all("frozen" in boxes[("src", b)].get("class") for b in ("c1", "c2", "c3", "c4"))
    assert len(root.findall(".//s:path[@class='match']", NS)) == 12
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["graph", str(SPECS / "l2tww.net"), "-n", "src", "-o", "src.svg"])
    assert r.exit_code == 0, r.output
    assert 'data-network="src" data-binding="c3"' in (tmp_path / "src.svg").read_text()
    r = CliRunner().invoke(main, ["graph", str(SPECS / "l2tww.net"), "-n", "nope", "-o", "x.svg"])
    assert r.exit_code == 1 and "no network 'nope'" in r.output
