"""The run store: where every artifact of a run directory lives, and whether it may be reused.

A run directory (``runs/<config name>`` by default) holds (docs/design.md, "The pipeline")::

    single/<task>/          one single-task network per task
    affinity.npz            task affinity (+ affinity.json, heatmaps)
    tree.json               the tree of the budget (+ tree.png, tree.mmd, sweep.png)
    branched/<name>/        branched networks (tree, shared, separate, or --name)
    groupings/<group>/      candidate networks of ``branchnet groupings`` (+ candidates.csv/json)
    evaluate/               ``branchnet evaluate``'s study: nets/<tree id>/seed<s>/ (network
                            directories), settings.json, trees.csv, summary.json|md, pareto.png
    search/                 ``branchnet search``'s loop: nets/<tree id>/seed<s>/ at the search
                            seeds (100 and up), settings.json, proposals.json, trees.csv,
                            model.json, tree-<budget>.json, predicted.png, summary.md
    tag/                    the all-shared network of ``branchnet affinity --measure tag``
    latency/                ``build --latency``'s measured stage/head latencies, per device, batch, size
    report.md|json|png      ``branchnet run``'s report

Every *network directory* holds ``model.pt``, ``metrics.json``, ``history.csv``,
``curves.png`` and, once finished, ``run.json``: the record that commits the network. It
stores the network's *fingerprint* (every setting that changes what is trained) and the
size and SHA-256 of ``model.pt`` and ``metrics.json``. A network counts as trained only
when its record is readable and the files still match it, so a truncated ``model.pt`` or a
save that died half-way is never reused. While a network trains, ``checkpoint.pt`` holds its
last finished epoch (and the same fingerprint, so ``--resume`` refuses other settings).

The reuse rule (docs/design.md, "Reuse rule"): a finished network is reused only when its
fingerprint equals the one asked for now. Otherwise the step stops with exit code 2 naming
the first setting that differs, or retrains it with ``--force``. Δ_MTL is computed only
against single-task baselines whose training settings equal the branched network's (or,
when the user names them with ``--baselines``, against those, recorded as such).

Everything that decides a path, a fingerprint or reuse lives here; steps only ask. The save
epilogue that commits a trained network (``model.pt``, ``metrics.json``, then ``run.json``) is
:func:`branchnet.steps.commit.commit_network`, a floor above the store, the networks and the loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from branchnet.atomic import atomic_write_json, ensure_writable_dir, json_safe
from branchnet.schema import Config
from branchnet.errors import BadInput
from branchnet.moved import moved_attribute

RECORD_FORMAT = "branchnet.run/1"

SINGLE_DIR = "single"
BRANCHED_DIR = "branched"
GROUPINGS_DIR = "groupings"
EVALUATE_DIR = "evaluate"
SEARCH_DIR = "search"
TAG_DIR = "tag"

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
RECORD_FILE = "run.json"
LOCK_FILE = "train.lock"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"

AFFINITY_FILE = "affinity.npz"
TREE_FILE = "tree.json"

#: The format of a kept epoch's weights (``train.keep_checkpoints``: ``epoch<E>.pt``).
EPOCH_FORMAT = "branchnet.epoch/1"

#: Files of ``branchnet evaluate`` under ``<runs>/evaluate`` (docs/evaluate.md).
STUDY_NETS_DIR = "nets"
STUDY_SETTINGS_FILE = "settings.json"
STUDY_SETTINGS_FORMAT = "branchnet.evaluate/1"
TREES_FILE = "trees.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
PARETO_FILE = "pareto.png"

#: ``branchnet search`` (docs/design.md, "Learned sharing cost").
SEARCH_SETTINGS_FORMAT = "branchnet.search/1"
PROPOSALS_FILE = "proposals.json"
PREDICTED_FILE = "predicted.png"
#: The search trains its networks with evaluation seeds from here on, far from the seeds
#: 0..S-1 that ``evaluate`` judges on ("no peeking").
SEARCH_SEED_OFFSET = 100

#: Config values that do not change what is trained: where the data is read from and how
#: fast (``data.root``, ``data.workers``, ``data.loader``, the scenes generator's
#: ``data.options.workers``), where and how fast it runs (``train.device``, ``train.compile``), how
#: often the validation split is scored (``train.eval_every``), which checkpoints are kept,
#: and the affinity split's size (it is never trained on). Every other value of ``seed``, ``data``, ``model`` and ``train`` is
#: part of the fingerprint.
NOT_TRAINING_SETTINGS: dict[str, tuple[str, ...]] = {
    "data": ("root", "workers", "loader"),
    "data.options": ("workers",),  # the scenes generator's processes: the images are the same
    "train": ("device", "eval_every", "compile", "keep_checkpoints", "loader"),
}

#: Settings that only make sense with several tasks: a single-task network trains its one
#: loss unweighted, so they are not part of its fingerprint, and a baseline trained under
#: one weighting serves networks trained under any (docs/design.md, "Reuse rule").
MULTI_TASK_SETTINGS: dict[str, tuple[str, ...]] = {"train": ("weighting", "loss_weights", "roaming")}


# ---------------------------------------------------------------------------------
# Paths


def single_dir(runs: str | os.PathLike, task: str) -> Path:
    """``<runs>/single/<task>``: the single-task network of ``task``."""
    return Path(runs) / SINGLE_DIR / task


def branched_dir(runs: str | os.PathLike, name: str) -> Path:
    """``<runs>/branched/<name>``: a branched network."""
    return Path(runs) / BRANCHED_DIR / name


def groupings_dir(runs: str | os.PathLike) -> Path:
    """``<runs>/groupings``: candidate networks and the candidates tables."""
    return Path(runs) / GROUPINGS_DIR


def candidate_dir(runs: str | os.PathLike, name: str) -> Path:
    """``<runs>/groupings/<name>``: one candidate network (``seg+depth``, ``seg@0.5``)."""
    return groupings_dir(runs) / name


def evaluate_dir(runs: str | os.PathLike) -> Path:
    """``<runs>/evaluate``: the study of ``branchnet evaluate``."""
    return Path(runs) / EVALUATE_DIR


def tag_dir(runs: str | os.PathLike) -> Path:
    """``<runs>/tag``: the all-shared network trained while TAG's lookahead affinity was measured."""
    return Path(runs) / TAG_DIR


