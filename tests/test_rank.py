"""`assembler rank`: LogME and LEEP against hand computations, Spearman with ties, DEPARA's
attributions (no gradient leaks between layers or models), its ranking of an identical and a
shuffled network, determinism, and the command end to end."""

from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from conftest import SPECS
from conftest import cli as run_cli
import assembler
from assembler.analysis import Settings, from_assembly, leep, logme, probe_set, rank, spearman, to_json
from assembler.analysis.depara import rankdata
from assembler.analysis.features import flat_features, stream
from assembler.analysis.logme import fit_class
from assembler.data import digits



# ---------------------------------------------------------------------------------------------
# LogME: the evidence of Bayesian linear regression, maximised over alpha and beta


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y | 0, I/beta + F F^T/alpha) / n, straight from the definition."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y)) / n)


def direct_max(f: np.ndarray, y: np.ndarray) -> float:
    """The maximum over alpha, beta by brute force: a log grid, its far corners standing in for
    the limits, then a shrinking pattern search from the best point."""
    grid = np.linspace(-12, 16, 57)
    best = max(((a, b) for a in grid for b in grid), key=lambda p: direct_evidence(f, y, math.exp(p[0]), math.exp(p[1])))
    step = 0.5
    value = direct_evidence(f, y, math.exp(best[0]), math.exp(best[1]))
    while step > 1e-7:
        moved = False
        for da, db in ((step, 0), (-step, 0), (0, step), (0, -step)):
            p = (best[0] + da, best[1] + db)
            v = direct_evidence(f, y, math.exp(p[0]), math.exp(p[1]))
            if v > value:
                best, value, moved = p, v, True
        if not moved:
            step /= 2
    return value


@pytest.mark.parametrize("n, d, seed", [(12, 3, 0), (30, 5, 1), (9, 4, 2)])
def test_logme_is_the_maximum_evidence_averaged_over_classes(n, d, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    f = rng.normal(size=(n, d)) + 1.5 * np.eye(3)[y] @ rng.normal(size=(3, d))  # some signal
    per_class = [direct_max(f, (y == c).astype(float)) for c in range(3)]
    assert logme(f, y) == pytest.approx(np.mean(per_class), abs=2e-6)


def test_logme_fixed_point_matches_the_closed_form_evidence():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(15, 4))
    y = (f[:, 0] + 0.3 * rng.normal(size=15) > 0).astype(float)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    fit = fit_class(u, s ** 2, y)
    assert math.isfinite(fit.alpha) and math.isfinite(fit.beta)
    assert fit.evidence == pytest.approx(direct_evidence(f, y, fit.alpha, fit.beta), abs=1e-12)
    for da, db in ((1.01, 1), (0.99, 1), (1, 1.01), (1, 0.99)):  # a maximum: every nudge lowers it
        assert direct_evidence(f, y, fit.alpha * da, fit.beta * db) < fit.evidence


def test_logme_of_useless_features_is_the_noise_model():
    # Features orthogonal to the target: the best weights are zero (alpha -> infinity) and
    # y ~ N(0, I / beta) with beta = n / |y|^2, by hand: n = 4, |y|^2 = 2, beta = 2.
    f = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    by_hand = (0.5 * 4 * math.log(2) - 0.5 * 4 * math.log(2 * math.pi) - 0.5 * 2 * 2) / 4
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    assert fit_class(u, s ** 2, y).evidence == pytest.approx(by_hand, abs=1e-12)
    assert logme(np.zeros((4, 3)), [0, 0, 1, 1]) == pytest.approx(by_hand, abs=1e-12)


def test_logme_with_fewer_probes_than_dimensions():
    # n < D: the features span every probe, and the maximum may sit at beta -> infinity.
    rng = np.random.default_rng(4)
    y = np.array([0, 1, 0, 1, 1, 0])
    f = np.eye(2)[y] @ rng.normal(size=(2, 10)) + 0.01 * rng.normal(size=(6, 10))
    per_class = [direct_max(f, (y == c).astype(float)) for c in (0, 1)]
    assert logme(f, y) == pytest.approx(np.mean(per_class), abs=1e-5)


