"""Experiment configuration: a YAML file read with ``yaml.safe_load`` into typed sections.

Every key is checked: an unknown or mistyped key is a :class:`BadInput` that names it
and suggests the closest valid one. Common values can be overridden from the command
line (``--backbone``, ``--epochs`` ...) or generically with ``--set section.key=value``.

A config looks like ``configs/scenes.yaml``::

    name: scenes
    seed: 0
    data:   {dataset: scenes, image_size: [64, 64], splits: {train: 3000, ...}}
    tasks:  [segmentation, depth, normals, edges, keypoints, count]
    model:  {backbone: resnet18, width: 0.25, output_stride: 8}
    train:  {epochs: 4, batch_size: 32, lr: 0.002}
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from branchnet.errors import BadInput, did_you_mean


@dataclass
class AugmentConfig:
    """Training-split augmentation (docs/datasets.md, "Augmentation"); null = none.

    Per training image: scale, crop (or pad) back to ``data.image_size``, flip, jitter;
    every label transformed to match (:mod:`branchnet.data.augment`).
    """

    #: Scale factors to draw from uniformly, e.g. [1.0, 1.2, 1.5] (the survey's NYUD-v2).
    scale: Optional[list[float]] = None
    #: Or a range [low, high] to draw the factor from uniformly, e.g. [0.5, 2.0].
    scale_range: Optional[list[float]] = None
    #: Crop at a random position (true) or at the centre (false: scaling about the centre,
    #: as the survey's code does).
    crop: bool = True
    #: Pad a scaled image smaller than the input (labels padded with their ignore or
    #: invalid value); false refuses scale factors below 1.
    pad: bool = True
    #: Horizontal flip with probability 0.5.
    flip: bool = False
    #: Photometric jitter in [0, 1]: brightness, contrast and saturation factors drawn
    #: from [1 - jitter, 1 + jitter] (0 = none).
    jitter: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any transform can change an image."""
        scales = self.scale_range or self.scale or [1.0]
        return any(float(s) != 1.0 for s in scales) or self.flip or self.jitter > 0


@dataclass
class LoaderConfig:
    """How batches are loaded (docs/performance.md); none of it changes what is trained.

    The number of worker processes is ``data.workers``.
    """

    #: Page-locked host memory for batches, so that copies to the GPU run asynchronously
    #: (null = on CUDA only).
    pin_memory: Optional[bool] = None
    #: Batches each worker process loads ahead (with ``data.workers`` > 0).
    prefetch: int = 2
    #: Keep the worker processes from one epoch to the next instead of starting them anew
    #: (null = whenever there are workers).
    persistent: Optional[bool] = None


@dataclass
class DataConfig:
    """Which dataset, where, and at what size."""

    #: Registered dataset name (``scenes``, ``cityscapes``, ``nyud``, ``celeba``, ...).
    dataset: str = "scenes"
    #: Dataset root on disk; for ``scenes`` the cache directory (default
    #: ``$BRANCHNET_CACHE`` or ``~/.cache/branchnet``).
    root: Optional[str] = None
    #: Network input size (H, W) in pixels; labels are brought to the same size.
    image_size: list[int] = field(default_factory=lambda: [64, 64])
    #: Images per split. ``scenes`` generates this many; real datasets use at most this
    #: many (``null`` = all). Splits: train, val, test, affinity.
    splits: dict[str, Optional[int]] = field(default_factory=dict)
    #: Dataset-specific options (see each dataset's docstring).
    options: dict[str, Any] = field(default_factory=dict)
    #: DataLoader worker processes (0 = load in the main process). null = automatic:
    #: on a GPU, the CPU cores this process may use (``os.sched_getaffinity``; shared by
    #: the processes of a torchrun node) less one for the training loop, at most 8; on the
    #: CPU 0 (the training uses every core itself).
    workers: Optional[int] = None
    #: Pinned memory, prefetch and persistent workers of the loaders.
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    #: Augmentation of the training split (null = none): scale or scale_range, crop,
    #: pad, flip, jitter.
    augment: Optional[AugmentConfig] = None


