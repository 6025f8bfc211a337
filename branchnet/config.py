"""Experiment configuration: a YAML file read with ``yaml.safe_load`` into typed sections
(:mod:`branchnet.schema`, re-exported here).

Every key is checked: an unknown or mistyped key is a :class:`BadInput` that names it
and suggests the closest valid one. Common values can be overridden from the command
line (``--backbone``, ``--epochs`` ...) or generically with ``--set section.key=value``.
A value that names a plug-in (``model.head``, ``train.optimizer``, ``train.schedule``,
``train.weighting``, ``affinity.center``, a split) is checked against the registry that owns
those names, which is why this module sits a floor above them (docs/architecture.md, "Floors").

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
from pathlib import Path
from typing import Any, Union

import yaml

from branchnet.errors import BadInput, did_you_mean
from branchnet.moved import moved_attribute
from branchnet.units import MAX_EPOCHS, MAX_INT, MAX_SEED, check_int
from branchnet.schema import (AffinityConfig, AugmentConfig, BranchedConfig, Config, DataConfig, LoaderConfig,
                              ModelConfig, RoamingConfig, TaskEntry, TrainConfig)

__all__ = ["AffinityConfig", "AugmentConfig", "BranchedConfig", "Config", "DataConfig", "LoaderConfig",
           "ModelConfig", "RoamingConfig", "TaskEntry", "TrainConfig", "AMP_DTYPES", "apply_sets",
           "config_from_dict", "load_config"]


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


#: The largest value of an integer setting (:func:`branchnet.units.check_int`); any other takes
#: up to 2**63 - 1, what torch and numpy take. Lower bounds are checked with each setting's meaning.
INT_LIMITS = {"seed": MAX_SEED, "train.epochs": MAX_EPOCHS}


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
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return check_int(value, f"{source}: '{key}'", -MAX_INT, INT_LIMITS.get(key, MAX_INT))
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


#: How a branched network starts (``branched.init``).
BRANCHED_INITS = ("first", "average", "random")


def _choices() -> dict[tuple[str, str], tuple[str, ...]]:
    """Each setting that names a plug-in, and the names its registry owns (in the registry's order)."""
    from branchnet.nn.heads import DENSE_HEADS
    from branchnet.rsa.rdm import CENTERS
    from branchnet.train.optim import OPTIMIZERS, SCHEDULES
    from branchnet.train.weighting import WEIGHTINGS

    return {("model", "head"): DENSE_HEADS, ("train", "optimizer"): OPTIMIZERS.names,
            ("train", "schedule"): SCHEDULES.names, ("train", "weighting"): WEIGHTINGS.names,
            ("affinity", "center"): CENTERS, ("branched", "init"): BRANCHED_INITS}


def _check(config: Config, source: str) -> None:
    """Every value: names against the registries that own them, numbers against their ranges."""
    from branchnet.data import SPLITS

    for (section, key), choices in _choices().items():
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
    check_int(config.seed, f"{source}: 'seed'", 0, MAX_SEED)
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
        if split not in SPLITS:
            raise BadInput(f"{source}: unknown split 'data.splits.{split}'{did_you_mean(split, list(SPLITS))}; "
                           f"valid: {', '.join(SPLITS)}")
        if size is not None and size < 1:
            raise BadInput(f"{source}: 'data.splits.{split}' must be a positive number of images or null")


def _check_heads(config: Config, source: str) -> None:
    from branchnet.nn.heads import HEADS

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
        HEADS.check(head, f"model.heads.{task}", source)


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


#: Names that moved to the registries that own them in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"DENSE_HEADS": "branchnet.nn.heads"}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
