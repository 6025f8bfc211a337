"""timm ResNet and HRNet encoders split into D = 4 stages, a branch point after each.

The split (docs/design.md, "Stages"):

* ResNet: stem + layer1 | layer2 | layer3 | layer4 (one tensor between stages);
* HRNet: stem + layer1 | transition1 + stage2 | transition2 + stage3 |
  transition3 + stage4 (a list of multi-resolution tensors after stage 1).

Running the stages in sequence computes exactly what timm's own forward computes
(``forward_features`` for ResNet, the stem followed by ``stages`` for HRNet); the
classifier and HRNet's classification neck (incre/downsample/final layers) are not part
of the encoder. Models are built with random initialisation; ``pretrained`` may name a
local checkpoint (never downloaded). Costs come from :func:`count_params` and
:func:`count_flops` (``torch.utils.flop_counter``), per image at a given input size.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from branchnet.schema import ModelConfig
from branchnet.errors import BadInput, unknown_choice

#: Every supported encoder is split into this many stages (D).
NUM_STAGES = 4
RESNET_LOCATIONS = ("layer1", "layer2", "layer3", "layer4")
HRNET_LOCATIONS = ("stage1", "stage2", "stage3", "stage4")

Features = "torch.Tensor | list[torch.Tensor]"


@lru_cache(maxsize=1)
def supported_backbones() -> dict[str, str]:
    """Every timm model name branchnet can split, mapped to its family (resnet/hrnet)."""
    import timm

    names = {name: "resnet" for name in timm.list_models(module="resnet")}
    names.update({name: "hrnet" for name in timm.list_models(module="hrnet")})
    return names


def backbone_family(name: str) -> str:
    """``"resnet"`` or ``"hrnet"``; :class:`BadInput` listing the valid names otherwise."""
    family = supported_backbones().get(name)
    if family is None:
        raise unknown_choice("backbone", name, supported_backbones())
    return family


@dataclass(frozen=True)
class StageLayout:
    """What the branch points look like: names, channels and strides of their outputs.

    ``channels[d]`` and ``reductions[d]`` list one entry per resolution at branch point
    d (one for ResNet; 1 to 4 for HRNet). Stored in checkpoints as a plain dict.
    """

    backbone: str
    family: str
    locations: tuple[str, ...]
    channels: tuple[tuple[int, ...], ...]
    reductions: tuple[tuple[int, ...], ...]

    @property
    def num_stages(self) -> int:
        return len(self.locations)

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "family": self.family, "locations": list(self.locations),
                "channels": [list(c) for c in self.channels], "reductions": [list(r) for r in self.reductions]}


class HRNetStage(nn.Module):
    """One HRNet stage after the first: its transition (new branches) and its modules.

    Mirrors ``timm.models.hrnet.HighResolutionNet.stages``: the first transition maps
    the single stem tensor to the branches; later ones keep existing branches
    (``nn.Identity``) and derive the new lowest resolution from the last one.
    """

    def __init__(self, transition: nn.ModuleList, stage: nn.Module, first: bool) -> None:
        super().__init__()
        self.transition = transition
        self.stage = stage
        self.first = first

    def forward(self, x):
        if self.first:
            branches = [t(x) for t in self.transition]
        else:
            branches = [x[i] if isinstance(t, nn.Identity) else t(x[-1]) for i, t in enumerate(self.transition)]
        return self.stage(branches)


class HRNetStem(nn.Module):
    """HRNet's two stride-2 convolutions followed by layer1 (the first stage)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = model.conv1, model.bn1, model.act1
        self.conv2, self.bn2, self.act2 = model.conv2, model.bn2, model.act2
        self.layer1 = model.layer1

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.layer1(x)


@lru_cache(maxsize=None)
def _resnet_stem(backbone: str) -> int:
    """The stem width of a timm ResNet at width 1 (from a template on the meta device: no
    memory, no random draws), once per backbone in a process."""
    import timm

    template = timm.create_model(backbone, pretrained=False, device="meta")
    deep_stem = isinstance(template.conv1, nn.Sequential)
    return template.layer1[0].conv1.in_channels // (2 if deep_stem else 1)


