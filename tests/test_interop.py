"""`assembler import` and `assembler export` against their oracles: the original nn.Module's
outputs and parameter count, the language's own checker, formatter and `show`, and
`torch.export.load` (or onnxruntime) of the written file."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file, load_file
from torch import nn

import assembler
from assembler import inference
from assembler.cli import main
from assembler.errors import SpecError
from assembler.interop import from_torch
from assembler.interop import exporter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import interop_models as im  # noqa: E402

MODELS = f"{HERE / 'interop_models.py'}"
TOL = 1e-5


def _compare(model: nn.Module, network, shapes: dict, batch: int = 3, seed: int = 7) -> float:
    x = inference.example_inputs(shapes, batch=batch, seed=seed)
    return inference.max_abs_diff(model, network, x)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# Import: ResNet-18 in torchvision's layout


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    model = im.resnet18()
    out = tmp_path_factory.mktemp("imports") / "resnet18"
    result = from_torch(model, {"x": (3, 32, 32)}, name="resnet18", out=out)
    return model, result


def test_resnet18_reproduces_the_module(resnet18):
    model, result = resnet18
    assert result.max_abs_diff < TOL
    restored = assembler.restore(result.path)
    assert _compare(model, restored["resnet18"], {"x": (3, 32, 32)}) < TOL
    assert restored.checked.params("resnet18") == sum(p.numel() for p in model.parameters()) == 11_689_512


def test_the_inference_compilation_of_the_imported_resnet18(resnet18):
    model, result = resnet18
    fast = inference.compile(assembler.restore(result.path), "resnet18")
    assert _compare(model, fast, {"x": (3, 32, 32)}) < TOL
    assert not [n for n in fast.graph.nodes if n.op == "call_module"]  # batch-norm folded, convs called directly


def test_resnet18_spec_reads_like_one_written_by_hand(resnet18):
    _, result = resnet18
    text = result.text
    assert result.templates == ["basic_block", "basic_block_downsample"]
    assert """block basic_block(c) {
    conv1 = in -> conv(c, 3, pad=1, bias=false) -> batchnorm -> relu
    conv2 = conv1 -> conv(c, 3, pad=1, bias=false) -> batchnorm
    out = add(conv2, in) -> relu
    return out
}""" in text
    assert "    downsample = in -> conv(c, 1, stride=2, bias=false) -> batchnorm\n" in text
    assert "    conv1 = x -> conv(64, 7, stride=2, pad=3, bias=false) -> batchnorm -> relu\n" \
           "              -> maxpool(3, stride=2, pad=1)\n" in text  # wrapped past 100 columns, as fmt does
    for i in (1, 2, 3, 4):
        assert f"    layer{i}_1 = layer{i}_0 -> basic_block({32 * 2 ** i})\n" in text
    assert "    layer2_0 = layer1_1 -> basic_block_downsample(128)\n" in text
    assert "    fc = layer4_1 -> gap -> linear(1000)\n    return fc\n" in text


def test_resnet18_spec_checks_formats_and_round_trips(resnet18):
    _, result = resnet18
    spec = assembler.load(result.path)
    text = (result.path / "spec.net").read_text()
    assert assembler.format(spec) == text
    again = assembler.parse(assembler.format(spec), spec.filename)
    assert again == spec


def test_show_reports_the_module_parameter_count(resnet18):
    model, result = resnet18
    r = _cli("show", result.path, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["resnet18"]["params"] == sum(p.numel() for p in model.parameters())


def test_a_spec_uses_the_imported_checkpoint(resnet18, tmp_path):
    """`use "DIR" as pre`: the imported blocks, frozen, compute the module's features."""
    model, result = resnet18
    (tmp_path / "adapt.net").write_text(f"""use "{result.path}" as pre

network adapted(x: [3, 32, 32]) {{
    f = x -> pre.conv1..layer3_1
    logits = f -> gap -> linear(7)
    return logits
}}
""")
    asm = assembler.compile(assembler.load(tmp_path / "adapt.net"))
    assert not asm.warnings
    gm = asm.network("adapted", taps=["f"]).train()  # frozen blocks stay in eval mode
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
        _, taps = gm(x)
    assert (taps["f"] - want).abs().max() < TOL
    assert asm.checked.params("adapted", trainable_only=True) == 256 * 7 + 7


# ---------------------------------------------------------------------------------------------
# Import: small models