def affinity_path(runs: str | os.PathLike, measure: str = "rsa", epoch: int | None = None) -> Path:
    """``<runs>/affinity.npz`` (RSA, the paper's measure) or ``<runs>/affinity-<measure>.npz``;
    measured from the single-task models of epoch E (``affinity --epoch E``):
    ``affinity-epoch<E>.npz`` / ``affinity-<measure>-epoch<E>.npz``."""
    stem = "affinity" if measure == "rsa" else f"affinity-{measure}"
    if epoch is not None:
        stem += f"-epoch{int(epoch)}"
    return Path(runs) / f"{stem}.npz"


def epoch_checkpoint(directory: str | os.PathLike, epoch: int) -> Path:
    """``<network dir>/epoch<E>.pt``: the weights after epoch E (1-based), kept with
    ``train.keep_checkpoints``."""
    return Path(directory) / f"epoch{int(epoch)}.pt"


def study_network_dir(runs: str | os.PathLike, tree_id: str, seed: int) -> Path:
    """``<runs>/evaluate/nets/<tree id>/seed<s>``: one network of ``branchnet evaluate``."""
    return evaluate_dir(runs) / STUDY_NETS_DIR / tree_id / f"seed{int(seed)}"


def search_dir(runs: str | os.PathLike) -> Path:
    """``<runs>/search``: the loop of ``branchnet search``."""
    return Path(runs) / SEARCH_DIR


def search_network_dir(runs: str | os.PathLike, tree_id: str, seed: int) -> Path:
    """``<runs>/search/nets/<tree id>/seed<s>``: one network of ``branchnet search``."""
    return search_dir(runs) / STUDY_NETS_DIR / tree_id / f"seed{int(seed)}"


def search_tree_path(runs: str | os.PathLike, budget: int) -> Path:
    """``<runs>/search/tree-<budget>.json``: the search's recommended tree of a params budget."""
    return search_dir(runs) / f"tree-{int(budget)}.json"


