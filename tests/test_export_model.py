"""``branchnet export-model``: artefacts whose outputs equal the eager network's (ResNet and HRNet
trees; single-task, branched and candidate model files), that reload in plain PyTorch (and
onnxruntime) in a process where branchnet cannot be imported, with each encoder node once in
their graphs; and the one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from branchnet.config import load_config
from branchnet.data import build_tasks
from branchnet.nn.branched import BranchedNet
from branchnet.model_file import save_model
from conftest import TINY_CONFIG, assert_one_line_error

TREE = [[["seg", "depth"]], [["seg", "depth"]], [["seg"], ["depth"]], [["seg"], ["depth"]]]
SUFFIX = {"torchscript": ".torchscript.pt", "exported-program": ".pt2", "onnx": ".onnx"}


def _formats():
    out = ["torchscript", "exported-program"]
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return out
    return out + ["onnx"]


def _perturbed(net: BranchedNet, seed: int = 0) -> BranchedNet:
    """Distinct weights in every node (fresh copies of a stage start identical) and non-trivial
    BatchNorm statistics, so that outputs depend on every part of the tree."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for name, b in net.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    return net


def write_model(directory: Path, config_text: str, partitions, kind: str = "branched", seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "c.yaml").write_text(config_text)
    config = load_config(directory / "c.yaml")
    torch.manual_seed(seed)
    net = _perturbed(BranchedNet(build_tasks(config), partitions, config.model, config.image_size), seed)
    return save_model(directory / "model.pt", net, config, kind)


def eager_outputs(model_path: Path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    from branchnet.model_file import load_model

    net = load_model(model_path).model.eval()
    with torch.no_grad():
        return net(x)


def _cli_json(*args) -> dict:
    from branchnet.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([str(a) for a in args])
    assert code == 0, buffer.getvalue()
    return json.loads(buffer.getvalue())


@pytest.fixture(scope="module")
def resnet_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-resnet")
    text = TINY_CONFIG.format(root=root / "cache", tasks="[seg, depth]")
    return write_model(root / "branched" / "tree", text, TREE)


@pytest.fixture(scope="module")
def artefacts(resnet_model) -> dict[str, dict]:
    """Every format of the ResNet tree, written by the command (``--json``)."""
    return {fmt: _cli_json("export-model", resnet_model, "--format", fmt, "--json") for fmt in _formats()}


def _reload(fmt: str, path: Path):
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda x: module(x)
    if fmt == "exported-program":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, (torch.from_numpy(v) for v in session.run(None, {"image": x.numpy()}))))


@pytest.mark.parametrize("fmt", _formats())
def test_resnet_tree_artefact_equals_eager(artefacts, resnet_model, fmt):
    info = artefacts[fmt]
    path = Path(info["path"])
    assert path == resnet_model.with_name("model" + SUFFIX[fmt]) and path.is_file()
    assert info["tasks"] == ["seg", "depth"] and info["input"] == "image"
    assert info["check"]["passed"] and max(info["check"]["max_abs"].values()) <= 1e-4
    graph, modules = info["convolutions"]
    assert graph == modules > 0  # each node and head once: as many convolutions as Conv2d modules
    if fmt == "onnx":
        assert info["opset"] == 18 and "dynamo" in info["exporter"]
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    want = eager_outputs(resnet_model, x)
    with torch.no_grad():
        got = _reload(fmt, path)(x)
    assert list(got) == list(want) if fmt != "onnx" else sorted(got) == sorted(want)
    for task in want:
        assert got[task].shape == want[task].shape
        torch.testing.assert_close(got[task], want[task], rtol=1e-4, atol=1e-5)


def test_artefacts_reload_without_branchnet(artefacts, resnet_model, tmp_path):
    """A process whose sys.path holds only torch's site-packages (``python -S``: no .pth files, so
    no editable install): ``import branchnet`` fails there, and every artefact runs."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.save({"x": x, "want": eager_outputs(resnet_model, x)}, tmp_path / "io.pt")
    site = str(Path(torch.__file__).resolve().parents[1])
    paths = {fmt: info["path"] for fmt, info in artefacts.items()}
    script = f"""
import importlib.util, sys
sys.path[:] = [p for p in sys.path if 'site-packages' not in p and p not in ('', '.')] + [{site!r}]
assert importlib.util.find_spec('branchnet') is None, 'branchnet is importable'
import torch
io = torch.load('io.pt', weights_only=True)
paths = {paths!r}
for fmt, path in paths.items():
    if fmt == 'torchscript':
        got = torch.jit.load(path)(io['x'])
    elif fmt == 'exported-program':
        got = torch.export.load(path).module()(io['x'])
    else:
        import onnxruntime as ort
        s = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        got = dict(zip([o.name for o in s.get_outputs()],
                       (torch.from_numpy(v) for v in s.run(None, {{'image': io['x'].numpy()}}))))
    for task, want in io['want'].items():
        torch.testing.assert_close(got[task], want, rtol=1e-4, atol=1e-5)
    print('ok', fmt)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [w for fmt in paths for w in ("ok", fmt)]