def test_small_cnn_with_functional_calls(tmp_path):
    model = im.small_cnn()
    r = from_torch(model, {"x": (1, 8, 8)}, name="cnn", out=tmp_path / "cnn")
    assert r.max_abs_diff < TOL
    assert r.text == """network cnn(x: [1, 8, 8]) {
    conv1 = x -> conv(8, 3, pad=1) -> batchnorm -> relu -> maxpool(2)
    branch_a = conv1 -> conv(8, 1)
    branch_b = conv1 -> conv(8, 3, pad=1) -> sigmoid
    fc = cat(branch_a, branch_b) -> gap -> dropout(0.25) -> linear(5)
    return fc
}
"""
    assert _compare(model, assembler.restore(r.path)["cnn"], {"x": (1, 8, 8)}) < TOL


def test_sequential_mlp(tmp_path):
    model = im.mlp()
    r = from_torch(model, {"x": (1, 8, 8)}, name="mlp", out=tmp_path / "mlp")
    assert "linear1 = x -> flatten -> linear(32) -> relu -> dropout(0.1)" in r.text
    assert "-> linear(16) -> layernorm -> gelu" in r.text
    assert "-> linear(10) -> softmax" in r.text
    assert _compare(model, assembler.restore(r.path)["mlp"], {"x": (1, 8, 8)}) < TOL


def test_two_inputs_and_two_outputs(tmp_path):
    model = im.two_heads()
    r = from_torch(model, {"x": (6,), "y": (6,)}, name="two", out=tmp_path / "two")
    assert "network two(x: [6], y: [6])" in r.text and "return head, mul" in r.text
    assert _compare(model, assembler.restore(r.path)["two"], {"x": (6,), "y": (6,)}) < TOL


def test_bottlenecks_take_several_template_arguments(tmp_path):
    model = im.bottleneck_tiny()
    r = from_torch(model, {"x": (3, 32, 32)}, name="rn", out=tmp_path / "rn")
    assert "block bottleneck_downsample(c, c2, stride=1) {" in r.text
    assert "layer1_0 = conv1 -> bottleneck_downsample(4, c2=16)\n" in r.text  # stride 1 is the default
    assert "-> bottleneck_downsample(8, c2=32, stride=2)" in r.text
    assert "layer1_1 = layer1_0 -> bottleneck\n" in r.text  # one instance: its values are literal
    assert _compare(model, assembler.restore(r.path)["rn"], {"x": (3, 32, 32)}) < TOL


def test_templates_inside_templates_and_pipe_templates(tmp_path):
    model = im.nested()
    r = from_torch(model, {"x": (3, 16, 16)}, name="nested", out=tmp_path / "n")
    assert r.text.startswith("""block conv_bn_relu(c, stride=1) = conv(c, 3, stride=stride, pad=1, bias=false) -> batchnorm -> relu

block stage(c) {
    a = in -> conv_bn_relu(c)
    b = a -> conv_bn_relu(c)
    out = add(in, b)
    return out
}
""")
    assert "    stem = x -> conv_bn_relu(8, stride=2)\n    stage1 = stem -> stage(8)\n" in r.text
    assert "    head = stage2 -> gap -> linear(3)\n" in r.text  # x.mean((2, 3)) is gap
    assert _compare(model, assembler.restore(r.path)["nested"], {"x": (3, 16, 16)}) < TOL


# ---------------------------------------------------------------------------------------------
# Import: weights files


def test_weights_from_pt_and_safetensors(tmp_path):
    trained = im.small_cnn()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    save_file(dict(trained.state_dict()), str(tmp_path / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": trained.state_dict()}, tmp_path / "wrapped.pth")
    for f in ("w.pt", "w.safetensors", "wrapped.pth"):
        r = from_torch(im.SmallCNN(), {"x": (1, 8, 8)}, name="cnn", out=tmp_path / f"ck_{f}", weights=tmp_path / f)
        assert _compare(trained, assembler.restore(r.path)["cnn"], {"x": (1, 8, 8)}) < TOL


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_beyond_tensors_are_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"conv1.weight": _Payload()}, f)
    with pytest.raises(SpecError, match="weights_only=True") as e:
        from_torch(im.SmallCNN(), {"x": (1, 8, 8)}, out=tmp_path / "out", weights=tmp_path / "evil.pt")
    assert e.value.filename.endswith("evil.pt")
    assert "this must never run" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    state = im.small_cnn().state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    save_file(dict(state), str(tmp_path / "w.safetensors"))
    with pytest.raises(SpecError, match="missing fc.weight; unexpected extra.weight"):
        from_torch(im.SmallCNN(), {"x": (1, 8, 8)}, out=tmp_path / "out", weights=tmp_path / "w.safetensors")


