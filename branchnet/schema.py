"""The experiment config's typed sections: plain dataclasses with their defaults, and nothing else.

Every module that reads a setting takes these types; reading a YAML file into them and
checking every value (against the registries that own the names of heads, optimisers,
weightings ...) is :mod:`branchnet.config`, a floor above the packages whose registries it
asks. ``branchnet.config`` re-exports every class here, so ``from branchnet.config import
ModelConfig`` keeps working.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


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