def tree_path(runs: str | os.PathLike) -> Path:
    return Path(runs) / TREE_FILE


#: Suffixes of ``branchnet export-model``'s artefacts, beside their ``model.pt``.
ARTEFACT_SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "exported-program": ".pt2"}
LATENCY_DIR = "latency"


def artefact_path(model_path: str | os.PathLike, fmt: str) -> Path:
    """Where ``export-model`` writes a ``fmt`` artefact of ``model_path`` by default:
    ``model.torchscript.pt``, ``model.onnx`` or ``model.pt2`` beside it."""
    path = Path(model_path)
    return path.with_name(path.stem + ARTEFACT_SUFFIXES[fmt])


def profile_path(source: str | os.PathLike, device_type: str) -> Path:
    """Where ``branchnet profile`` writes its figures for ``source`` (a model.pt or tree.json):
    ``<stem>.profile-<cpu|cuda>.json`` (and ``.png``) beside it."""
    path = Path(source)
    return path.with_name(f"{path.stem}.profile-{device_type}.json")


def latency_cache_path(runs: str | os.PathLike, device_name: str, batch: int, input_size: Sequence[int]) -> Path:
    """``<runs>/latency/<device>-b<batch>-<H>x<W>.json``: the per-stage and per-head latencies
    ``build --latency`` measured on one device (its name made file-safe), batch size and input size."""
    import re

    slug = re.sub(r"[^A-Za-z0-9.]+", "-", device_name).strip("-").lower() or "device"
    return Path(runs) / LATENCY_DIR / f"{slug}-b{int(batch)}-{int(input_size[0])}x{int(input_size[1])}.json"


# ---------------------------------------------------------------------------------
# Fingerprints


def training_settings(config: Config, multi_task: bool = True) -> dict[str, Any]:
    """The config values a network of the experiment is trained with (see module docstring).

    ``{"seed", "data", "model", "train"}`` without :data:`NOT_TRAINING_SETTINGS` (and, for a
    single-task network, without :data:`MULTI_TASK_SETTINGS`); the task entries are added
    per network by :func:`fingerprint`.
    """
    d = config.to_dict()
    out: dict[str, Any] = {"seed": d["seed"]}
    for section in ("data", "model", "train"):
        skip = NOT_TRAINING_SETTINGS.get(section, ()) + (() if multi_task else MULTI_TASK_SETTINGS.get(section, ()))
        out[section] = {k: v for k, v in d[section].items() if k not in skip}
    out["data"]["options"] = {k: v for k, v in (out["data"].get("options") or {}).items()
                              if k not in NOT_TRAINING_SETTINGS["data.options"]}
    splits = dict(out["data"].get("splits") or {})
    splits.pop("affinity", None)
    out["data"]["splits"] = splits
    return out


def task_entries(config: Config, tasks: Sequence[str]) -> list[dict[str, Any]]:
    """The config's entries (name, type, options) of ``tasks``, in that order."""
    entries = {e["name"]: e for e in config.to_dict()["tasks"]}
    return [entries[t] for t in tasks]


def fingerprint(kind: str, config: Config, tasks: Sequence[str], **extra: Any) -> dict[str, Any]:
    """What decides a network's training: its kind, the training settings, its tasks' entries,
    and ``extra`` (the tree, the init and the weights it starts from, a width, a schedule ...).

    Plain JSON data; two networks are interchangeable exactly when their fingerprints are equal.
    """
    settings = training_settings(config, multi_task=kind != "single")
    return json_safe({"kind": kind, "settings": settings, "tasks": task_entries(config, tasks), **extra})


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The first setting where ``old`` and ``new`` differ, as ``"train.lr 0.002 -> 0.01"``, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = first_difference(a, b, f"{prefix.rstrip('.')}[{i}].")
            if found:
                return found
        return None
    if old == new:
        return None
    name = prefix.rstrip(".") or "settings"
    name = name.removeprefix("settings.")
    return f"{name} {_short(old)} -> {_short(new)}"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def evaluation_config(config: Config, seed: int) -> Config:
    """The config a study network of evaluation seed ``s`` trains with (docs/evaluate.md,
    "Seeds"): the run's config with ``seed = config.seed + s``, so seed 0 is the run's own
    seed (the single-task models' init and data order, the fair protocol) and every other
    seed changes the branched network's init and data order."""
    import dataclasses

    if int(seed) < 0:
        raise BadInput(f"evaluation seed {seed} must be 0 or more")
    return config if int(seed) == 0 else dataclasses.replace(config, seed=config.seed + int(seed))