def test_hrnet_tree_exports_equal_to_eager(tmp_path):
    text = TINY_CONFIG.format(root=tmp_path / "cache", tasks="[seg, depth]").replace(
        "model: {backbone: resnet18, width: 0.125, output_stride: 8, head_channels: 8}",
        "model: {backbone: hrnet_w18_small, head_channels: 8}")
    tree = [[["seg", "depth"]], [["seg", "depth"]], [["seg", "depth"]], [["seg"], ["depth"]]]
    model = write_model(tmp_path / "hrnet", text, tree)
    info = _cli_json("export-model", model, "--format", "torchscript", "--json")
    assert info["check"]["passed"] and info["convolutions"][0] == info["convolutions"][1] > 100
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = eager_outputs(model, x)
    got = torch.jit.load(info["path"])(x)
    for task in ("seg", "depth"):
        torch.testing.assert_close(got[task], want[task], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind, tasks, tree", [
    ("single", "[depth]", [[["depth"]]] * 4),
    ("candidate", "[seg, edges]", [[["seg", "edges"]], [["seg", "edges"]], [["seg"], ["edges"]], [["seg"], ["edges"]]]),
])
def test_single_task_and_candidate_models_export(cli, tmp_path, kind, tasks, tree):
    text = TINY_CONFIG.format(root=tmp_path / "cache", tasks=tasks).replace("width: 0.125", "width: 0.0625")
    model = write_model(tmp_path / kind, text, tree, kind=kind)
    out = tmp_path / "net.ts"
    result = cli("export-model", model, "--format", "torchscript", "--out", out, "--input-size", 48, 40)
    assert result.code == 0, result.err
    assert f"wrote {out}" in result.out and "tolerance" in result.out and f"{kind} network" in result.out
    x = torch.randn(2, 3, 48, 40)
    want = eager_outputs(model, x)
    got = torch.jit.load(str(out))(x)
    assert sorted(got) == sorted(want)
    for task in want:
        assert got[task].shape[-2:] == (48, 40)
        torch.testing.assert_close(got[task], want[task], rtol=1e-4, atol=1e-5)


def test_check_catches_a_wrong_artefact_and_nothing_is_written(resnet_model, tmp_path, monkeypatch):
    from branchnet.deploy import export
    from branchnet.model_file import load_model

    net = load_model(resnet_model).model.eval()
    wrapper = export.InferenceNet(net)
    ok = export.check_artefact(wrapper, lambda x: wrapper(x), (32, 32), "eager")
    assert ok.passed and ok.worst == 0.0
    shifted = export.check_artefact(wrapper, lambda x: {t: v + 1e-3 for t, v in wrapper(x).items()}, (32, 32), "x")
    assert not shifted.passed and max(shifted.max_abs.values()) == pytest.approx(1e-3, rel=1e-3)
    monkeypatch.setattr(export, "check_artefact", lambda *a, **k: shifted)
    text = TINY_CONFIG.format(root=tmp_path / "cache", tasks="[depth]").replace("width: 0.125", "width: 0.0625")
    single = load_model(write_model(tmp_path / "single", text, [[["depth"]]] * 4)).model
    out = tmp_path / "bad" / "model.torchscript.pt"
    with pytest.raises(export.ExportMismatch, match="nothing was written"):
        export.export_network(single, "torchscript", out)
    assert list(out.parent.iterdir()) == []


def test_bad_input_fails_in_one_line(cli, resnet_model, tmp_path, monkeypatch):
    result = cli("export-model", resnet_model, "--format", "tflite")
    assert_one_line_error(result, "unknown export format 'tflite'", "torchscript")
    junk = tmp_path / "notes.pt"
    junk.write_text("not a model")
    assert_one_line_error(cli("export-model", junk, "--format", "torchscript"), "not a branchnet model")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    assert_one_line_error(cli("export-model", other, "--format", "onnx"), "not a branchnet model")
    assert_one_line_error(cli("export-model", tmp_path / "missing.pt", "--format", "onnx"), "does not exist")
    assert_one_line_error(cli("export-model", resnet_model, "--format", "torchscript", "--input-size", 8, 8),
                          "--input-size 8 8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    assert_one_line_error(cli("export-model", resnet_model, "--format", "onnx", "--out", tmp_path / "m.onnx"),
                          "pip install -e '.[onnx]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt", "other.pt"]


def test_onnx_falls_back_to_the_torchscript_based_exporter_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from branchnet.steps.export_model import export_model

    text = TINY_CONFIG.format(root=tmp_path / "cache", tasks="[depth]").replace("width: 0.125", "width: 0.0625")
    model = write_model(tmp_path / "single", text, [[["depth"]]] * 4, kind="single")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the dynamo exporter cannot run
    result = export_model(model, "onnx")
    assert "TorchScript-based" in result.exporter and "onnxscript is not installed" in result.exporter
    assert result.check.passed and result.opset == 18 and result.path == model.with_name("model.onnx")
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(_reload("onnx", result.path)(x)["depth"], eager_outputs(model, x)["depth"],
                               rtol=1e-4, atol=1e-5)