# ---------------------------------------------------------------------------------------------
# Import: what cannot be imported says where and why, and writes nothing


class _Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2))

    def forward(self, x):
        return self.body(x)


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


@pytest.mark.parametrize("model, shape, message", [
    (im.leaky_cnn(), (3, 8, 8), r"cannot import 'features\.1' \(LeakyReLU\): no op of the language computes it"),
    (_Dilated(), (3, 8, 8), r"'body\.0' \(Conv2d\): dilation=\(2, 2\) is not supported"),
    (im.UnusedHead(), (4,), r"forward never uses aux"),
    (_Tied(), (4,), r"'fc' \(Linear\) is called more than once"),
    (im.DataDependent(), (4,), r"torch\.fx cannot trace the model \(DataDependent\)"),
], ids=["module", "configuration", "unused", "shared", "untraceable"])
def test_unsupported_models_are_located_errors(tmp_path, model, shape, message):
    with pytest.raises(SpecError, match=message) as e:
        from_torch(model, {"x": shape}, out=tmp_path / "out", source="models.py:factory")
    assert e.value.filename == "models.py:factory"
    assert not (tmp_path / "out").exists()


def test_the_unsupported_error_lists_what_is_supported(tmp_path):
    with pytest.raises(SpecError) as e:
        from_torch(im.leaky_cnn(), {"x": (3, 8, 8)}, out=tmp_path / "out")
    hint = e.value.diagnostics[0].hint
    assert hint.startswith("supported modules: Conv2d, Linear, BatchNorm1d, BatchNorm2d")
    assert "functions:" in hint and "max_pool2d" in hint


# ---------------------------------------------------------------------------------------------
# The import command


def test_import_command_end_to_end(tmp_path):
    r = _cli("import", f"{MODELS}:resnet_tiny", "--input", "x=3,32,32", "-n", "rn", "-o", tmp_path / "rn")
    assert r.exit_code == 0, r.output
    assert "imported" in r.output and "177,362 params" in r.output
    assert "templates: basic_block, basic_block_downsample" in r.output
    assert _compare(im.resnet_tiny(), assembler.restore(tmp_path / "rn")["rn"], {"x": (3, 32, 32)}) < TOL


@pytest.mark.parametrize("args, code, text", [
    (["import", f"{MODELS}:leaky_cnn", "--input", "x=3,8,8", "-o", "{tmp}/o"], 1, "LeakyReLU"),
    (["import", f"{MODELS}:no_such_factory", "--input", "x=3,8,8", "-o", "{tmp}/o"], 1, "has no 'no_such_factory'"),
    (["import", "missing.py:f", "--input", "x=3,8,8", "-o", "{tmp}/o"], 1, "no such file: missing.py"),
    (["import", f"{MODELS}:small_cnn", "--input", "x=1,8,8", "-w", "{tmp}/none.pt", "-o", "{tmp}/o"], 1,
     "no such file"),
    (["import", f"{MODELS}:small_cnn", "--input", "x=1,8,8", "-n", "in", "-o", "{tmp}/o"], 1, "'in' is a keyword"),
    (["import", f"{MODELS}:small_cnn", "--input", "x=1,a,8", "-o", "{tmp}/o"], 2, "is not NAME=C,H,W"),
    (["import", f"{MODELS}:small_cnn", "-o", "{tmp}/o"], 2, "Missing option '--input'"),
    (["import", f"{MODELS}", "--input", "x=1,8,8", "-o", "{tmp}/o"], 1, "is not MODULE:FACTORY"),
])
def test_import_command_errors(tmp_path, args, code, text):
    r = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == code, r.output
    assert text in r.output
    assert not (tmp_path / "o").exists()