@dataclass
class ModelConfig:
    """The encoder (a timm ResNet or HRNet split into stages) and the task heads."""

    #: timm model name: resnet10t ... resnet152, hrnet_w18_small ... hrnet_w64.
    backbone: str = "resnet18"
    #: ResNet channel multiplier (1.0 = timm's widths; 0.5 = a thinner encoder).
    width: float = 1.0
    #: ResNet output stride (32 = timm default; 8 or 16 use dilated convolutions).
    output_stride: int = 32
    #: Local checkpoint with timm weights for the backbone (never downloaded).
    pretrained: Optional[str] = None
    #: Decoder of the dense tasks (docs/training.md, "Decoders"): ``simple`` (a 3x3
    #: conv and a 1x1 prediction), ``aspp`` (DeepLab-v3 ASPP, the survey's ResNet-50
    #: baseline), ``psp`` (pyramid pooling, the branched-networks paper's Cityscapes
    #: decoder) or ``fcn`` (a stack of convolutions with upsampling, the Taskonomy
    #: decoder). Image-level tasks take the ``linear`` head.
    head: str = "simple"
    #: Per-task decoder, overriding ``head``: {task: simple|aspp|psp|fcn|linear}.
    heads: dict[str, str] = field(default_factory=dict)
    #: Hidden channels of the ``simple``, ``aspp`` and ``psp`` heads.
    head_channels: int = 64
    #: ``aspp``: dilation rates of the 3x3 branches (DeepLab-v3 at output stride 8).
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    #: ``psp``: grid sizes of the pyramid's average poolings.
    psp_bins: list[int] = field(default_factory=lambda: [1, 2, 3, 6])
    #: ``fcn``: convolutions in all, the last being the 1x1 prediction.
    fcn_layers: int = 15
    #: ``fcn``: width of each stage of 3x3 convolutions; a 2x upsampling between stages.
    fcn_widths: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])


@dataclass
class RoamingConfig:
    """Maximum Roaming (Pascal et al., AAAI 2021; docs/training.md, "Maximum Roaming"): per-task
    masks over the output channels of every convolution in encoder nodes shared by two or more
    tasks, changed one channel per task and layer every ``delta`` epochs."""

    #: Sharing ratio p in [0, 1]: each channel starts in each task's partition with
    #: probability p (1 = the plain network, 0 = disjoint partitions).
    p: float = 0.8
    #: Update interval in epochs (fractional, > 0): one update step every ``delta`` epochs.
    delta: float = 0.1
    #: Completion r in (0, 1]: the share of the update plan that is run (1 = until every
    #: task has used every channel).
    completion: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation settings shared by single-task, branched and candidate training."""

    epochs: int = 10
    batch_size: int = 32
    #: ``adam``, ``adamw`` or ``sgd``.
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    #: Learning-rate schedule over all steps: ``poly`` (power 0.9), ``cosine`` or ``constant``.
    schedule: str = "poly"
    #: ``auto`` (cuda when present), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: Mixed precision on cuda (ignored on the CPU): true (bfloat16 where the GPU supports
    #: it, else float16 with a gradient scaler), false, or ``bfloat16`` / ``float16`` to choose.
    amp: Any = True
    #: ``torch.compile`` the network for training (a message and eager training when
    #: compilation fails); it changes how fast, not what is trained.
    compile: bool = False
    #: Evaluate on the validation split every this many epochs (and always at the end).
    eval_every: int = 1
    #: Multi-task loss weighting: ``uniform``, ``uncertainty``, ``dwa`` or ``gradnorm``.
    weighting: str = "uniform"
    #: Fixed per-task loss weights (``uniform`` weighting); missing tasks weigh 1.
    loss_weights: dict[str, float] = field(default_factory=dict)
    #: Gradient-norm clipping (0 = off).
    clip_grad: float = 0.0
    #: Maximum Roaming on the shared encoder nodes (null = off): {p, delta, completion}.
    roaming: Optional[RoamingConfig] = None
    #: Keep each epoch's weights beside the network as ``epoch<E>.pt`` (for
    #: ``branchnet affinity --epoch E``: the affinity of partly trained models). Not a
    #: training setting: it changes no network.
    keep_checkpoints: bool = False


@dataclass
class AffinityConfig:
    """Affinity settings (``branchnet affinity``): RSA's images, centring, pooling, bootstrap;
    TAG's measuring interval."""

    images: int = 500
    #: ``images`` (the paper: Pearson between images' vectors) or ``features``.
    center: str = "images"
    #: ``none`` or ``avg:S`` (average-pool feature maps to SxS first).
    pool: str = "none"
    bootstrap: int = 0
    #: ``--measure tag``: measure the lookahead affinity every this many training steps.
    tag_every: int = 10