def create_timm_model(config: ModelConfig) -> nn.Module:
    """The timm model of ``config`` (random init, or weights from a local checkpoint)."""
    import timm

    family = backbone_family(config.backbone)
    kwargs: dict = {}
    if family == "resnet":
        if config.width != 1.0:
            stem = _resnet_stem(config.backbone)
            # timm's ResNet planes are (64, 128, 256, 512) for every variant; blocks expand them
            kwargs["channels"] = tuple(max(4, round(c * config.width)) for c in (64, 128, 256, 512))
            kwargs["stem_width"] = max(4, round(stem * config.width))
        if config.output_stride != 32:
            kwargs["output_stride"] = config.output_stride
    else:
        if config.width != 1.0:
            raise BadInput(f"model.width applies to ResNet backbones only; for HRNet pick a narrower "
                           f"variant (hrnet_w18_small ... hrnet_w64) instead of width {config.width}")
        if config.output_stride != 32:
            raise BadInput("model.output_stride applies to ResNet backbones only (HRNet keeps a "
                           "high-resolution branch); remove it or set it to 32")
    model = timm.create_model(config.backbone, pretrained=False, num_classes=0, **kwargs)
    if config.pretrained:
        load_local_weights(model, config.pretrained)
    return model


def load_local_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load timm weights from a local ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file.

    Classifier and HRNet-neck keys may be absent or extra; any missing encoder key is a
    :class:`BadInput`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"pretrained weights {path} do not exist (model.pretrained must be a local file; "
                       "branchnet never downloads)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many types
        raise BadInput(f"pretrained weights {path} cannot be read ({type(exc).__name__}); "
                       "give a timm state_dict saved with torch.save or safetensors") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise BadInput(f"pretrained weights {path} do not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, _unexpected = model.load_state_dict(state, strict=False)
    neck = ("fc.", "classifier.", "incre_modules.", "downsamp_modules.", "final_layer.", "head.")
    missing = [k for k in missing if not k.startswith(neck)]
    if missing:
        raise BadInput(f"pretrained weights {path} do not fit {type(model).__name__}: "
                       f"{len(missing)} encoder weights missing, e.g. '{missing[0]}'")


def split_stages(model: nn.Module, backbone: str) -> nn.ModuleList:
    """The D = 4 stages of a timm ResNet or HRNet (modules shared with ``model``)."""
    family = backbone_family(backbone)
    if family == "resnet":
        stem = nn.Sequential()
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1"):
            stem.add_module(name, getattr(model, name))
        return nn.ModuleList([stem, model.layer2, model.layer3, model.layer4])
    return nn.ModuleList([
        HRNetStem(model),
        HRNetStage(model.transition1, model.stage2, first=True),
        HRNetStage(model.transition2, model.stage3, first=False),
        HRNetStage(model.transition3, model.stage4, first=False),
    ])


#: The layouts measured so far, by model config and image size (a layout depends on nothing else).
_LAYOUTS: dict[tuple[str, tuple[int, ...]], StageLayout] = {}


#: HRNet's lowest-resolution branch is at 1/32 of the input, and every stage adds its branches up
#: at each resolution: a side that 32 does not divide gives branches that do not line up.
HRNET_SIZE_MULTIPLE = 32


def check_image_size(config: ModelConfig, image_size: tuple[int, int]) -> None:
    """:class:`BadInput` when ``config``'s backbone cannot run on images of ``image_size`` (H, W):
    an HRNet needs both sides divisible by 32 (ResNets take any size)."""
    if backbone_family(config.backbone) != "hrnet":
        return
    if any(int(side) % HRNET_SIZE_MULTIPLE for side in image_size):
        fit = [max(HRNET_SIZE_MULTIPLE, round(int(side) / HRNET_SIZE_MULTIPLE) * HRNET_SIZE_MULTIPLE)
               for side in image_size]
        raise BadInput(f"{config.backbone} needs an image size whose sides are multiples of {HRNET_SIZE_MULTIPLE} "
                       f"(its branches reach 1/{HRNET_SIZE_MULTIPLE} of the input); data.image_size is "
                       f"{list(image_size)}: use e.g. {fit}")


def build_stages(config: ModelConfig, image_size: tuple[int, int] = (64, 64)) -> tuple[nn.ModuleList, StageLayout]:
    """A fresh encoder of ``config`` split into stages, and its :class:`StageLayout` (measured
    with a forward pass once per model config and image size in a process)."""
    check_image_size(config, image_size)
    model = create_timm_model(config)
    stages = split_stages(model, config.backbone)
    key = (repr(config), tuple(int(v) for v in image_size))
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _layout(stages, config.backbone, image_size)
    return stages, _LAYOUTS[key]


def _layout(stages: nn.ModuleList, backbone: str, image_size: tuple[int, int]) -> StageLayout:
    family = backbone_family(backbone)
    locations = RESNET_LOCATIONS if family == "resnet" else HRNET_LOCATIONS
    channels, reductions = [], []
    from torch.func import functional_call

    was_training = stages.training
    stages.eval()
    with torch.no_grad():  # on the meta device: shapes only, so any image size costs nothing
        x = torch.zeros(1, 3, *image_size, device="meta")
        for stage in stages:
            state = {name: torch.empty_like(value, device="meta")
                     for name, value in [*stage.named_parameters(), *stage.named_buffers()]}
            x = functional_call(stage, state, (x,))
            outs = x if isinstance(x, (list, tuple)) else [x]
            channels.append(tuple(int(o.shape[1]) for o in outs))
            reductions.append(tuple(max(1, round(image_size[0] / o.shape[2])) for o in outs))
    stages.train(was_training)
    return StageLayout(backbone, family, tuple(locations), tuple(channels), tuple(reductions))


def clone_stage(stage: nn.Module) -> nn.Module:
    """An independent copy of a stage (its own parameters)."""
    return copy.deepcopy(stage)


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers, not counted)."""
    return int(sum(p.numel() for p in module.parameters()))


#: FLOPs counted so far, by the structure of the module and the shapes of its inputs.
_FLOPS: dict[tuple[str, str], int] = {}


def _structure(module: nn.Module, inputs: tuple) -> tuple[str, str]:
    """What a module's FLOPs depend on: its modules with their settings (``repr``) and plain
    attributes, and the shapes (or values) of the inputs."""
    plain = (int, float, str, bool, tuple, list)
    attributes = [(name, type(m).__qualname__, sorted((k, repr(v)) for k, v in vars(m).items()
                                                      if not k.startswith("_") and k != "training"
                                                      and isinstance(v, plain)))
                  for name, m in module.named_modules()]
    shapes = [(tuple(x.shape), str(x.dtype)) if isinstance(x, torch.Tensor) else repr(x) for x in inputs]
    return repr(module) + repr(attributes), repr(shapes)


def count_flops(module: nn.Module, *inputs) -> int:
    """FLOPs of one forward pass of ``module`` on ``inputs`` (``torch.utils.flop_counter``).

    Counts multiply-adds as 2 FLOPs (convolutions and matrix products); pass a batch of
    one for per-image FLOPs. Runs in eval mode without gradients. A module of the same
    structure on inputs of the same shapes is counted once per process (the copies of a
    stage in every network of a study).
    """
    key = _structure(module, inputs)
    if key in _FLOPS:
        return _FLOPS[key]
    _FLOPS[key] = _count_flops(module, *inputs)
    return _FLOPS[key]


def _count_flops(module: nn.Module, *inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


def stage_costs(stages: nn.ModuleList, image_size: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Parameters and per-image FLOPs of each stage at input size (H, W)."""
    params, flops = [], []
    x = torch.zeros(1, 3, *image_size, device=next(stages.parameters()).device)
    was_training = stages.training
    stages.eval()
    with torch.no_grad():
        for stage in stages:
            params.append(count_params(stage))
            flops.append(count_flops(stage, x))
            x = stage(x)
    stages.train(was_training)
    return params, flops
