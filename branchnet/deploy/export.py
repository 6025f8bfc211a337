"""A branched network as a standalone inference artefact (TorchScript, ONNX, ExportedProgram).

The artefact maps images ``image`` (B, 3, H, W), float32, normalised as branchnet's data
pipeline feeds them (RGB in [0, 1], then ImageNet mean/std, ``branchnet.data.IMAGE_MEAN``),
to one output per task (the head's raw prediction: logits, depth, normals ...):

* ``torchscript``: ``torch.jit.trace`` of :class:`InferenceNet`; returns ``{task: tensor}``;
  ``torch.jit.load`` reloads it.
* ``exported-program``: ``torch.export.export`` (``.pt2``); returns ``{task: tensor}``;
  ``torch.export.load(f).module()`` reloads it.
* ``onnx``: ``torch.onnx.export`` with the dynamo exporter (``torch.export`` underneath),
  falling back to the TorchScript-based exporter when the dynamo one fails (the result
  says which ran); opset :data:`ONNX_OPSET`; input ``image``, outputs named after the tasks.

Each encoder node runs once per batch, as in training: :class:`InferenceNet` calls
:meth:`BranchedNet.forward_levels` and feeds each leaf's features to its tasks' heads
(:func:`count_convolutions` shows it: the artefact's graph holds as many convolutions as
the network has ``Conv2d`` modules). The batch size is free (ExportedProgram and ONNX
declare a dynamic batch dimension); H and W are those of the export (``--input-size``).

:func:`export_network` writes the artefact to a temporary file, reloads it from disk and
compares its outputs with the eager network's on random inputs of two batch sizes;
only an artefact within :data:`RTOL`/:data:`ATOL` is renamed into place (otherwise
:class:`ExportMismatch`, and nothing is written).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from branchnet.errors import BadInput, unknown_choice
from branchnet.nn.branched import BranchedNet

FORMATS = ("torchscript", "onnx", "exported-program")
#: The ONNX operator set the exporter is asked for (onnxruntime >= 1.14 runs it).
ONNX_OPSET = 18
#: The input's name in every artefact (ONNX input name; ExportedProgram argument).
INPUT_NAME = "image"
#: An artefact's output o passes when ``|o - eager| <= ATOL + RTOL * |eager|`` everywhere.
RTOL = 1e-4
ATOL = 1e-5
#: Batch sizes of the check (the export itself traces batch 2: the check covers others).
CHECK_BATCHES = (1, 3)
#: An ONNX model is one protobuf file, which cannot exceed 2 GiB: larger networks are
#: refused (use ``exported-program``).
ONNX_MAX_BYTES = 1_900_000_000


class ExportMismatch(RuntimeError):
    """The artefact's outputs differ from the eager network's (an exporter fault: exit 1)."""


class InferenceNet(nn.Module):
    """``image`` (B, 3, H, W) -> ``{task: prediction}``: every node once, then the heads.

    A thin wrapper over a trained :class:`BranchedNet` (the plain forward path: no
    training-time options such as Maximum Roaming masks), in evaluation mode.
    """

    def __init__(self, net: BranchedNet) -> None:
        super().__init__()
        self.net = net
        self.tasks = list(net.task_names)
        self.leaf = dict(net.leaf)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        levels = self.net.forward_levels(image)
        size = image.shape[-2:]
        return {t: self.net.heads[t](levels[-1][self.leaf[t]], size) for t in self.tasks}


@dataclass
class CheckResult:
    """How the reloaded artefact compared with the eager network.

    ``max_abs[t]`` is the largest ``|artefact - eager|`` of task t over the check batches;
    ``worst`` the largest ``|difference| / (ATOL + RTOL |eager|)`` (<= 1 passes).
    """

    runtime: str
    batches: list[int]
    max_abs: dict[str, float]
    worst: float
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def passed(self) -> bool:
        return self.worst <= 1.0

    def line(self) -> str:
        diff = max(self.max_abs.values()) if self.max_abs else 0.0
        return (f"checked with {self.runtime} on random inputs of batch {', '.join(map(str, self.batches))}: "
                f"max |artefact - eager| {diff:.2e} (tolerance {self.atol:g} + {self.rtol:g} x |eager|)")


@dataclass
class ExportResult:
    """What :func:`export_network` wrote: the artefact, how, and its check."""

    path: Path
    format: str
    exporter: str
    tasks: list[str]
    input_size: tuple[int, int]
    check: CheckResult
    opset: int | None = None
    convolutions: tuple[int, int] | None = None  # (in the artefact's graph, Conv2d modules)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "exporter": self.exporter,
                "opset": self.opset, "tasks": self.tasks, "input": INPUT_NAME,
                "input_size": list(self.input_size),
                "convolutions": list(self.convolutions) if self.convolutions else None,
                "check": {"runtime": self.check.runtime, "batches": self.check.batches,
                          "max_abs": self.check.max_abs, "rtol": self.check.rtol, "atol": self.check.atol,
                          "passed": self.check.passed},
                "notes": self.notes}


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased if it is one of :data:`FORMATS`; :class:`BadInput` otherwise."""
    name = str(fmt).lower()
    if name not in FORMATS:
        raise unknown_choice("export format", str(fmt), FORMATS)
    return name