def test_logme_prefers_features_that_separate_the_classes():
    rng = np.random.default_rng(5)
    y = np.arange(60) % 3
    good = np.eye(3)[y] * 3 + rng.normal(size=(60, 3))
    assert logme(good, y) > logme(rng.normal(size=(60, 3)), y)


# ---------------------------------------------------------------------------------------------
# LEEP


def test_leep_by_hand():
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    y = np.array([0, 0, 1, 1])
    # P(y, z) = [[0.35, 0.15], [0.10, 0.40]]; P(z) = [0.45, 0.55];
    # P(y | z) = [[7/9, 3/11], [2/9, 8/11]].
    eep = [7 / 9 * 0.8 + 3 / 11 * 0.2, 7 / 9 * 0.6 + 3 / 11 * 0.4, 2 / 9 * 0.3 + 8 / 11 * 0.7,
           2 / 9 * 0.1 + 8 / 11 * 0.9]
    assert leep(theta, y) == pytest.approx(np.mean(np.log(eep)), abs=1e-12)


def test_leep_of_a_source_whose_classes_are_the_target_classes_is_zero():
    assert leep(np.eye(3)[[0, 1, 2, 2, 0]], [2, 0, 1, 1, 2]) == pytest.approx(0.0, abs=1e-12)
    assert leep(np.full((4, 2), 0.5), [0, 1, 0, 1]) == pytest.approx(math.log(0.5))


# ---------------------------------------------------------------------------------------------
# Spearman with ties, feature pooling


def test_ranks_average_ties_and_spearman_matches_the_textbook_formula():
    assert rankdata([10, 20, 20, 30, 20]).tolist() == [1, 3, 3, 5, 3]
    a, b = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6]), np.array([2.0, 7.0, 1.0, 8.0, 2.5, 3.0])
    d = rankdata(a) - rankdata(b)
    assert spearman(a, b) == pytest.approx(1 - 6 * np.sum(d ** 2) / (6 ** 3 - 6), abs=1e-12)
    # With ties: Pearson's correlation of the ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4].
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_large_feature_maps_are_pooled_to_the_budget():
    t = torch.arange(2 * 64 * 16 * 16, dtype=torch.float32).reshape(2, 64, 16, 16)
    assert flat_features(t, 4096).shape == (2, 4096)
    assert flat_features(t[:, :, :4, :4], 4096).shape == (2, 1024)  # small maps are kept whole
    assert torch.equal(flat_features(t[:, :, 0, 0], 8), t[:, :, 0, 0])  # vectors as they are


# ---------------------------------------------------------------------------------------------
# DEPARA on small trained networks

NET = """network cnn(x: [1, 8, 8]) {{
    c1 = x -> conv({w}, 3, pad=1) -> batchnorm -> relu
    c2 = c1 -> conv({w2}, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    c3 = c2 -> conv({w2}, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    logits = c3 -> gap -> linear({k})
    return logits
}}
"""