def evaluation_fingerprint(network_fp: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The fingerprint of a study network: its network fingerprint under the *run's* settings
    (``network_fp``, with the run's ``seed``) plus ``evaluation_seed``.

    The evaluation seed is recorded here and nowhere else: the settings compared against the
    single-task baselines (:func:`find_baselines` with the run's config) exclude it, so the
    baselines trained with the run's seed serve the study networks of every evaluation seed.
    """
    return json_safe({**dict(network_fp), "evaluation_seed": int(seed)})


def study_settings(config: Config) -> dict[str, Any]:
    """What an evaluate directory is made with (``<runs>/evaluate/settings.json``): the
    training settings and task entries every study network shares (a rerun that differs
    refuses, naming the difference). Budgets, seeds, random trees and measures may grow."""
    return json_safe({"format": STUDY_SETTINGS_FORMAT, "settings": training_settings(config),
                      "tasks": task_entries(config, config.task_names), "init": config.branched.init})


# ---------------------------------------------------------------------------------
# JSON


def read_json(path: str | os.PathLike) -> Any:
    """Parsed JSON of ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


# ---------------------------------------------------------------------------------
# Records: is a network finished, and for which settings?


def _file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


@dataclass(frozen=True)
class Record:
    """A finished network's ``run.json``: its fingerprint and the digests of its files."""

    directory: Path
    fingerprint: dict[str, Any]
    files: dict[str, dict[str, Any]]

    @property
    def model_sha256(self) -> str:
        return self.files[MODEL_FILE]["sha256"]


def write_record(directory: Path, fp: Mapping[str, Any], files: Sequence[str] = (MODEL_FILE, METRICS_FILE),
                 digests: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Commit a network: write ``run.json`` with ``fp`` and the digests of ``files`` (last of all).
    ``digests`` holds those taken as the files were written (``{"bytes", "sha256"}``, see
    :class:`branchnet.atomic.HashingWriter`); the others are read back and hashed."""
    directory = Path(directory)
    digests = digests or {}
    return atomic_write_json(directory / RECORD_FILE, {
        "format": RECORD_FORMAT, "fingerprint": json_safe(dict(fp)),
        "files": {name: dict(digests[name]) if name in digests else _file_digest(directory / name)
                  for name in files},
    })


def read_record(directory: str | os.PathLike) -> tuple[Record | None, str]:
    """The record of a finished network, or ``(None, why not)``.

    The reason is ``"missing"`` when the directory holds no finished network, or says
    what is damaged (a file changed or truncated since it was committed).
    """
    directory = Path(directory)
    raw = read_json(directory / RECORD_FILE)
    if raw is None:
        if (directory / RECORD_FILE).exists():
            return None, f"its record {RECORD_FILE} is not readable JSON"
        if (directory / MODEL_FILE).exists():
            return None, (f"{MODEL_FILE} has no record {RECORD_FILE} (written by an older branchnet, "
                          "or its save was interrupted)")
        return None, "missing"
    if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT \
            or not isinstance(raw.get("fingerprint"), dict) or not isinstance(raw.get("files"), dict):
        return None, f"its record {RECORD_FILE} is not a branchnet run record"
    for name, expected in raw["files"].items():
        path = directory / name
        if not path.is_file():
            return None, f"{name} is missing"
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes") \
                or _file_digest(path)["sha256"] != expected.get("sha256"):
            return None, f"{name} changed since it was written (truncated or replaced)"
    return Record(directory, raw["fingerprint"], raw["files"]), ""


def is_finished(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a committed, undamaged network."""
    return read_record(directory)[0] is not None


# ---------------------------------------------------------------------------------
# The reuse rule


@dataclass(frozen=True)
class Plan:
    """What a step does with one network: ``action`` is ``"reuse"``, ``"train"`` or ``"resume"``;
    ``note`` says why, for the status line (empty when there is nothing to say)."""

    directory: Path
    action: str
    fingerprint: dict[str, Any]
    note: str = ""


def plan_network(directory: str | os.PathLike, fp: Mapping[str, Any], label: str, *, force: bool = False,
                 resume: bool = False, hint: str = "pass --force to retrain it, or use another --runs") -> Plan:
    """Apply the reuse rule to the network ``label`` in ``directory`` for fingerprint ``fp``.

    * finished with the same fingerprint: ``reuse`` (``force``: ``train``);
    * finished with another fingerprint: :class:`BadInput` naming the first difference
      (``force``: ``train``);
    * not finished (nothing there, an older or damaged network): ``resume`` when asked and a
      checkpoint exists, else ``train`` (a damaged network is never reused).
    """
    directory = Path(directory)
    fp = json_safe(dict(fp))
    checkpoint = (directory / CHECKPOINT_FILE).is_file()
    record, why = read_record(directory)
    if record is not None and not force:
        difference = first_difference(record.fingerprint, fp)
        if difference is None:
            return Plan(directory, "reuse", fp, f"{label}: already trained with these settings, kept")
        raise BadInput(f"{label} in {directory} was trained with other settings ({difference}); {hint}")
    if resume and checkpoint:
        return Plan(directory, "resume", fp)
    note = ""
    if record is None and why != "missing":
        note = f"{label}: not reusable ({why}); training it again"
    return Plan(directory, "train", fp, note)


@contextlib.contextmanager
def claim_network(plan: Plan, label: str, *, force: bool = False, resume: bool = False) -> Iterator[Plan]:
    """Hold ``plan``'s network while it trains: one process at a time per network directory.

    Rank 0 creates ``train.lock`` (its PID, host and command) exclusively; a lock held by a
    running process is a :class:`BadInput` naming it, a lock whose process no longer runs
    (on this host) is taken over. Under the lock the reuse rule is applied again, so a
    network another process finished meanwhile is reused (same settings) or refused (other
    settings), never silently overwritten. Yields the plan to follow (every rank gets rank
    0's). On leaving, the lock goes, and a network directory left empty (a failure before
    the first checkpoint) is removed.
    """
    from branchnet import distributed  # torch: imported by the steps that train, not by the store

    directory = plan.directory
    lock = directory / LOCK_FILE
    held = False
    outcome: Plan | str = plan
    made: list[Path] = []
    if distributed.is_main():  # rank 0 decides; a refusal reaches every rank, so none waits forever
        try:
            made = [d for d in (directory, *directory.parents) if not d.exists()]
            ensure_writable_dir(directory)
            _take_lock(lock, label)
            held = True
            if plan.action != "reuse":
                outcome = plan_network(directory, plan.fingerprint, label, force=force, resume=resume)
        except BadInput as exc:
            outcome = str(exc)
    outcome = distributed.broadcast_object(outcome)
    try:
        if isinstance(outcome, str):
            raise BadInput(outcome)
        yield outcome
    finally:
        if held:
            with contextlib.suppress(OSError):
                lock.unlink()
        for made_dir in made:  # the directories this claim created, deepest first, if still empty
            with contextlib.suppress(OSError):
                made_dir.rmdir()


def _take_lock(lock: Path, label: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = lock_holder(lock)
            if holder is None:
                with contextlib.suppress(OSError):
                    lock.unlink()  # a stale lock: its process is gone
                continue
            raise BadInput(_locked_message(lock, label, holder)) from None
        except OSError as exc:
            from branchnet.atomic import write_error

            raise write_error(lock, exc) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return
    raise BadInput(f"could not take the lock {lock}; another process keeps taking it, try again")


def lock_holder(lock: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the network lock ``lock`` (its JSON: pid, host, started, command), or None when
    there is no lock or it is stale (its process, on this host, no longer runs)."""
    lock = Path(lock)
    if not lock.exists():
        return None
    holder = read_json(lock)
    holder = holder if isinstance(holder, dict) else {}
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _process_alive(pid):
        return None
    return holder


def _locked_message(lock: Path, label: str, holder: Mapping[str, Any]) -> str:
    host = holder.get("host")
    where = f" on host {host}" if host and host != socket.gethostname() else ""
    return (f"{label} in {lock.parent} is being trained by process {holder.get('pid')}{where} (since "
            f"{holder.get('started', '?')}); wait for it to finish or stop it (if that process is gone, "
            f"delete {lock})")


def check_unlocked(root: str | os.PathLike, what: str) -> None:
    """:class:`BadInput` naming the holder when a network anywhere under ``root`` is locked by a
    running process (``what`` names ``root`` in the message, e.g. ``evaluate``): a command that
    trains many networks (``evaluate``, ``search``) checks this before its first write, so a
    second one started on the same run refuses at once instead of training the same networks
    again. Each network is still claimed (:func:`claim_network`) when it is trained."""
    root = Path(root)
    if not root.is_dir():
        return
    for lock in sorted(root.rglob(LOCK_FILE)):
        holder = lock_holder(lock)
        if holder is not None:
            label = f"{what}/{lock.parent.relative_to(root).as_posix()}"
            raise BadInput(_locked_message(lock, label, holder))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checkpoint_mismatch(saved: Mapping[str, Any] | None, fp: Mapping[str, Any]) -> str | None:
    """Why a checkpoint made with fingerprint ``saved`` cannot be resumed for ``fp`` (or None)."""
    if saved is None:
        return "it records no settings"
    return first_difference(dict(saved), json_safe(dict(fp)))


def read_epoch_weights(directory: str | os.PathLike, epoch: int, label: str) -> dict[str, Any]:
    """The state dict of a finished network after epoch ``epoch`` (its ``epoch<E>.pt``).

    The kept file must carry the fingerprint of the network's record (a file left over from
    a training with other settings is refused). :class:`BadInput` when the network is not
    finished, the epoch was not kept (``train.keep_checkpoints``) or is out of range.
    """
    from branchnet.atomic import load_checkpoint

    directory = Path(directory)
    record, why = read_record(directory)
    if record is None:
        state = "does not exist" if why == "missing" else f"is not usable ({why})"
        raise BadInput(f"{label} in {directory} {state}; train it first (`branchnet train-single`)")
    path = epoch_checkpoint(directory, epoch)
    keep = ("retrain the single-task models with train.keep_checkpoints: true "
            "(`branchnet train-single --set train.keep_checkpoints=true --force`)")
    if not path.is_file():
        epochs = read_json(directory / METRICS_FILE) or {}
        total = epochs.get("epochs") if isinstance(epochs, dict) else None
        if isinstance(total, int) and not 1 <= int(epoch) <= total:
            raise BadInput(f"--epoch {epoch}: {label} trained {total} epochs; give 1..{total}")
        raise BadInput(f"{label} kept no weights of epoch {epoch} ({path.name} is missing); {keep}")
    state = load_checkpoint(path)
    if state.get("format") != EPOCH_FORMAT or not isinstance(state.get("model"), dict):
        raise BadInput(f"{path} is not a kept epoch of branchnet; {keep}")
    difference = first_difference(state.get("fingerprint") or {}, record.fingerprint)
    if difference is not None:
        raise BadInput(f"{path} was kept from a training with other settings than {label} ({difference}); {keep}")
    return state["model"]


# ---------------------------------------------------------------------------------
# metrics.json


def read_metrics(directory: str | os.PathLike, label: str, how_to_make: str) -> dict[str, Any]:
    """The ``metrics.json`` of a finished network; :class:`BadInput` (saying ``how_to_make`` it)
    when the network is not finished or damaged."""
    directory = Path(directory)
    record, why = read_record(directory)
    if record is None:
        state = "does not exist" if why == "missing" else f"is not usable ({why})"
        raise BadInput(f"{label} in {directory} {state}; {how_to_make}")
    metrics = read_json(directory / METRICS_FILE)
    if not isinstance(metrics, dict):
        raise BadInput(f"{directory / METRICS_FILE} is not a metrics file; {how_to_make}")
    return metrics


def network_metrics(model: Any, result: Any, config: Config, **fields: Any) -> dict[str, Any]:
    """The ``metrics.json`` of a trained network (single-task, branched or candidate).

    ``tasks`` (type, main metric, direction), ``val``/``test`` split metrics per task,
    ``params``/``flops`` (per image at ``image_size``) in total and per stage copy and
    head, the backbone and tree (``partitions``), the per-epoch ``history``, timing over the
    whole training (resumes included) and ``fields`` (name, tree, delta_mtl, ...). Plain
    JSON with no NaN (see :func:`json_safe`).
    """
    costs = model.costs()
    out: dict[str, Any] = {
        "tasks": {t.name: {"type": t.type_name, "main_metric": t.main_metric,
                           "higher_is_better": t.higher_is_better} for t in model.tasks},
        "val": result.val, "test": result.test,
        "params": costs["params"], "flops": costs["flops"],
        "stage_params": costs["stage_params"], "stage_flops": costs["stage_flops"],
        "head_params": costs["head_params"], "head_flops": costs["head_flops"],
        "backbone": config.model.backbone, "locations": list(model.layout.locations),
        "image_size": list(config.image_size), "partitions": model.partitions,
        "epochs": len(result.history), "history": result.history,
        "train_seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1),
        "device": result.device, "world_size": result.world_size,
    }
    out.update(fields)
    return json_safe(out)


# ---------------------------------------------------------------------------------
# Baselines of Δ_MTL


def single_fingerprint(config: Config, task: str) -> dict[str, Any]:
    """The fingerprint of ``task``'s single-task network under ``config``."""
    return fingerprint("single", config, [task])


@dataclass(frozen=True)
class Baselines:
    """The single-task metrics a Δ_MTL is computed against, and where they come from.

    ``matched`` is True when every baseline was trained with the same settings as the
    network compared with them (the reuse rule); with ``--baselines`` the user may name
    others, and ``differences`` then lists, per task, the first setting that differs.
    """

    metrics: dict[str, dict[str, Any]]
    source: str
    matched: bool
    differences: dict[str, str]
    records: dict[str, str]

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "matched": self.matched, "differences": dict(self.differences),
                "model_sha256": dict(self.records)}


def find_baselines(config: Config, runs: str | os.PathLike, tasks: Sequence[str],
                   explicit: str | os.PathLike | None = None, purpose: str = "a Δ_MTL against it") -> Baselines:
    """The single-task baselines of ``tasks`` for a network trained with ``config``.

    Without ``explicit``: those in ``<runs>/single``, which must be finished and trained with
    the same settings (else :class:`BadInput` naming the first difference and the way out).
    With ``explicit`` (a run directory): its single-task networks, whatever their settings;
    the differences are recorded.
    """
    root = Path(explicit) if explicit is not None else Path(runs)
    train = f"`branchnet train-single --config {config.source} --runs {root}`"
    records: dict[str, Record] = {}
    missing, damaged = [], {}
    for task in tasks:
        record, why = read_record(single_dir(root, task))
        if record is not None:
            records[task] = record
        elif why == "missing":
            missing.append(task)
        else:
            damaged[task] = why
    if missing:
        raise BadInput(f"no single-task model for {', '.join(missing)} in {root / SINGLE_DIR}; run {train} first")
    for task, why in damaged.items():
        raise BadInput(f"the single-task model of '{task}' in {single_dir(root, task)} is not usable ({why}); "
                       f"retrain it with {train[:-1]} --task {task} --force`")
    metrics, differences = {}, {}
    for task in tasks:
        directory = single_dir(root, task)
        metrics[task] = read_metrics(directory, f"the single-task model of '{task}'", f"retrain it with {train}")
        difference = first_difference(records[task].fingerprint, single_fingerprint(config, task))
        if difference is None:
            continue
        if explicit is None:
            raise BadInput(f"the single-task model of '{task}' in {directory} was trained with other settings "
                           f"({difference}), so {purpose} would compare unlike things; retrain the single-task "
                           "models with these settings (`branchnet train-single ... --force`)"
                           + (" or name baselines explicitly with --baselines DIR" if "Δ" in purpose else ""))
        differences[task] = difference
    return Baselines(metrics, str(root / SINGLE_DIR), not differences, differences,
                     {t: r.model_sha256 for t, r in records.items()})


#: Names that moved out of the run store in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"commit_network": "branchnet.steps.commit"}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