def test_import_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("keep me")
    r = _cli("import", f"{MODELS}:small_cnn", "--input", "x=1,8,8", "-o", tmp_path / "o")
    assert r.exit_code == 1 and "exists and is not a checkpoint directory" in r.output
    assert (tmp_path / "o" / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# The example under specs/torch


def test_the_example_checkpoint_is_what_the_documented_command_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    r = _cli("import", "specs/torch/digits_resnet.py:DigitsResNet", "--input", "x=1,8,8",
             "--weights", "specs/torch/digits_resnet.safetensors", "--name", "resnet", "-o", tmp_path / "ck")
    assert r.exit_code == 0, r.output
    committed = ROOT / "specs" / "torch" / "digits_resnet"
    assert (tmp_path / "ck" / "spec.net").read_text() == (committed / "spec.net").read_text()
    ours, theirs = load_file(str(tmp_path / "ck" / "weights.safetensors")), load_file(str(committed / "weights.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    asm = assembler.compile(assembler.load(ROOT / "specs" / "torch" / "adapt.net"))
    assert not asm.warnings  # the imported blocks have their weights


# ---------------------------------------------------------------------------------------------
# Export


@pytest.fixture(scope="module")
def tailored(tmp_path_factory):
    """A checkpoint of a tailored network (gates, proxies) over an imported ResNet, with
    learned-looking alphas and batch-norm statistics; the imported checkpoint beside it."""
    base = tmp_path_factory.mktemp("export")
    from_torch(im.resnet_tiny(), {"x": (3, 32, 32)}, name="rn", out=base / "rn")
    (base / "tailor.net").write_text("""use "rn" as pre

network student(x: [3, 32, 32]) {
    stem = x -> pre.conv1
    b1 = stem -> pre.layer1_0
    b2 = b1 -> pre.layer1_1
    b3 = b2 -> pre.layer2_0
    logits = b3 -> gap -> linear(4)
    skips stem, b1, b2, b3 (k=2)
    return logits
}

network other(x: [3, 32, 32]) {
    y = x -> pre.conv1 -> gap -> linear(2)
    return y
}
""")
    asm = assembler.compile(assembler.load(base / "tailor.net"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, m in asm.modules.items():
            if asm.checked.modules[key].op == "gate":
                m.logits.copy_(torch.randn(m.logits.shape, generator=g))
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d) and not asm.checked.modules[key].imported_from:
                    bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    assembler.save(asm, base / "ck")
    return base


def test_export_of_a_tailored_network_stands_alone(tailored, tmp_path):
    out = tmp_path / "student.pt2"
    r = _cli("export", tailored / "ck", "-n", "student", "-o", out)
    assert r.exit_code == 0, r.output
    assert "max abs difference from the checkpoint's network" in r.output
    x = torch.randn(5, 3, 32, 32)  # another batch size than the export's examples
    want = inference.outputs(assembler.restore(tailored / "ck")["student"], (x,))[0]
    moved = tmp_path / "alone"
    shutil.copytree(tailored, moved)
    shutil.rmtree(tailored / "rn")  # the imported blocks must be inside the file
    try:
        program = torch.export.load(str(out))
        with torch.no_grad():
            got = program.module()(x)
    finally:
        shutil.copytree(moved / "rn", tailored / "rn")
    assert (got - want).abs().max() < TOL
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("batch_norm" in o or "softmax" in o for o in ops), ops  # folded, gates fixed


def test_export_defaults_and_errors(tailored, tmp_path):
    r = _cli("export", tailored / "ck", "-o", tmp_path / "a.pt2")
    assert r.exit_code == 2 and "choose one with -n" in r.output
    r = _cli("export", tailored / "ck", "-n", "nosuch", "-o", tmp_path / "a.pt2")
    assert r.exit_code == 1 and "no network 'nosuch'" in r.output
    r = _cli("export", tailored / "ck", "-n", "other", "-o", tmp_path / "a.pt2", "--format", "zip")
    assert r.exit_code == 2
    r = _cli("export", tailored / "rn", "-o", tmp_path / "rn.pt2")  # an import's only network
    assert r.exit_code == 0, r.output
    assert not list(tmp_path.glob(".*.tmp"))


def test_onnx_without_its_packages_says_how_to_install_them(tailored, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "ONNX_PACKAGES", ("onnx", "no_such_onnx_package"))
    r = _cli("export", tailored / "rn", "-o", tmp_path / "rn.onnx")
    assert r.exit_code == 1
    missing = r.output.split("missing: ", 1)[1].splitlines()[0]
    assert "no_such_onnx_package" in missing and "pip install 'assembler[onnx]'" in r.output
    assert not (tmp_path / "rn.onnx").exists()


def test_onnx_export_matches(tailored, tmp_path):
    for package in exporter.ONNX_PACKAGES:
        pytest.importorskip(package)
    import onnxruntime
    out = tmp_path / "student.onnx"
    r = _cli("export", tailored / "ck", "-n", "student", "-o", out)
    assert r.exit_code == 0, r.output
    x = torch.randn(2, 3, 32, 32)
    want = inference.outputs(assembler.restore(tailored / "ck")["student"], (x,))[0]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    assert abs(torch.from_numpy(got) - want).max() < TOL