def trained(classes, seed=0, width=8, steps=60):
    asm = assembler.compile(assembler.parse(NET.format(w=width, w2=2 * width, k=len(classes)), "<test>"), seed=seed)
    ds = digits(classes=list(classes))
    gm = asm.network("cnn")
    opt = torch.optim.Adam(gm.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    gm.train()
    for _ in range(steps):
        idx = torch.randint(len(ds.y), (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(gm(ds.x[idx]), ds.y[idx]).backward()
        opt.step()
    gm.eval()
    return asm


def shuffled(asm, seed=0):
    """A copy whose every weight tensor has its entries randomly permuted."""
    copy = assembler.compile(asm.checked, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, m in asm.modules.items():
            for name, t in m.state_dict().items():
                perm = t.flatten()[torch.randperm(t.numel(), generator=g)].reshape(t.shape) if t.is_floating_point() else t
                copy.modules[key].state_dict()[name].copy_(perm)
    return copy


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {"target": trained(range(5, 10)), "other": trained(range(0, 5), seed=1)}


@pytest.fixture(scope="module")
def probe():
    return probe_set(digits(split="test", classes=[5, 6, 7, 8, 9]), 120, 0)


def test_identical_network_ranks_first_and_shuffled_weights_last(nets, probe):
    target = from_assembly(nets["target"], label="target")
    candidates = [from_assembly(shuffled(nets["target"]), label="shuffled"),
                  from_assembly(nets["other"], label="other"),
                  from_assembly(nets["target"], label="identical")]
    r = rank(candidates, probe, target, Settings(methods=("depara",), layers="encoder", lam=1.0))
    assert [c.label for c in r.candidates] == ["identical", "other", "shuffled"]
    same = r.candidates[0].layers[0]
    assert same.layer == "c3" and same.depara.nodes == pytest.approx(1.0) and same.depara.edges == pytest.approx(1.0)
    assert same.scores["depara"] == pytest.approx(2.0)


def test_layer_selection_picks_the_target_layer_of_an_identical_network(nets, probe):
    target = from_assembly(nets["target"], label="target")
    r = rank([target], probe, target, Settings(methods=("depara", "logme"), layers="auto", lam=1.0))
    c = r.candidates[0]
    assert [row.layer for row in c.layers] == ["c1", "c2", "c3", "logits"]
    assert c.best("depara").layer == "c3" and c.score("depara") == pytest.approx(2.0)
    assert c.encoder == "c3" and c.model_layer("logme").layer == "c3"


def test_attributions_do_not_leak_between_layers_or_models(nets, probe):
    gm = nets["target"].network("cnn", taps=["c1", "c3"])
    other = nets["other"].network("cnn", taps=["c3"])
    stream(other, probe, ["c3"], scalar="norm", keep_nodes=["c3"])  # runs first: must leave nothing behind
    both = stream(gm, probe, ["c1", "c3"], scalar="norm", keep_nodes=["c1", "c3"], batch=50)
    alone = stream(nets["target"].network("cnn", taps=["c3"]), probe, ["c3"], scalar="norm", keep_nodes=["c3"])
    # The node by hand: x * d|F_c3(x)|/dx, one image at a time.
    x = probe.x[:3].clone().requires_grad_(True)
    plain = nets["target"].network("cnn", taps=["c3"])
    plain.eval()
    for i in range(3):
        f = plain(x[i:i + 1])[1]["c3"]
        (g,) = torch.autograd.grad(f.flatten().norm(), x)
        assert torch.allclose(both.nodes["c3"][i], (x * g)[i].detach(), atol=1e-6)
    assert torch.allclose(both.nodes["c3"], alone.nodes["c3"], atol=1e-6)
    assert not torch.allclose(both.nodes["c1"], both.nodes["c3"])
    assert probe.x.grad is None


def test_same_call_same_scores_whatever_the_batch(nets, probe):
    target = from_assembly(nets["target"], label="target")
    cands = [from_assembly(nets["other"], label="other")]
    a = to_json(rank(cands, probe, target, Settings(batch=100)))
    b = to_json(rank(cands, probe, target, Settings(batch=100)))
    c = to_json(rank(cands, probe, target, Settings(batch=7)))
    assert a == b
    for la, lc in zip(a["candidates"][0]["layers"], c["candidates"][0]["layers"]):
        assert la["depara"]["score"] == pytest.approx(lc["depara"]["score"], abs=1e-6)
        assert la["logme"] == pytest.approx(lc["logme"], abs=1e-6)


def test_probe_subset_is_fixed_by_its_seed():
    ds = digits(split="test")
    a, b, c = probe_set(ds, 50, 0), probe_set(ds, 50, 0), probe_set(ds, 50, 1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x) and len(a.y) == 50


# ---------------------------------------------------------------------------------------------
# The command

TINY = """network small(x: [1, 8, 8]) {{
    c1 = x -> conv(4, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    c2 = c1 -> conv(8, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    logits = c2 -> gap -> linear({k})
    return logits
}}
{train}"""
TRAIN = """
train small {{
    procedure = finetune
    data = digits(split="train", classes={classes}{few})
    optimizer = adam(lr=0.01)
    epochs = {epochs}
}}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("rank")
    (d / "target.net").write_text(TINY.format(k=5, train=TRAIN.format(classes=[5, 6, 7, 8, 9], few=", per_class=10",
                                                                        epochs=15)))
    (d / "near.net").write_text(TINY.format(k=10, train=TRAIN.format(classes=list(range(10)), few="", epochs=2)))
    (d / "untrained.net").write_text(TINY.format(k=10, train=""))
    (d / "broken.net").write_text("network n(x: [1, 8, 8]) {\n    y = x -> conv2(4, 3)\n    return y\n}\n")
    shutil.copy(SPECS / "source.net", d / "source.net")
    (d / "reuse.net").write_text('use "source.net" as pre\n\nnetwork reuse(x: [1, 8, 8]) {\n    c1 = x -> pre.c1\n'
                                 '    c2 = c1 -> pre.c2\n    logits = c2 -> gap -> linear(5)\n    return logits\n}\n')
    return d


PROBE = 'digits(split="test", classes=[5, 6, 7, 8, 9])'


def cli(work, monkeypatch, *args):
    """`assembler rank ARGS` in the folder `work`."""
    monkeypatch.chdir(work)
    return run_cli("rank", *args)


def test_rank_json_table_and_heat_map(work, monkeypatch):
    code, out, err = cli(work, monkeypatch, "--target", "target.net", "--candidates", "untrained.net", "near.net",
                         "--probe", PROBE, "--probes", "150", "--json", "-o", "map.svg")
    assert code == 0, err
    r = json.loads(out)
    assert r["methods"] == ["depara", "logme", "leep"] and r["sorted_by"] == "depara"
    assert r["probe"] == {"data": PROBE, "samples": 150, "classes": 5}
    assert r["target"] == {"model": "target.net", "layer": "c2"}
    assert sorted(c["candidate"] for c in r["candidates"]) == ["near.net", "untrained.net"]
    assert [c["rank"] for c in r["candidates"]] == [1, 2]
    first = r["candidates"][0]
    assert first["score"]["depara"] >= r["candidates"][1]["score"]["depara"]
    assert [row["layer"] for row in first["layers"]] == ["c1", "c2", "logits"]
    assert set(first["layers"][0]) == {"layer", "shape", "features", "depara", "logme"}
    assert set(first["layers"][0]["depara"]) == {"nodes", "edges", "score"}
    assert first["best_layer"]["depara"] in ("c1", "c2", "logits") and isinstance(first["leep"], float)
    untrained = next(c for c in r["candidates"] if c["candidate"] == "untrained.net")
    assert any("no train section" in n for n in untrained["notes"])
    svg = ET.parse(work / "map.svg").getroot()
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert {"DEPARA", "LogME", "LEEP"} <= set(texts) and any("near.net" in (t or "") for t in texts)
    # The same call again: the same scores (the trained specs come from the cache).
    assert json.loads(cli(work, monkeypatch, "--target", "target.net", "--candidates", "untrained.net", "near.net",
                          "--probe", PROBE, "--probes", "150", "--json")[1]) == r


def test_rank_table_on_the_shipped_source(work, monkeypatch):
    code, out, err = cli(work, monkeypatch, "-c", "source.net", "-c", "near.net", "--probe", PROBE,
                         "--method", "logme", "--layers", "encoder")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"probe: {PROBE}, 225 images")
    assert "rank" in lines[3] and "logme" in lines[3] and "best layer (logme)" in lines[3]
    assert {lines[4].split()[1], lines[5].split()[1]} == {"source.net", "near.net"}
    assert any(line.strip().startswith("source.net") and " c4 *" in line for line in lines)


def test_a_spec_built_on_imported_blocks_is_ranked_with_their_trained_weights(work, monkeypatch):
    code, out, err = cli(work, monkeypatch, "--candidates", "source.net", "reuse.net", "--probe", PROBE,
                         "--method", "logme", "--layers", "c2", "--json")
    assert code == 0, err
    scores = {c["candidate"]: c["score"]["logme"] for c in json.loads(out)["candidates"]}
    assert scores["reuse.net"] == scores["source.net"]
    assert all(not c["notes"] for c in json.loads(out)["candidates"])


@pytest.mark.parametrize("args, message", [
    (["--candidates", "near.net", "--probe", PROBE], "DEPARA needs --target"),
    (["--candidates", "near.net", "--probe", PROBE, "--method", "best"], "'best' is not one of"),
    (["--candidates", "near.net", "--probe", PROBE, "--method", "logme", "--lam", "-1"], "--lam"),
    (["--candidates", "near.net", "--probe", PROBE, "--method", "logme", "-o", "map.png"], ".svg"),
    (["--candidates", "near.net", "--method", "logme"], "--probe"),
    (["--probe", PROBE, "--method", "logme"], "--candidates"),
])
def test_bad_flags_exit_2(work, monkeypatch, args, message):
    code, out, err = cli(work, monkeypatch, *args)
    assert code == 2 and message in err


@pytest.mark.parametrize("args, message", [
    (["--candidates", "broken.net"], "broken.net:2:14: error: unknown op 'conv2'"),
    (["--candidates", "missing.net"], "--candidates missing.net: no such spec file or checkpoint directory"),
    (["--candidates", "near.net:other"], "no network 'other'"),
    (["--candidates", "near.net", "--layers", "c1,c9"], "--layers: near.net has no binding 'c9'"),
    (["--candidates", "near.net", "--probe", 'digits(split="tset")'], "--probe"),
    (["--candidates", "near.net", "--probe", "nosuch(1)"], "unknown data 'nosuch'"),
])
def test_bad_specs_and_sources_exit_1_located(work, monkeypatch, args, message):
    if "--probe" not in args:
        args = [*args, "--probe", PROBE]
    code, out, err = cli(work, monkeypatch, *args, "--method", "logme")
    assert code == 1 and message in err, err
    assert "Traceback" not in err


def test_a_network_that_gives_nan_is_a_located_error(nets, probe):
    from assembler.errors import SpecError
    broken = shuffled(nets["other"])
    with torch.no_grad():
        broken.modules["cnn.c2.0"].weight.fill_(float("nan"))
    with pytest.raises(SpecError, match="layer 'c2' of network 'cnn' gives NaN"):
        rank([from_assembly(broken, label="broken")], probe, None, Settings(methods=("logme",)))


def test_a_checkpoint_directory_ranks_like_its_spec_and_leep_alone_needs_no_layers(work, monkeypatch):
    from assembler.train.run import ensure_trained
    monkeypatch.chdir(work)
    ckpt = str(ensure_trained(work / "near.net", quiet=True))
    code, out, err = cli(work, monkeypatch, "-c", "near.net", ckpt, "--probe", PROBE, "--method", "leep", "--json")
    assert code == 0, err
    scores = {c["candidate"]: c["score"]["leep"] for c in json.loads(out)["candidates"]}
    assert scores[ckpt] == scores["near.net"] and scores[ckpt] < 0
    code, out, err = cli(work, monkeypatch, "-c", "near.net", "--probe", PROBE, "--method", "leep")
    assert code == 0, err
    assert out.splitlines()[3].split() == ["rank", "candidate", "leep"] and "layers (" not in out
