"""The error contract, held over a catalogue of bad inputs to every command (docs/design.md,
"Errors"): exit code 2, exactly one line on stderr starting with ``branchnet: error:``, no
traceback, and nothing new or changed on disk (no file, no directory, no touched artifact).

The catalogue is a table: (id, arguments, fragments the message must contain). Arguments
name files of one shared *world* (configs, a trained tiny run, good and bad artifacts) by
``{placeholders}``; a case never trains, so the whole catalogue takes seconds.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from branchnet.config import load_config
from branchnet.steps.affinity import affinity_from_runs
from branchnet.steps.train_single import train_single
from branchnet.tree import make_tree, save_tree
from conftest import TINY_CONFIG

TASKS = ("seg", "depth")
LOCATIONS = ["layer1", "layer2", "layer3", "layer4"]


class Pwn:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _affinity(**changes) -> dict:
    a = np.ones((4, 2, 2))
    a[:, 0, 1] = a[:, 1, 0] = 0.3
    arrays = {"affinity": a, "tasks": np.array(list(TASKS)), "locations": np.array(LOCATIONS),
              "stage_params": np.array([10, 20, 30, 40]), "head_params": np.array([5, 5])}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_cache):
    """Every file the catalogue refers to; ``trained`` holds finished single-task models."""
    root = tmp_path_factory.mktemp("world")
    w: dict[str, str] = {"world": str(root), "fresh": str(root / "never-created"), "cache": str(data_cache)}
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(root=data_cache, tasks="[seg, depth]").replace("epochs: 2", "epochs: 1"))
    w["config"] = str(config)

    def variant(name: str, text: str) -> None:
        path = root / f"{name}.yaml"
        path.write_text(text)
        w[name] = str(path)

    base = config.read_text()
    variant("cfg_tasks_string", base.replace("tasks: [seg, depth]", "tasks: seg"))
    variant("cfg_name_slash", "name: ../../escape\n" + base.replace("name: tiny\n", ""))
    variant("cfg_list", "- a\n- b\n")
    variant("cfg_bad_yaml", "name: x\ntrain: {epochs: [\n")
    variant("cfg_deep", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "latin.yaml").write_bytes(b"name: x\n\xff\xfe\xfa\n")
    w["cfg_latin"] = str(root / "latin.yaml")
    (root / "a-directory.yaml").mkdir()
    w["cfg_dir"] = str(root / "a-directory.yaml")
    variant("cfg_seed_huge", base.replace("seed: 0", "seed: 99999999999999999999"))
    variant("cfg_huge", base.replace("image_size: [32, 32]", "image_size: [4000, 4000]")
            .replace("train: 48", "train: 50000"))

    runs = root / "trained"
    cfg = load_config(config)
    train_single(cfg, runs, quiet=True)
    affinity_from_runs(cfg, runs, progress=False)
    w["trained"] = str(runs)
    w["affinity"] = str(runs / "affinity.npz")
    single = json.loads((runs / "single" / "seg" / "metrics.json").read_text())
    heads = [json.loads((runs / "single" / t / "metrics.json").read_text())["head_params"][t] for t in TASKS]
    tree = make_tree([[list(TASKS)]] * 3 + [[["seg"], ["depth"]]], list(TASKS), single["locations"],
                     np.ones((4, 2, 2)), single["stage_params"], heads, backbone="resnet18")
    save_tree(root / "tree.json", tree)
    w["tree"] = str(root / "tree.json")
    w["shared_params"] = str(int(sum(single["stage_params"]) + sum(heads)))
    w["separate_params"] = str(int(len(TASKS) * sum(single["stage_params"]) + sum(heads)))

    def text(name: str, content: str | bytes) -> None:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        w[name.replace(".", "_").replace("-", "_")] = str(path)

    tree_obj = tree.to_json()
    text("tree-invalid.json", "{not json")
    text("tree-latin.json", b"\xff\xfe{}")
    text("tree-deep.json", "[" * 100000 + "]" * 100000)
    text("tree-list.json", "[1, 2]")
    text("tree-nopart.json", json.dumps({k: v for k, v in tree_obj.items() if k != "partitions"}))
    text("tree-unnested.json", json.dumps({**tree_obj, "partitions": [[["seg"], ["depth"]]] + [[list(TASKS)]] * 3}))
    text("tree-twice.json", json.dumps({**tree_obj, "partitions": [[["seg", "seg", "depth"]]] * 4}))
    text("tree-othertasks.json", json.dumps({**tree_obj, "tasks": ["seg", "edges"],
                                             "partitions": [[["seg", "edges"]]] * 4}))
    bare = {k: v for k, v in tree_obj.items() if k not in ("costs", "params", "backbone")}
    text("tree-3levels.json", json.dumps({**bare, "locations": LOCATIONS[:3], "partitions": [[list(TASKS)]] * 3}))
    text("tree-otherbackbone.json", json.dumps({**tree_obj, "backbone": "resnet50"}))
    text("tree-params.json", json.dumps({**tree_obj, "params": 123}))
    text("tree-split-first.json", json.dumps({**bare, "partitions": [[["seg"], ["depth"]]] * 4}))
    text("tree-nan.json", json.dumps(tree_obj).replace('"dissimilarity": 0.0', '"dissimilarity": NaN'))
    (root / "tree-dir.json").mkdir()
    w["tree_dir"] = str(root / "tree-dir.json")

    def aff(name: str, **changes) -> None:
        w[name] = str(_npz(root / f"{name}.npz", **_affinity(**changes)))

    aff("aff_ok")
    aff("aff_strings", affinity=np.array([[["a", "b"], ["c", "d"]]] * 4))
    aff("aff_complex", affinity=np.ones((4, 2, 2)) + 0.5j)
    aff("aff_d0", affinity=np.ones((0, 2, 2)), locations=np.array([], dtype=str), stage_params=np.array([], dtype=int))
    aff("aff_n0", affinity=np.ones((4, 0, 0)), tasks=np.array([], dtype=str), head_params=np.array([], dtype=int))
    aff("aff_asym", affinity=np.stack([np.array([[1.0, 0.2], [0.9, 1.0]])] * 4))
    aff("aff_diag", affinity=np.full((4, 2, 2), 0.5))
    aff("aff_range", affinity=np.stack([np.array([[1.0, 3.0], [3.0, 1.0]])] * 4))
    aff("aff_nan", affinity=np.stack([np.array([[1.0, np.nan], [np.nan, 1.0]])] * 4))
    aff("aff_ntasks", tasks=np.array(["seg"]))
    aff("aff_dup", tasks=np.array(["seg", "seg"]))
    aff("aff_nocost", stage_params=None, head_params=None)
    aff("aff_negcost", stage_params=np.array([-1, 2, 3, 4]))
    aff("aff_costs_str", stage_params=np.array(["a", "b", "c", "d"]))
    w["aff_nokey"] = str(_npz(root / "aff_nokey.npz", tasks=np.array(list(TASKS))))
    text("aff-text.npz", "not an npz")
    w["aff_pickle"] = str(root / "aff_pickle.npz")
    np.save(root / "aff_pickle.npy", np.array([Pwn(str(root / "pwned"))], dtype=object), allow_pickle=True)
    shutil.move(root / "aff_pickle.npy", root / "aff_pickle.npz")

    w["feat_ok"] = str(_npz(root / "feat_ok.npz", **{f"{t}/{l}": np.random.rand(8, 5) for t in TASKS for l in ("a", "b")}))
    w["feat_mismatch"] = str(_npz(root / "feat_mismatch.npz", **{"seg/a": np.random.rand(8, 5),
                                                                 "depth/a": np.random.rand(6, 5)}))
    w["feat_nokey"] = str(_npz(root / "feat_nokey.npz", seg=np.random.rand(8, 5)))
    w["feat_few"] = str(_npz(root / "feat_few.npz", **{f"{t}/a": np.random.rand(3, 5) for t in TASKS}))
    w["loss_ok"] = str(_npz(root / "loss_ok.npz", seg=np.random.rand(10), depth=np.random.rand(10)))
    w["loss_two"] = str(_npz(root / "loss_two.npz", seg=np.array([0.1, 0.9]), depth=np.array([0.2, 0.8])))
    w["loss_ragged"] = str(_npz(root / "loss_ragged.npz", seg=np.random.rand(10), depth=np.random.rand(7)))
    w["loss_nan"] = str(_npz(root / "loss_nan.npz", seg=np.array([1.0, np.nan, 2, 3]), depth=np.random.rand(4)))

    text("cand.csv", "name,cost,seg,depth\na,1,0.5,\nb,1,,0.4\nab,1.5,0.45,0.42\n")
    text("cand-ragged.csv", "name,cost,seg,depth\na,1,0.5\n")
    text("cand-text.csv", "name,cost,seg,depth\na,1,fast,0.1\n")
    text("cand-neg.csv", "name,cost,seg,depth\na,1,-0.5,0.1\n")
    text("cand-nocover.csv", "name,cost,seg,depth\na,1,0.5,\n")
    text("cand-test-other.csv", "name,cost,seg,depth\nz,1,0.5,0.4\n")
    text("results.txt", "0.5\t0.4\t0.3\t0.2\t0.1\n0.4\t0.3\t\t\t\n")
    text("results-short.txt", "0.5\t0.4\n")

    torch.save({"format": "branchnet.model/1"}, root / "incomplete.pt")
    w["model_incomplete"] = str(root / "incomplete.pt")
    with open(root / "evil.pt", "wb") as fh:
        pickle.dump(Pwn(str(root / "pwned")), fh)
    w["model_evil"] = str(root / "evil.pt")
    text("not-a-model.pt", "hello")
    w["model_seg"] = str(runs / "single" / "seg" / "model.pt")

    seg_ckpt = root / "ckpt-runs" / "single" / "seg"
    seg_ckpt.mkdir(parents=True)
    (seg_ckpt / "checkpoint.pt").write_bytes(b"\x00garbage")
    w["ckpt_runs"] = str(root / "ckpt-runs")
    evil_ckpt = root / "evil-ckpt-runs" / "single" / "seg"
    evil_ckpt.mkdir(parents=True)
    shutil.copy(root / "evil.pt", evil_ckpt / "checkpoint.pt")
    w["evil_ckpt_runs"] = str(root / "evil-ckpt-runs")
    def run_copy(name: str) -> Path:
        """A copy of the trained run (single-task models and RSA affinity) to add a fault to."""
        copy = root / name
        shutil.copytree(runs / "single", copy / "single")
        for f in ("affinity.npz", "affinity.json"):
            shutil.copy(runs / f, copy / f)
        w[name.replace("-", "_")] = str(copy)
        return copy

    locked = run_copy("locked-runs")  # networks another (live) process is training: this one
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01 00:00:00", "command": "x"}
    for network in ("evaluate/nets/shared/seed0", "search/nets/shared/seed100", "tag"):
        (locked / network).mkdir(parents=True)
        (locked / network / "train.lock").write_text(json.dumps(holder))
    corrupt = run_copy("corrupt-ckpt-runs")  # interrupted networks whose checkpoint is garbage
    for network in ("evaluate/nets/shared/seed0", "search/nets/shared/seed100"):
        (corrupt / network).mkdir(parents=True)
        (corrupt / network / "checkpoint.pt").write_bytes(b"\x00garbage")
    (root / "a-file").write_text("x")
    w["a_file"] = str(root / "a-file")
    (root / "out-dir").mkdir()
    w["out_dir"] = str(root / "out-dir")
    return w


T = ("train-single", "--config", "{config}", "--runs", "{fresh}")
E = ("evaluate", "--config", "{config}", "--measures", "rsa", "--seeds", "1", "--random", "1")

CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # --- the command line itself
    ("no-such-command", ("frobnicate",), ("no such command",)),
    ("no-such-option", ("build", "--no-such-option"), ("no such option",)),
    ("missing-option-value", ("build", "--affinity"), ("requires an argument",)),
    ("int-option-not-int", (*T, "--epochs", "abc"), ("--epochs",)),
    ("image-size-one-value", (*T, "--image-size", "32"), ("--image-size",)),
    # --- configs
    ("config-missing", ("train-single", "--config", "{world}/nope.yaml"), ("does not exist",)),
    ("config-directory", ("train-single", "--config", "{cfg_dir}"), ("is a directory",)),
    ("config-not-utf8", ("train-single", "--config", "{cfg_latin}"), ("not utf-8",)),
    ("config-bad-yaml", ("train-single", "--config", "{cfg_bad_yaml}"), ("not valid yaml",)),
    ("config-too-deep", ("train-single", "--config", "{cfg_deep}"), ("config",)),
    ("config-a-list", ("train-single", "--config", "{cfg_list}"), ("mapping",)),
    ("config-tasks-string", ("train-single", "--config", "{cfg_tasks_string}"), ("'tasks' must be a list",)),
    ("config-name-path", ("train-single", "--config", "{cfg_name_slash}"), ("plain name",)),
    ("config-too-large-to-generate", ("train-single", "--config", "{cfg_huge}", "--runs", "{fresh}"),
     ("needs about", "free")),
    ("set-no-equals", (*T, "--set", "train.lr"), ("section.key=value",)),
    ("set-bad-yaml", (*T, "--set", "train.lr=[1,"), ("not valid yaml",)),
    ("set-into-value", (*T, "--set", "train.lr.x=1"), ("not a section",)),
    ("set-unknown-top", (*T, "--set", "modle.width=1"), ("unknown key 'modle'", "model")),
    ("set-unknown-train", (*T, "--set", "train.epoch=1"), ("unknown key 'train.epoch'", "epochs")),
    ("lr-text", (*T, "--set", "train.lr=fast"), ("'train.lr' must be a number",)),
    ("lr-negative", (*T, "--set", "train.lr=-0.1"), ("train.lr", "positive")),
    ("lr-zero", (*T, "--set", "train.lr=0"), ("train.lr", "positive")),
    ("lr-inf", (*T, "--set", "train.lr=.inf"), ("train.lr", "finite")),
    ("lr-nan", (*T, "--set", "train.lr=.nan"), ("train.lr", "finite")),
    ("epochs-zero", (*T, "--set", "train.epochs=0"), ("train.epochs", "positive")),
    ("epochs-fraction", (*T, "--set", "train.epochs=1.5"), ("train.epochs", "integer")),
    ("epochs-bool", (*T, "--set", "train.epochs=true"), ("train.epochs", "integer")),
    ("batch-zero", (*T, "--set", "train.batch_size=0"), ("train.batch_size", "positive")),
    ("batch-larger-than-split", (*T, "--set", "train.batch_size=64"), ("fewer than one batch",)),
    ("weight-decay-negative", (*T, "--set", "train.weight_decay=-1"), ("train.weight_decay", "0 or more")),
    ("workers-negative", (*T, "--set", "data.workers=-1"), ("data.workers", "0 or more")),
    ("momentum-one", (*T, "--set", "train.momentum=1.5"), ("train.momentum",)),
    ("clip-negative", (*T, "--set", "train.clip_grad=-1"), ("train.clip_grad",)),
    ("amp-not-bool", (*T, "--set", "train.amp=maybe"), ("train.amp", "bfloat16")),
    ("optimizer-unknown", (*T, "--set", "train.optimizer=adan"), ("train.optimizer", "adam")),
    ("schedule-unknown", (*T, "--set", "train.schedule=step"), ("train.schedule", "poly")),
    ("weighting-unknown", (*T, "--set", "train.weighting=magic"), ("train.weighting", "uniform")),
    ("loss-weight-negative", (*T, "--set", "train.loss_weights={{seg: -1}}"), ("loss_weights",)),
    ("loss-weight-unknown-task", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared",
                                  "--set", "train.loss_weights={{edges: 2}}"), ("edges",)),
    ("eval-every-zero", (*T, "--set", "train.eval_every=0"), ("train.eval_every",)),
    ("tasks-empty", (*T, "--set", "tasks=[]"), ("'tasks' is empty",)),
    ("task-twice", (*T, "--set", "tasks=[seg, seg]"), ("listed twice",)),
    ("task-unknown", (*T, "--set", "tasks=[sge]"), ("unknown task", "seg")),
    ("task-entry-bad", (*T, "--set", "tasks=[{{type: depth}}]"), ("task name or a mapping",)),
    ("task-type-unknown", (*T, "--set", "tasks=[{{name: seg, type: segmentatoin}}]"), ("unknown task type",)),
    ("task-option-unknown", (*T, "--set", "tasks=[{{name: edges, options: {{weight: 2}}}}]"), ("unknown option",)),
    ("backbone-unknown", (*T, "--backbone", "resnet19"), ("unknown backbone", "resnet18")),
    ("width-zero", (*T, "--set", "model.width=0"), ("model.width", "positive")),
    ("head-channels-negative", (*T, "--set", "model.head_channels=-4"), ("model.head_channels",)),
    ("output-stride", (*T, "--set", "model.output_stride=7"), ("output_stride",)),
    ("hrnet-width", (*T, "--backbone", "hrnet_w18_small", "--set", "model.width=0.5"), ("ResNet",)),
    ("hrnet-image-size", (*T, "--backbone", "hrnet_w18_small", "--image-size", "48", "48"),
     ("multiples of 32", "[64, 64]")),
    ("pretrained-missing", (*T, "--set", "model.pretrained=/no/such/weights.pth"), ("do not exist",)),
    ("head-unknown", (*T, "--set", "model.head=unet"), ("model.head",)),
    ("image-size-small", (*T, "--image-size", "8", "8"), ("at least 16",)),
    ("image-size-three", (*T, "--set", "data.image_size=[32, 32, 3]"), ("[H, W]",)),
    ("split-unknown", (*T, "--set", "data.splits.tain=10"), ("data.splits.tain", "train")),
    ("split-zero", (*T, "--set", "data.splits.train=0"), ("data.splits.train",)),
    ("dataset-unknown", (*T, "--set", "data.dataset=imagenet"), ("unknown dataset",)),
    ("scenes-option-unknown", (*T, "--set", "data.options.colour=1"), ("unknown scenes option",)),
    ("scenes-max-objects", (*T, "--set", "data.options.max_objects=40"), ("max_objects",)),
    ("augment-scale-zero", (*T, "--set", "data.augment={{scale: [0, 1]}}"), ("scale",)),
    ("augment-jitter", (*T, "--set", "data.augment={{jitter: 2}}"), ("jitter",)),
    ("augment-both", (*T, "--set", "data.augment={{scale: [1], scale_range: [1, 2]}}"), ("scale_range",)),
    ("config-affinity-images-few", (*T, "--set", "affinity.images=2"), ("affinity.images",)),
    ("config-affinity-center", (*T, "--set", "affinity.center=mean"), ("affinity.center",)),
    ("init-unknown", (*T, "--set", "branched.init=zeros"), ("branched.init",)),
    ("device-unknown", (*T, "--device", "tpu"), ("not a device",)),
    ("device-cuda", (*T, "--device", "cuda"), ("no cuda gpu",)),
    ("task-option-not-in-config", (*T, "--task", "edges"), ("edges",)),
    ("task-option-twice", (*T, "--task", "seg", "--task", "seg"), ("twice",)),
    ("runs-is-a-file", ("train-single", "--config", "{config}", "--runs", "{a_file}"), ("a-file",)),
    # --- the reuse rule and checkpoints
    ("single-other-settings", ("train-single", "--config", "{config}", "--runs", "{trained}", "--set",
                               "train.lr=0.05"), ("other settings", "train.lr 0.01 -> 0.05", "--force")),
    ("single-other-seed", ("train-single", "--config", "{config}", "--runs", "{trained}", "--set", "seed=3"),
     ("seed 0 -> 3",)),
    ("single-other-width", ("train-single", "--config", "{config}", "--runs", "{trained}", "--set",
                            "model.width=0.25"), ("model.width",)),
    ("resume-corrupt-checkpoint", ("train-single", "--config", "{config}", "--runs", "{ckpt_runs}", "--task", "seg",
                                   "--resume"), ("corrupt",)),
    ("resume-pickled-checkpoint", ("train-single", "--config", "{config}", "--runs", "{evil_ckpt_runs}", "--task",
                                   "seg", "--resume"), ("corrupt or not a torch checkpoint",)),
    # --- affinity
    ("affinity-no-input", ("affinity",), ("exactly one of",)),
    ("affinity-both-inputs", ("affinity", "--config", "{config}", "--features", "{feat_ok}"), ("exactly one of",)),
    ("affinity-no-models", ("affinity", "--config", "{config}", "--runs", "{fresh}"), ("no single-task model",)),
    ("affinity-stale-models", ("affinity", "--config", "{config}", "--runs", "{trained}", "--set", "train.lr=0.3"),
     ("other settings", "train.lr")),
    ("affinity-images-few", ("affinity", "--config", "{config}", "--runs", "{trained}", "--images", "2"),
     ("too few",)),
    ("affinity-bootstrap-one", ("affinity", "--config", "{config}", "--runs", "{trained}", "--bootstrap", "1"),
     ("--bootstrap",)),
    ("affinity-bootstrap-negative", ("affinity", "--config", "{config}", "--runs", "{trained}", "--bootstrap",
                                     "-2"), ("--bootstrap",)),
    ("affinity-pool", ("affinity", "--config", "{config}", "--runs", "{trained}", "--pool", "max:2"), ("pool",)),
    ("affinity-center", ("affinity", "--config", "{config}", "--runs", "{trained}", "--center", "mean"),
     ("center",)),
    ("affinity-device", ("affinity", "--config", "{config}", "--runs", "{trained}", "--device", "gpu0"),
     ("not a device",)),
    ("affinity-memory", ("affinity", "--config", "{config}", "--runs", "{trained}", "--max-memory", "lots"),
     ("--max-memory",)),
    ("affinity-out-dir", ("affinity", "--features", "{feat_ok}", "--out", "{out_dir}"), ("npz",)),
    ("affinity-measure", ("affinity", "--config", "{config}", "--measure", "cka"), ("unknown affinity measure",)),
    ("affinity-losses-rsa", ("affinity", "--losses", "{loss_ok}", "--out", "{world}/x.npz"), ("--measure fafs",)),
    ("affinity-locations-rsa", ("affinity", "--features", "{feat_ok}", "--out", "{world}/x.npz", "--locations",
                                "a,b"), ("--locations",)),
    ("affinity-set-features", ("affinity", "--features", "{feat_ok}", "--out", "{world}/x.npz", "--set",
                               "train.lr=1"), ("--set",)),
    ("features-missing", ("affinity", "--features", "{world}/nope.npz", "--out", "{world}/x.npz"),
     ("does not exist",)),
    ("features-not-npz", ("affinity", "--features", "{aff_text_npz}", "--out", "{world}/x.npz"), ("npz",)),
    ("features-no-out", ("affinity", "--features", "{feat_ok}"), ("--out",)),
    ("features-bad-key", ("affinity", "--features", "{feat_nokey}", "--out", "{world}/x.npz"), ("task/location",)),
    ("features-other-k", ("affinity", "--features", "{feat_mismatch}", "--out", "{world}/x.npz"), ("images",)),
    ("features-few-images", ("affinity", "--features", "{feat_few}", "--out", "{world}/x.npz"), ("4",)),
    ("fafs-no-losses", ("affinity", "--measure", "fafs"), ("--losses",)),
    ("fafs-no-out", ("affinity", "--measure", "fafs", "--losses", "{loss_ok}"), ("--out",)),
    ("fafs-losses-missing", ("affinity", "--measure", "fafs", "--losses", "{world}/nope.npz", "--out",
                             "{world}/x.npz"), ("does not exist",)),
    ("fafs-ragged", ("affinity", "--measure", "fafs", "--losses", "{loss_ragged}", "--out", "{world}/x.npz"),
     ("images",)),
    ("fafs-nan", ("affinity", "--measure", "fafs", "--losses", "{loss_nan}", "--out", "{world}/x.npz"),
     ("finite",)),
    ("fafs-locations-twice", ("affinity", "--measure", "fafs", "--losses", "{loss_ok}", "--out", "{world}/x.npz",
                              "--locations", "a,a"), ("twice",)),
    # --- build
    ("build-no-budget", ("build", "--affinity", "{aff_ok}"), ("--params",)),
    ("build-affinity-missing", ("build", "--affinity", "{world}/nope.npz", "--params", "1K"), ("does not exist",)),
    ("build-affinity-text", ("build", "--affinity", "{aff_text_npz}", "--params", "1K"), ("not a readable",)),
    ("build-affinity-pickle", ("build", "--affinity", "{aff_pickle}", "--params", "1K"), ("not a readable",)),
    ("build-affinity-nokey", ("build", "--affinity", "{aff_nokey}", "--params", "1K"), ("lacks",)),
    ("build-affinity-strings", ("build", "--affinity", "{aff_strings}", "--params", "1K"), ("numbers",)),
    ("build-affinity-complex", ("build", "--affinity", "{aff_complex}", "--params", "1K"), ("complex",)),
    ("build-affinity-d0", ("build", "--affinity", "{aff_d0}", "--params", "1K"), ("at least one location",)),
    ("build-affinity-n0", ("build", "--affinity", "{aff_n0}", "--params", "1K"), ("at least one location",)),
    ("build-affinity-asym", ("build", "--affinity", "{aff_asym}", "--params", "1K"), ("symmetric",)),
    ("build-affinity-diag", ("build", "--affinity", "{aff_diag}", "--params", "1K"), ("diagonal",)),
    ("build-affinity-range", ("build", "--affinity", "{aff_range}", "--params", "1K"), ("[-1, 1]",)),
    ("build-affinity-nan", ("build", "--affinity", "{aff_nan}", "--params", "1K"), ("nan",)),
    ("build-affinity-ntasks", ("build", "--affinity", "{aff_ntasks}", "--params", "1K"), ("'tasks'",)),
    ("build-affinity-dup", ("build", "--affinity", "{aff_dup}", "--params", "1K"), ("twice",)),
    ("build-affinity-no-costs", ("build", "--affinity", "{aff_nocost}", "--params", "1K"), ("stage_params",)),
    ("build-affinity-neg-costs", ("build", "--affinity", "{aff_negcost}", "--params", "1K"), ("non-negative",)),
    ("build-affinity-str-costs", ("build", "--affinity", "{aff_costs_str}", "--params", "1K"), ("real numbers",)),
    ("build-params-negative", ("build", "--affinity", "{aff_ok}", "--params", "-1"), ("positive",)),
    ("build-params-text", ("build", "--affinity", "{aff_ok}", "--params", "lots"), ("not a number",)),
    ("build-params-suffix", ("build", "--affinity", "{aff_ok}", "--params", "3X"), ("suffix",)),
    ("build-params-below", ("build", "--affinity", "{aff_ok}", "--params", "10"), ("all-shared",)),
    ("build-flops-none", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--flops", "1M"), ("flops",)),
    ("build-stage-params-count", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--stage-params", "1,2"),
     ("stage-params",)),
    ("build-stage-params-empty", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--stage-params", "1,,2,3"),
     ("empty entry",)),
    ("build-out-dir", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--out", "{out_dir}"), ("directory",)),
    ("build-random-zero", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--random", "0"), ("--random",)),
    ("build-cost-unknown", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--cost", "median"), ("cost",)),
    ("build-backbone-no-config", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--backbone", "resnet18"),
     ("--config",)),
    ("build-backbone-unknown", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--backbone", "resnet19",
                                "--config", "{config}"), ("unknown backbone",)),
    ("build-input-size", ("build", "--affinity", "{aff_ok}", "--params", "1K", "--input-size", "4", "4",
                          "--config", "{config}"), ("--input-size",)),
    ("build-window-empty", ("build", "--affinity", "{affinity}", "--params", "{shared_params}", "--random", "3"),
     ("window",)),
    # --- export
    ("export-missing", ("export", "{world}/nope.json", "--format", "dot"), ("does not exist",)),
    ("export-directory", ("export", "{tree_dir}", "--format", "dot"), ("directory",)),
    ("export-invalid-json", ("export", "{tree_invalid_json}", "--format", "dot"), ("invalid json",)),
    ("export-latin", ("export", "{tree_latin_json}", "--format", "dot"), ("utf-8",)),
    ("export-deep", ("export", "{tree_deep_json}", "--format", "dot"), ("nested",)),
    ("export-list", ("export", "{tree_list_json}", "--format", "dot"), ("json object",)),
    ("export-no-partitions", ("export", "{tree_nopart_json}", "--format", "dot"), ("partitions",)),
    ("export-unnested", ("export", "{tree_unnested_json}", "--format", "dot"), ("nest",)),
    ("export-task-twice", ("export", "{tree_twice_json}", "--format", "dot"), ("twice",)),
    ("export-nan", ("export", "{tree_nan_json}", "--format", "dot"), ("finite",)),
    ("export-format", ("export", "{tree}", "--format", "pdf"), ("unknown export format",)),
    ("export-out-dir", ("export", "{tree}", "--format", "dot", "--out", "{out_dir}"), ("directory",)),
    # --- train
    ("train-no-tree", ("train", "--config", "{config}", "--runs", "{trained}"), ("--tree",)),
    ("train-tree-word", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "sharde"),
     ("shared, separate",)),
    ("train-tree-other-tasks", ("train", "--config", "{config}", "--runs", "{trained}", "--tree",
                                "{tree_othertasks_json}"), ("edges",)),
    ("train-tree-levels", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "{tree_3levels_json}"),
     ("3 levels",)),
    ("train-tree-backbone", ("train", "--config", "{config}", "--runs", "{trained}", "--tree",
                             "{tree_otherbackbone_json}"), ("resnet50",)),
    ("train-tree-params", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "{tree_params_json}"),
     ("123",)),
    ("train-no-baselines", ("train", "--config", "{config}", "--runs", "{fresh}", "--tree", "shared"),
     ("no single-task model",)),
    ("train-stale-baselines", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared",
                               "--epochs", "3"), ("other settings", "train.epochs", "--baselines")),
    ("train-baselines-empty", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared",
                               "--baselines", "{fresh}"), ("no single-task model",)),
    ("train-name-slash", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared",
                          "--name", "a/b"), ("plain directory name",)),
    ("train-weighting", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared",
                         "--weighting", "magic"), ("weighting",)),
    ("train-init", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared", "--init", "zero"),
     ("branched.init",)),
    ("train-gradnorm-split", ("train", "--config", "{config}", "--runs", "{trained}", "--tree",
                              "{tree_split_first_json}", "--weighting", "gradnorm"), ("gradnorm",)),
    ("train-tree-invalid", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "{tree_invalid_json}"),
     ("invalid json",)),
    # --- run
    ("run-params-negative", ("run", "--config", "{config}", "--runs", "{fresh}", "--params", "-1"), ("positive",)),
    ("run-params-text", ("run", "--config", "{config}", "--runs", "{fresh}", "--params", "big"), ("not a number",)),
    ("run-params-below", ("run", "--config", "{config}", "--runs", "{fresh}", "--params", "1K"), ("all-shared",)),
    ("run-flops-text", ("run", "--config", "{config}", "--runs", "{fresh}", "--params", "1M", "--flops", "x"),
     ("--flops",)),
    ("run-config-missing", ("run", "--config", "{world}/nope.yaml"), ("does not exist",)),
    ("run-stale-singles", ("run", "--config", "{config}", "--runs", "{trained}", "--epochs", "2"),
     ("train.epochs 1 -> 2",)),
    ("run-runs-file", ("run", "--config", "{config}", "--runs", "{a_file}"), ("a-file",)),
    # --- select
    ("select-no-budget", ("select", "--candidates", "{cand_csv}"), ("--budget",)),
    ("select-missing", ("select", "--candidates", "{world}/nope.csv", "--budget", "2"), ("does not exist",)),
    ("select-ragged", ("select", "--candidates", "{cand_ragged_csv}", "--budget", "2"), ("cell",)),
    ("select-text-cell", ("select", "--candidates", "{cand_text_csv}", "--budget", "2"), ("fast",)),
    ("select-negative", ("select", "--candidates", "{cand_neg_csv}", "--budget", "2"), ("negative",)),
    ("select-no-cover", ("select", "--candidates", "{cand_nocover_csv}", "--budget", "2"), ("depth",)),
    ("select-budget-negative", ("select", "--candidates", "{cand_csv}", "--budget", "-1"), ("positive",)),
    ("select-budget-low", ("select", "--candidates", "{cand_csv}", "--budget", "0.5"), ("budget",)),
    ("select-sweep-format", ("select", "--candidates", "{cand_csv}", "--sweep", "1-3"), ("START:STOP:STEP",)),
    ("select-sweep-order", ("select", "--candidates", "{cand_csv}", "--sweep", "3:1:0.5"), ("below",)),
    ("select-sweep-many", ("select", "--candidates", "{cand_csv}", "--sweep", "1:3:0.0001"), ("budgets",)),
    ("select-max-loss-format", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--max-loss", "seg"),
     ("TASK=VALUE",)),
    ("select-max-loss-task", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--max-loss", "edges=1"),
     ("edges",)),
    ("select-max-loss-value", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--max-loss", "seg=x"),
     ("not a number",)),
    ("select-format", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--format", "excel"), ("format",)),
    ("select-standley-short", ("select", "--candidates", "{results_short_txt}", "--format", "standley",
                               "--budget", "2"), ("column",)),
    ("select-test-mismatch", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--test",
                              "{cand_test_other_csv}"), ("missing",)),
    ("select-out-dir", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--out", "{out_dir}"),
     ("directory",)),
    ("select-hoa-two-tasks", ("select", "--candidates", "{cand_csv}", "--budget", "2", "--predict-higher-order"),
     ("three",)),
    # --- groupings
    ("groupings-max-size", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--max-size", "0"),
     ("--max-size",)),
    ("groupings-fraction", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--fraction", "2"),
     ("--fraction",)),
    ("groupings-widths-range", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--widths", "1,1.5"),
     ("(0, 1]",)),
    ("groupings-widths-no-one", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--widths", "0.5"),
     ("must include 1",)),
    ("groupings-widths-text", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--widths", "1,half"),
     ("not a number",)),
    ("groupings-widths-for", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--widths-for", "some"),
     ("--widths-for",)),
    ("groupings-hoa-two", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--predict-higher-order"),
     ("3 or more tasks",)),
    ("groupings-task", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--task", "edges"), ("edges",)),
    ("groupings-add-tree-missing", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--add-tree",
                                    "{world}/nope.json"), ("does not exist",)),
    ("groupings-add-tree-not-json", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--add-tree",
                                     "{tree_invalid_json}"), ("not valid json",)),
    ("groupings-hrnet-width", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--backbone",
                               "hrnet_w18_small", "--widths", "1,0.5"), ("resnet backbones only",)),
    # --- evaluate, search: --jobs, --per-device (checked before anything is read or written)
    *[(f"{command}-jobs-{name}", (command, "--config", "{config}", "--runs", "{trained}", *extra), fragments)
      for command in ("evaluate", "search")
      for name, extra, fragments in (
          ("zero", ("--jobs", "0"), ("--jobs 0", "--jobs 1 or more", "auto")),
          ("negative", ("--jobs", "-2"), ("--jobs -2", "--jobs 1 or more")),
          ("text", ("--jobs", "many"), ("--jobs 'many'", "not a number", "--jobs auto")),
          ("per-device-cpu", ("--jobs", "2", "--per-device", "2"), ("--per-device 2", "cpu", "leave --per-device out")),
          ("per-device-zero", ("--per-device", "0"), ("--per-device 0", "one or more")),
      )],
    # --- predict
    ("predict-missing", ("predict", "--model", "{world}/nope.pt"), ("does not exist",)),
    ("predict-not-model", ("predict", "--model", "{not_a_model_pt}"), ("corrupt or not a torch checkpoint",)),
    ("predict-pickle", ("predict", "--model", "{model_evil}"), ("corrupt or not a torch checkpoint",)),
    ("predict-incomplete", ("predict", "--model", "{model_incomplete}"), ("incomplete",)),
    ("predict-split", ("predict", "--model", "{model_seg}", "--split", "holdout"), ("split",)),
    ("predict-images", ("predict", "--model", "{model_seg}", "--images", "0"), ("--images",)),
    ("predict-out-dir", ("predict", "--model", "{model_seg}", "--out", "{out_dir}"), ("directory",)),
    # --- issue 25: every command that takes --device checks it up front (branchnet.devices.check_device)
    ("predict-device-cuda", ("predict", "--model", "{model_seg}", "--device", "cuda:99"), ("--device 'cuda:99'",)),
    ("profile-device-cuda", ("profile", "{model_seg}", "--device", "cuda:99"), ("--device 'cuda:99'",)),
    ("evaluate-device-tpu", (*E, "--runs", "{trained}", "--device", "tpu"), ("--device 'tpu'", "cpu")),
    ("evaluate-device-cuda", (*E, "--runs", "{trained}", "--device", "cuda:99"), ("--device 'cuda:99'",)),
    ("evaluate-set-device", (*E, "--runs", "{trained}", "--set", "train.device=tpu"), ("train.device 'tpu'",)),
    ("search-device-tpu", ("search", "--config", "{config}", "--runs", "{trained}", "--device", "tpu"),
     ("--device 'tpu'",)),
    ("groupings-device-tpu", ("groupings", "--config", "{config}", "--runs", "{fresh}", "--device", "tpu"),
     ("--device 'tpu'",)),
    ("run-device-tpu", ("run", "--config", "{config}", "--runs", "{trained}", "--device", "tpu"), ("--device 'tpu'",)),
    ("train-device-tpu", ("train", "--config", "{config}", "--runs", "{trained}", "--tree", "shared", "--device",
                          "tpu"), ("--device 'tpu'",)),
    ("tag-device-tpu", ("affinity", "--measure", "tag", "--config", "{config}", "--runs", "{trained}", "--device",
                        "tpu"), ("--device 'tpu'",)),
    ("single-device-cuda-index", (*T, "--device", "cuda:99"), ("--device 'cuda:99'",)),
    # --- issue 25: integers in the ranges torch and numpy take (branchnet.units.check_int)
    ("seed-huge", (*T, "--set", "seed=99999999999999999999"), ("'seed'", "2**32 - 1")),
    ("seed-huge-yaml", ("train-single", "--config", "{cfg_seed_huge}", "--runs", "{fresh}"), ("'seed'", "out of range")),
    ("seed-negative", (*T, "--set", "seed=-1"), ("'seed'", "from 0")),
    ("epochs-huge", (*T, "--epochs", "99999999999999999999"), ("train.epochs", "100,000")),
    ("epochs-huge-float", (*T, "--set", "train.epochs=1.0e+30"), ("train.epochs", "out of range")),
    ("batch-size-huge", (*T, "--set", "train.batch_size=99999999999999999999"), ("train.batch_size", "2**63 - 1")),
    ("evaluate-seeds-huge", (*E, "--runs", "{trained}", "--seeds", "99999999999999999999"), ("--seeds", "out of range")),
    ("evaluate-random-huge", (*E, "--runs", "{trained}", "--random", "99999999999999999999"), ("--random",)),
    ("evaluate-sweep-huge", (*E, "--runs", "{trained}", "--sweep", "99999999999999999999"), ("--sweep",)),
    ("search-seeds-huge", ("search", "--config", "{config}", "--runs", "{trained}", "--seeds", "99999999999999999999"),
     ("--seeds", "out of range")),
    ("search-networks-huge", ("search", "--config", "{config}", "--runs", "{trained}", "--networks",
                              "99999999999999999999"), ("--networks",)),
    # --- issue 25: every check before the first write; a network another process trains is locked
    ("evaluate-resume-corrupt", (*E, "--runs", "{corrupt_ckpt_runs}", "--resume"), ("corrupt", "checkpoint.pt")),
    ("search-resume-corrupt", ("search", "--config", "{config}", "--runs", "{corrupt_ckpt_runs}", "--resume"),
     ("corrupt", "checkpoint.pt")),
    ("evaluate-locked", (*E, "--runs", "{locked_runs}"), ("being trained by process", "evaluate/nets/shared/seed0")),
    ("evaluate-force-locked", (*E, "--runs", "{locked_runs}", "--force"), ("being trained by process",)),
    ("search-locked", ("search", "--config", "{config}", "--runs", "{locked_runs}"), ("being trained by process",)),
    ("run-roaming-unshared-tree", ("run", "--config", "{config}", "--runs", "{trained}", "--params",
                                   "{separate_params}", "--set", "train.roaming={{p: 0.8}}"),
     ("train.roaming", "branched/tree-")),
    ("run-gradnorm-split-tree", ("run", "--config", "{config}", "--runs", "{trained}", "--params",
                                 "{separate_params}", "--set", "train.weighting=gradnorm"), ("gradnorm",)),
    # --- issue 25: sizes that cannot fit in memory, estimated before anything is allocated
    ("export-input-size-huge", ("export-model", "{model_seg}", "--format", "torchscript", "--input-size", "100000",
                                "100000", "--out", "{world}/x.pt"), ("needs about", "free", "--input-size")),
    ("profile-batch-huge", ("profile", "{model_seg}", "--batch", "100000000", "--no-write"), ("needs about", "--batch")),
    ("profile-input-size-huge", ("profile", "{model_seg}", "--input-size", "100000", "100000", "--no-write"),
     ("needs about", "--input-size")),
    ("head-channels-huge", (*T, "--set", "model.head_channels=100000000000"), ("model.head_channels", "needs about")),
    # --- issue 25: a task type that does not match its dataset's targets, refused before training
    ("task-type-mismatch", (*T, "--set", "tasks=[{{name: seg, type: depth}}]"), ("task 'seg'", "type depth", "int64")),
    # --- issue 25: accepted silently, though meaningless
    ("build-latency-batch-zero", ("build", "--affinity", "{affinity}", "--params", "{separate_params}", "--latency",
                                  "12ms", "--batch", "0", "--config", "{config}"), ("--batch 0", "at least 1")),
    ("fafs-two-images", ("affinity", "--measure", "fafs", "--losses", "{loss_two}", "--out", "{world}/x.npz"),
     ("2 image(s)", "at least 3")),
    ("tag-locked", ("affinity", "--measure", "tag", "--config", "{config}", "--runs", "{locked_runs}"),
     ("being trained by process", "tag network")),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (directories too)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            # a directory's own mtime moves when a lock file comes and goes: only its existence counts
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else (-1, 0)
    return out


def test_the_catalogue_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 150 and len(set(ids)) == len(ids)
    commands = {case[1][0] for case in CASES}
    assert {"train-single", "affinity", "build", "export", "train", "run", "select", "groupings",
            "predict"} <= commands


@pytest.mark.parametrize("case_id, args, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input(cli, world, tmp_path, monkeypatch, case_id, args, fragments):
    monkeypatch.chdir(tmp_path)  # a default runs/<name> or an --out would land here
    root = Path(world["world"])
    before = snapshot(root)
    result = cli(*[a.format(**world) for a in args])
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, (result.code, result.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("branchnet: error: "), result.err[-2000:]
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    assert snapshot(root) == before, "a failing command changed the world"
    assert list(tmp_path.iterdir()) == [], "a failing command left files in the working directory"
    assert not (root / "pwned").exists()


# --- issue 25: faults a single call of the catalogue cannot show


def _default_signals() -> None:
    # A test runner started without job control (or under nohup) may pass SIGINT/SIGHUP on ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_say_terminated_and_release_the_lock(tiny_config, tmp_path, signum):
    config = tiny_config(tasks=("depth",), **{"epochs: 2": "epochs: 50"})
    lock = tmp_path / "runs" / "single" / "depth" / "train.lock"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "BRANCHNET_QUIET": "1"}
    process = subprocess.Popen([sys.executable, "-m", "branchnet", "train-single", "--config", str(config), "--runs",
                                str(tmp_path / "runs")], env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while not lock.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the lock never appeared"
            time.sleep(0.05)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, (process.returncode, err)
    assert err.strip().splitlines()[-1] == "branchnet: terminated", err
    assert "Traceback" not in err
    assert not lock.exists()


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch's, on a full disk
], ids=["oserror", "torch-runtimeerror"])
def test_a_full_disk_during_evaluate_is_one_line_naming_the_checkpoint(cli, world, tmp_path, monkeypatch, failure):
    runs = tmp_path / "runs"
    shutil.copytree(Path(world["trained"]) / "single", runs / "single")
    shutil.copy(world["affinity"], runs / "affinity.npz")
    save = torch.save

    def full(obj, f, *args, **kwargs):
        if "checkpoint" in Path(f).name:
            raise failure
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    result = cli(*[a.format(**world) for a in E], "--runs", runs, "-q")
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1, result.err[-3000:]
    assert lines[0].startswith("branchnet: error: could not write checkpoint.pt into ") and "space" in lines[0]
    assert "Traceback" not in result.err
    network = [p for p in (runs / "evaluate" / "nets").rglob("*") if p.is_file()]
    assert not [p for p in network if p.name.startswith(".") or p.name in ("checkpoint.pt", "model.pt", "run.json",
                                                                            "train.lock")], network


def test_a_valid_torchscript_export_is_silent_under_quiet(cli, world, tmp_path):
    with warnings.catch_warnings(record=True) as caught:  # what would reach stderr outside pytest
        warnings.simplefilter("always")
        result = cli("export-model", world["model_seg"], "--format", "torchscript", "--out", tmp_path / "m.pt", "-q")
    assert result.code == 0, result.err
    assert result.err == "" and result.out == ""
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "m.pt").is_file()


def test_tag_measured_on_too_few_steps_warns_and_says_so_in_the_file(cli, tiny_config, tmp_path):
    config = tiny_config(["seg", "depth"], **{"epochs: 2": "epochs: 1"})  # 3 steps: one measured at tag_every 100
    done = cli("affinity", "--config", config, "--runs", tmp_path / "runs", "--measure", "tag", "--set",
               "affinity.tag_every=100", "-q")
    assert done.code == 0, done.err
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("branchnet: warning: affinity (tag): measured on 1 training step"), \
        done.err
    assert "affinity.tag_every 100" in lines[0]
    record = json.loads((tmp_path / "runs" / "affinity-tag.json").read_text())
    assert record["settings"]["measured_steps"] == 1 and "measured on 1 training step" in record["settings"]["warning"]