@dataclass
class BranchedConfig:
    """How a branched network is built and what budget ``branchnet run`` uses."""

    #: How a branched network starts: ``random`` (the fair protocol: the same random encoder
    #: as the single-task models, then the same schedule), or from the trained single-task
    #: weights, the ``first`` task's of each group or their ``average`` (its Δ_MTL then
    #: compares networks trained longer than their baselines; reports say so).
    init: str = "random"
    #: Parameter budget for ``branchnet run`` (e.g. ``1.5M``); null = halfway between
    #: the all-shared and all-separate networks.
    params: Optional[str] = None
    #: Optional FLOPs budget for ``branchnet run``.
    flops: Optional[str] = None


@dataclass
class TaskEntry:
    """One task of the experiment: a dataset task name, its type and options."""

    name: str
    #: Task type (``segmentation``, ``depth``, ...); default: what the dataset says.
    type: Optional[str] = None
    #: Type-specific options (e.g. ``pos_weight`` for edges).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """A whole experiment."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[TaskEntry] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    branched: BranchedConfig = field(default_factory=BranchedConfig)
    #: Where the config came from (not a YAML key).
    source: Optional[str] = field(default=None, metadata={"internal": True})

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.data.image_size[0]), int(self.data.image_size[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (for checkpoints, which hold no pickled objects, and JSON)."""
        out = dataclasses.asdict(self)
        out.pop("source", None)
        return out

    def default_runs_dir(self) -> Path:
        return Path("runs") / self.name


# ---------------------------------------------------------------------------------
# Reading and validating


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                sets: list[str] | None = None) -> Config:
    """Read ``path`` (YAML), apply ``--set key=value`` strings and then ``overrides``.

    ``overrides`` maps dotted keys to values (``{"model.backbone": "resnet50"}``); None
    values are ignored, so CLI options that were not given change nothing.
    Raises :class:`BadInput` for a missing file, invalid YAML, unknown keys or values of
    the wrong type.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"config {path} is a directory; give a YAML file (e.g. configs/scenes.yaml)")
    if not path.is_file():
        hint = ""
        candidates = sorted(p.name for p in Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
        if candidates:
            hint = f"; available in configs/: {', '.join(candidates)}"
        raise BadInput(f"config file {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"config file {path} is not UTF-8 text; give a YAML config (e.g. configs/scenes.yaml)") from None
    except OSError as exc:
        raise BadInput(f"config file {path} cannot be read: {exc.strerror}") from None
    except RecursionError:
        raise BadInput(f"config file {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"config file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(f"config file {path} must hold a mapping of sections (name, data, tasks, model, train, ...)")
    raw.setdefault("name", path.stem)
    apply_sets(raw, sets, str(path))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, key, value, str(path))
    config = config_from_dict(raw, source=str(path))
    return config


def apply_sets(raw: dict[str, Any], sets: list[str] | None, source: str = "config") -> dict[str, Any]:
    """Apply ``--set section.key=value`` strings (YAML values) to a plain config mapping in place."""
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set '{item}' must look like section.key=value (e.g. train.lr=0.01)")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise BadInput(f"--set '{item}': the value '{value}' is not valid YAML ({getattr(exc, 'problem', exc)}); "
                           "quote it or write it as YAML, e.g. train.lr=0.01 or 'data.image_size=[64, 64]'") from None
        _set_dotted(raw, key.strip(), parsed, source)
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from a plain mapping (validates every key and type)."""
    raw = copy.deepcopy(raw)
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list):
        raise BadInput(f"{source}: 'tasks' must be a list of task names, e.g. tasks: [{tasks}] or [seg, depth]; "
                       f"got {tasks!r}")
    raw["tasks"] = [_task_entry(t, source) for t in tasks]
    config = _build(Config, raw, source, "")
    config.source = source
    _check(config, source)
    return config


def _task_entry(item: Any, source: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and "name" in item:
        return item
    raise BadInput(f"{source}: each entry of 'tasks' must be a task name or a mapping with 'name' "
                   f"(and optional 'type', 'options'), got {item!r}")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise BadInput(f"{source}: cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise BadInput(f"{source}: section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise BadInput(f"{source}: unknown key '{prefix}{key}'{did_you_mean(str(key), fields)}; "
                           f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}")
        kwargs[key] = _coerce_to(hints[key], value, source, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce_to(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce_to(non_none[0], value, source, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, source, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"{source}: '{key}' must be a list, got {value!r}")
        return [_coerce_to(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInput(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce_to(args[1], v, source, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise BadInput(f"{source}: '{key}' must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInput(f"{source}: '{key}' must be an integer, got {value!r}")
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-3 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise BadInput(f"{source}: '{key}' must be a number, got {value!r}")
        if not math.isfinite(number):
            raise BadInput(f"{source}: '{key}' must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise BadInput(f"{source}: '{key}' must be a string, got {value!r}")
    return value


#: Decoders of dense tasks (``model.head``); image-level tasks take ``linear``.
DENSE_HEADS = ("simple", "aspp", "psp", "fcn")

_CHOICES = {
    ("model", "head"): DENSE_HEADS,
    ("train", "optimizer"): ("adam", "adamw", "sgd"),
    ("train", "schedule"): ("poly", "cosine", "constant"),
    ("train", "weighting"): ("uniform", "uncertainty", "dwa", "gradnorm"),
    ("affinity", "center"): ("images", "features"),
    ("branched", "init"): ("first", "average", "random"),
}


def _check(config: Config, source: str) -> None:
    """Value checks that need no other module (registries check names later)."""
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in choices:
            raise BadInput(f"{source}: '{section}.{key}' is '{value}'{did_you_mean(value, choices)}; "
                           f"valid: {', '.join(choices)}")
    if len(config.data.image_size) != 2 or min(config.data.image_size) < 16:
        raise BadInput(f"{source}: 'data.image_size' must be [H, W] with both at least 16, "
                       f"got {config.data.image_size}")
    name = str(config.name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("-") or "\0" in name:
        raise BadInput(f"{source}: 'name' {name!r} must be a plain name (no path separators; it names "
                       "runs/<name>), e.g. name: scenes")
    positive = {"train.epochs": config.train.epochs, "train.batch_size": config.train.batch_size,
                "train.lr": config.train.lr, "model.width": config.model.width,
                "model.head_channels": config.model.head_channels, "train.eval_every": config.train.eval_every}
    for key, value in positive.items():
        if not value > 0:
            raise BadInput(f"{source}: '{key}' must be positive, got {value}")
    non_negative = {"train.weight_decay": config.train.weight_decay, "train.clip_grad": config.train.clip_grad,
                    "affinity.bootstrap": config.affinity.bootstrap}
    for key, value in non_negative.items():
        if value < 0:
            raise BadInput(f"{source}: '{key}' must be 0 or more, got {value}")
    if not 0 <= config.train.momentum < 1:
        raise BadInput(f"{source}: 'train.momentum' must lie in [0, 1), got {config.train.momentum}")
    if config.affinity.images < 4:
        raise BadInput(f"{source}: 'affinity.images' must be at least 4 (an RDM needs 4 images), got "
                       f"{config.affinity.images}")
    for task, weight in config.train.loss_weights.items():
        if task not in config.task_names:
            raise BadInput(f"{source}: 'train.loss_weights' names '{task}', which is not a task of the config"
                           f"{did_you_mean(task, config.task_names)} ({', '.join(config.task_names)})")
        if not weight >= 0:
            raise BadInput(f"{source}: 'train.loss_weights.{task}' must be 0 or more, got {weight}")
    if max(config.data.image_size) > 4096:
        raise BadInput(f"{source}: 'data.image_size' {config.data.image_size} is larger than 4096 pixels a side; "
                       "give the network's input size, e.g. [512, 1024]")
    _check_heads(config, source)
    _check_augment(config, source)
    _check_speed(config, source)
    _check_roaming(config, source)
    if config.affinity.tag_every < 1:
        raise BadInput(f"{source}: 'affinity.tag_every' must be a positive number of training steps "
                       f"(e.g. 10), got {config.affinity.tag_every}")
    if config.model.output_stride not in (8, 16, 32):
        raise BadInput(f"{source}: 'model.output_stride' must be 8, 16 or 32, got {config.model.output_stride}")
    names = config.task_names
    if not names:
        raise BadInput(f"{source}: 'tasks' is empty; list the dataset's tasks to learn (e.g. [segmentation, depth])")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInput(f"{source}: task '{duplicates[0]}' is listed twice in 'tasks'")
    for split, size in config.data.splits.items():
        if split not in ("train", "val", "test", "affinity"):
            raise BadInput(f"{source}: unknown split 'data.splits.{split}'{did_you_mean(split, ['train', 'val', 'test', 'affinity'])}; "
                           "valid: train, val, test, affinity")
        if size is not None and size < 1:
            raise BadInput(f"{source}: 'data.splits.{split}' must be a positive number of images or null")


def _check_heads(config: Config, source: str) -> None:
    model = config.model
    for key in ("aspp_rates", "psp_bins", "fcn_widths"):
        values = getattr(model, key)
        if not values or min(values) < 1:
            raise BadInput(f"{source}: 'model.{key}' must be a non-empty list of positive integers, got {values}")
    if model.fcn_layers < len(model.fcn_widths) + 1:
        raise BadInput(f"{source}: 'model.fcn_layers' is {model.fcn_layers} but the {len(model.fcn_widths)} stages "
                       f"of 'model.fcn_widths' need at least {len(model.fcn_widths) + 1} layers (one 3x3 "
                       "convolution each and the 1x1 prediction)")
    names = [t.name for t in config.tasks]
    for task, head in model.heads.items():
        if task not in names:
            raise BadInput(f"{source}: 'model.heads.{task}' names no task of the config{did_you_mean(task, names)}; "
                           f"tasks: {', '.join(names)}")
        if head not in DENSE_HEADS + ("linear",):
            raise BadInput(f"{source}: 'model.heads.{task}' is '{head}'{did_you_mean(head, DENSE_HEADS + ('linear',))}; "
                           f"valid: {', '.join(DENSE_HEADS + ('linear',))}")


#: Values of ``train.amp`` besides true and false.
AMP_DTYPES = ("bfloat16", "float16")


def _check_speed(config: Config, source: str) -> None:
    """Loader and precision settings: how fast, never what is trained."""
    data, train = config.data, config.train
    if data.workers is not None and data.workers < 0:
        raise BadInput(f"{source}: 'data.workers' must be 0 or more worker processes (or null for automatic), "
                       f"got {data.workers}")
    if data.loader.prefetch < 1:
        raise BadInput(f"{source}: 'data.loader.prefetch' must be at least 1 batch per worker, "
                       f"got {data.loader.prefetch}")
    if not (isinstance(train.amp, bool) or (isinstance(train.amp, str) and train.amp in AMP_DTYPES)):
        raise BadInput(f"{source}: 'train.amp' is {train.amp!r}; valid: true (bfloat16 where supported, "
                       "else float16), false, bfloat16, float16")


def _check_roaming(config: Config, source: str) -> None:
    roaming = config.train.roaming
    if roaming is None:
        return
    if not 0.0 <= roaming.p <= 1.0:
        raise BadInput(f"{source}: 'train.roaming.p' (the sharing ratio) must lie in [0, 1] (1 = plain "
                       f"network, 0 = disjoint partitions), got {roaming.p}")
    if not roaming.delta > 0:
        raise BadInput(f"{source}: 'train.roaming.delta' (epochs between two mask updates) must be positive "
                       f"(e.g. 0.1), got {roaming.delta}")
    if not 0.0 < roaming.completion <= 1.0:
        raise BadInput(f"{source}: 'train.roaming.completion' (share of the update plan to run) must lie in "
                       f"(0, 1], got {roaming.completion}")


def _check_augment(config: Config, source: str) -> None:
    augment = config.data.augment
    if augment is None:
        return
    if augment.scale is not None and augment.scale_range is not None:
        raise BadInput(f"{source}: 'data.augment' sets both scale and scale_range; give a list of factors "
                       "(scale: [1.0, 1.2, 1.5]) or a range (scale_range: [0.5, 2.0])")
    if augment.scale is not None:
        if not augment.scale or min(augment.scale) <= 0:
            raise BadInput(f"{source}: 'data.augment.scale' must list factors > 0 (e.g. [1.0, 1.2, 1.5]), "
                           f"got {augment.scale}")
    if augment.scale_range is not None:
        low_high = augment.scale_range
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
            raise BadInput(f"{source}: 'data.augment.scale_range' must be [low, high] with 0 < low <= high "
                           f"(e.g. [0.5, 2.0]), got {low_high}")
    if not 0.0 <= augment.jitter <= 1.0:
        raise BadInput(f"{source}: 'data.augment.jitter' must lie in [0, 1] (0 = none, 0.4 = factors in "
                       f"[0.6, 1.4]), got {augment.jitter}")
    smallest = min(augment.scale_range or augment.scale or [1.0])
    if smallest < 1.0 and not augment.pad:
        h, w = config.image_size
        raise BadInput(f"{source}: 'data.augment' scale {smallest:g} shrinks the {h}x{w} input to "
                       f"{max(1, round(h * smallest))}x{max(1, round(w * smallest))}, smaller than the {h}x{w} crop, "
                       "and pad is false; set pad: true or use scale factors >= 1")