def onnx_runtime() -> Any:
    """The ``onnxruntime`` module; :class:`BadInput` naming the extra when it is missing."""
    try:
        import onnxruntime
    except ImportError:
        raise BadInput("--format onnx needs onnxruntime to check the artefact (and onnx, onnxscript to "
                       "export it): pip install -e '.[onnx]'") from None
    return onnxruntime


def describe_artefact(net: BranchedNet, input_size: tuple[int, int], fmt: str) -> dict[str, Any]:
    """Plain metadata stored in the artefact: tasks, their types and output channels, the input."""
    from branchnet.data import IMAGE_MEAN, IMAGE_STD

    return {"format": f"branchnet.artefact/{fmt}", "input": {"name": INPUT_NAME, "shape": ["B", 3, *input_size],
                                                            "dtype": "float32", "mean": list(IMAGE_MEAN),
                                                            "std": list(IMAGE_STD)},
            "tasks": [{"name": t.name, "type": t.type_name, "channels": int(t.out_channels),
                       "dense": bool(t.dense)} for t in net.tasks],
            "partitions": net.partitions, "backbone": net.layout.backbone}


def export_network(net: BranchedNet, fmt: str, path: str | os.PathLike,
                   input_size: tuple[int, int] | None = None, seed: int = 0) -> ExportResult:
    """Write ``net`` as a ``fmt`` artefact at ``path``, checked against the eager network.

    Args:
        net: the network (moved to the CPU and put in evaluation mode).
        fmt: one of :data:`FORMATS`.
        path: the artefact's file (one file, weights included)
        input_size: (H, W) of the export and the check; default the network's image size.
        seed: seed of the random check inputs.

    Raises :class:`BadInput` for an unknown format, a bad size, or a missing ONNX extra;
    :class:`ExportMismatch` when the reloaded artefact's outputs differ from the eager
    network's beyond the tolerance (nothing is written then).
    """
    from branchnet.atomic import atomic_path

    fmt = check_format(fmt)
    size = tuple(int(v) for v in (input_size if input_size is not None else net.image_size))
    if len(size) != 2 or min(size) < 16:
        raise BadInput(f"--input-size {' '.join(map(str, size))} must be two sizes H W of at least 16 pixels")
    if fmt == "onnx":
        onnx_runtime()
        weights = sum(v.numel() * v.element_size() for v in net.state_dict().values())
        if weights > ONNX_MAX_BYTES:
            raise BadInput(f"the network's weights ({weights / 1e9:.1f} GB) do not fit one ONNX file (2 GiB at "
                           "most); use --format exported-program")
    net = net.to("cpu").eval()
    from branchnet.machine import check_memory
    from branchnet.nn.memory import forward_bytes

    # the check runs the eager network and the reloaded artefact side by side on 2 images
    check_memory(2 * forward_bytes(net, 2, size), f"exporting and checking at {size[0]}x{size[1]}",
                 "lower --input-size (the artefact takes any batch; its H W are fixed)")
    wrapper = InferenceNet(net).eval()
    example = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed + 1))
    path = Path(path)
    meta = describe_artefact(net, size, fmt)
    notes: list[str] = []
    opset = None
    with atomic_path(path) as tmp:
        if fmt == "torchscript":
            exporter = "torch.jit.trace"
            module = _trace(wrapper, example)
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the artefact is still valid
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.save.* is deprecated", category=FutureWarning)
                torch.jit.save(module, str(tmp), _extra_files={"branchnet.json": json.dumps(meta)})
            convolutions = (count_convolutions(module, fmt), _conv_modules(net))
            with _quiet_export():
                reloaded = torch.jit.load(str(tmp))
            run, runtime = _torch_runner(reloaded), f"torch.jit.load (torch {torch.__version__})"
        elif fmt == "exported-program":
            exporter = "torch.export.export (dynamic batch)"
            program = _export(wrapper, example)
            torch.export.save(program, str(tmp), extra_files={"branchnet.json": json.dumps(meta)})
            convolutions = (count_convolutions(program, fmt), _conv_modules(net))
            with _quiet_export():
                loaded = torch.export.load(str(tmp)).module()
            run, runtime = _torch_runner(loaded), f"torch.export.load (torch {torch.__version__})"
        else:
            exporter, opset = _export_onnx(wrapper, example, tmp, net.task_names, meta=meta)
            convolutions = (count_convolutions(tmp, fmt), _conv_modules(net))
            run, runtime = _onnx_runner(tmp, net.task_names)
        check = check_artefact(wrapper, run, size, runtime, seed)
        if not check.passed:
            raise ExportMismatch(f"the {fmt} artefact's outputs differ from the eager network's: {check.line()}; "
                                 "nothing was written (an exporter fault: please report it)")
    return ExportResult(path=path, format=fmt, exporter=exporter, tasks=list(net.task_names), input_size=size,
                        check=check, opset=opset, convolutions=convolutions, notes=notes)


def check_artefact(wrapper: InferenceNet, run: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                   size: tuple[int, int], runtime: str, seed: int = 0,
                   batches: tuple[int, ...] = CHECK_BATCHES) -> CheckResult:
    """Compare ``run(x)`` with the eager ``wrapper(x)`` on seeded random images of each batch size."""
    generator = torch.Generator().manual_seed(seed)
    max_abs = {t: 0.0 for t in wrapper.tasks}
    worst = 0.0
    for batch in batches:
        x = torch.randn(batch, 3, *size, generator=generator)
        with torch.no_grad():
            want = wrapper(x)
            got = run(x)
        for t in wrapper.tasks:
            if t not in got or tuple(got[t].shape) != tuple(want[t].shape):
                shape = tuple(got[t].shape) if t in got else "missing"
                raise ExportMismatch(f"the artefact's output '{t}' is {shape}, the eager network's "
                                     f"{tuple(want[t].shape)} (batch {batch}); nothing was written")
            diff = (got[t].float() - want[t].float()).abs()
            max_abs[t] = max(max_abs[t], float(diff.max()) if diff.numel() else 0.0)
            if diff.numel():
                worst = max(worst, float((diff / (ATOL + RTOL * want[t].float().abs())).max()))
    return CheckResult(runtime=runtime, batches=list(batches), max_abs=max_abs, worst=worst)


def count_convolutions(artefact: Any, fmt: str) -> int:
    """Convolutions in an artefact's graph: a ScriptModule, an ExportedProgram, or an ONNX file.

    Equal to the network's ``Conv2d`` modules when every encoder node and head runs once.
    """
    if fmt == "torchscript":
        return sum(1 for node in artefact.inlined_graph.nodes() if "convolution" in node.kind()
                   or node.kind() in ("aten::conv2d", "aten::_convolution"))
    if fmt == "exported-program":
        return sum(1 for node in artefact.graph.nodes
                   if node.op == "call_function" and "conv" in str(node.target))
    try:
        import onnx
    except ImportError:
        raise BadInput("reading an ONNX graph needs the onnx package: pip install -e '.[onnx]'") from None
    model = onnx.load(str(artefact), load_external_data=False)
    return sum(1 for node in model.graph.node if node.op_type == "Conv")


def _conv_modules(net: nn.Module) -> int:
    return sum(1 for m in net.modules() if isinstance(m, nn.Conv2d))


@contextlib.contextmanager
def _quiet_export():
    """Exporters print progress and deprecation warnings: keep stdout (``--json``) clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _trace(wrapper: InferenceNet, example: torch.Tensor):
    with _quiet_export(), torch.no_grad():
        return torch.jit.trace(wrapper, example, strict=False, check_trace=False)


def _batch_dim():
    from torch.export import Dim

    return {INPUT_NAME: {0: Dim("batch", min=1, max=65536)}}


def _export(wrapper: InferenceNet, example: torch.Tensor):
    with _quiet_export():
        return torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim())


def _export_onnx(wrapper: InferenceNet, example: torch.Tensor, path: Path, tasks: list[str],
                 meta: dict[str, Any]) -> tuple[str, int]:
    """Export with the dynamo exporter, else the TorchScript-based one; returns (exporter, opset)."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter translates through it)

        failure = None
    except ImportError:
        failure = "onnxscript is not installed"
    if failure is None:
        try:
            with _quiet_export():
                torch.onnx.export(wrapper, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                                  output_names=list(tasks), opset_version=ONNX_OPSET, dynamic_shapes=_batch_dim(),
                                  external_data=False, verbose=False, report=False)
        except Exception as exc:  # the dynamo exporter fails in many ways; the other one may still work
            text = str(exc).strip().splitlines()
            failure = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
    if failure is None:
        exporter = "torch.onnx.export, dynamo exporter (torch.export)"
    else:
        axes = {INPUT_NAME: {0: "batch"}, **{t: {0: "batch"} for t in tasks}}
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(tasks), opset_version=ONNX_OPSET, dynamic_axes=axes)
        exporter = f"torch.onnx.export, TorchScript-based exporter (not the dynamo exporter: {failure})"
    opset = ONNX_OPSET
    try:
        import onnx
    except ImportError:
        return exporter, opset
    model = onnx.load(str(path), load_external_data=False)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), ONNX_OPSET)
    entry = model.metadata_props.add()
    entry.key, entry.value = "branchnet", json.dumps(meta)
    onnx.save(model, str(path))
    return exporter, opset


def _torch_runner(module: Any) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return dict(module(x))

    return run


def _onnx_runner(path: Path, tasks: list[str]) -> tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], str]:
    ort = onnx_runtime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if sorted(names) != sorted(tasks):
        raise ExportMismatch(f"the ONNX model's outputs are {names}, not the tasks {tasks}; nothing was written")

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = session.run(None, {INPUT_NAME: x.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(names, outputs)}

    return run, f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
