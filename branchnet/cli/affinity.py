"""``branchnet affinity``: RSA task affinity at every branch point (or FAFS from per-image losses, or
TAG's lookahead measured while the all-shared network trains)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet.cli.app import OutOption, QuietOption, RunsOption, SetOption, app, resolve_config


@app.command("affinity")
def affinity(
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", help="Experiment config (YAML): affinity of its trained single-task models.")] = None,
    features: Annotated[Optional[Path], typer.Option(
        "--features", help="Own features instead of a config: an .npz with one array (K, ...) per key "
                           "'task/location'.")] = None,
    runs: RunsOption = None,
    images: Annotated[Optional[int], typer.Option(
        "--images", help="K images to use, at least 4 (default: 500 or the whole affinity split with "
                         "--config; every image of the file with --features).")] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="'none', or 'avg:S' to average-pool feature maps to SxS first "
                       "(default: the config's affinity.pool, else none).")] = None,
    center: Annotated[Optional[str], typer.Option(
        "--center", help="'images': Pearson per image pair (the paper); 'features': subtract each "
                         "feature's mean over the images first (Dwivedi & Roig's code). "
                         "Default: the config's affinity.center, else images.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(
        "--bootstrap", help="Resample the images B times for affinity_std and a 95% interval (0: none; "
                            "default: the config's affinity.bootstrap, else 0).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")] = 0,
    save_rdms: Annotated[bool, typer.Option("--save-rdms", help="Also store the RDMs (N, D, K, K) in the npz.")] = False,
    max_memory: Annotated[Optional[str], typer.Option(
        "--max-memory", help="Memory for feature blocks, e.g. 4G (default: half of the free RAM, or of "
                             "free GPU memory on a GPU); larger blocks are spilled to disk.")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="Where models and products run: auto (cuda when present), cpu, cuda, cuda:N.")] = "auto",
    measure: Annotated[str, typer.Option(
        "--measure", help="rsa (feature similarity, the paper's), fafs (agreement on easy/difficult images, "
                          "Lu et al. 2017, from per-image losses) or tag (Fifty et al. 2021: how one task's "
                          "lookahead update changes another's loss, measured while the all-shared network "
                          "trains, every affinity.tag_every steps).")] = "rsa",
    losses: Annotated[Optional[Path], typer.Option(
        "--losses", help="With --measure fafs: an .npz of per-image losses, one array (K,) per task (key = task "
                         "name), the same images in the same order.")] = None,
    locations: Annotated[Optional[str], typer.Option(
        "--locations", help="With --losses: the D branch-point names, comma-separated (FAFS is the same at "
                            "each; default: ResNet's layer1,layer2,layer3,layer4).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="With --measure tag: continue an interrupted TAG network from its last epoch.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --measure tag: retrain the TAG network even if it was trained.")] = False,
    epoch: Annotated[Optional[int], typer.Option(
        "--epoch", help="With --config: measure the single-task models as they were after epoch E (kept by "
                        "train.keep_checkpoints); writes affinity-epoch<E>.npz (affinity-fafs-epoch<E>.npz).")] = None,
    out: OutOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Measure task affinity (RSA) at every branch point -> affinity.npz, affinity.json, figures.

    `branchnet affinity --config CFG [--runs DIR]` uses the trained single-task models;
    `branchnet affinity --features F.npz --out A.npz` uses features extracted elsewhere;
    `branchnet affinity --measure fafs --losses L.npz --out A.npz` makes the FAFS affinity of
    per-image losses (the same N x N at every location, no costs: give them to `build`);
    `branchnet affinity --config CFG --measure tag` trains the all-shared network in RUNS/tag
    (reused when trained alike) and writes RUNS/affinity-tag.npz.
    """
    from branchnet.errors import BadInput
    from branchnet.progress import say
    from branchnet.units import parse_budget

    from branchnet.steps.affinity import MEASURES

    MEASURES.lookup(measure)  # an unknown name: BadInput listing the registered measures
    if (resume or force) and measure != "tag":
        raise BadInput("--resume and --force apply to --measure tag (the network it trains); RSA and FAFS "
                       "train nothing")
    if measure == "tag":
        return _tag(config, runs, set_, out, device, resume, force, quiet,
                    {"--features": features, "--losses": losses, "--locations": locations, "--images": images,
                     "--pool": pool, "--center": center, "--bootstrap": bootstrap,
                     "--max-memory": max_memory, "--save-rdms": save_rdms or None, "--epoch": epoch})
    if losses is not None and measure != "fafs":
        raise BadInput("--losses (per-image losses) make the FAFS affinity: add --measure fafs")
    if epoch is not None and config is None:
        raise BadInput("--epoch E picks the epoch of the run's single-task models: give --config CFG")
    if epoch is not None and epoch < 1:
        raise BadInput(f"--epoch {epoch}: epochs count from 1 (the weights after the first epoch)")
    if measure == "fafs" and (losses is not None or config is None):
        return _fafs(config, features, losses, locations, out)
    if locations is not None:
        raise BadInput("--locations names the branch points of --measure fafs --losses; RSA takes them from "
                       "the features or the models")

    if (config is None) == (features is None):
        raise BadInput("give exactly one of --config CFG (trained models) or --features F.npz (own features)")
    if set_ and features is not None:
        raise BadInput("--set overrides values of a --config; with --features there is no config to override")
    if images is not None and images < 4:
        raise BadInput(f"--images {images} is too few; RDMs need at least 4 images (default 500)")
    if bootstrap is not None and (bootstrap < 0 or bootstrap == 1):
        raise BadInput(f"--bootstrap {bootstrap}: give 0 (none) or at least 2 resamples (e.g. 100)")

    from branchnet.affinity.outputs import check_out_path
    from branchnet.devices import resolve_device
    from branchnet.rsa.rdm import check_center, parse_pool

    pool_size = parse_pool(pool) if pool is not None else None
    if center is not None:
        check_center(center)
    device = str(resolve_device(device, "--device"))
    memory = int(parse_budget(max_memory, "--max-memory")) if max_memory is not None else None
    if out is not None:
        check_out_path(out)
    settings = dict(images=images, center=center, pool=pool_size, bootstrap=bootstrap, seed=seed,
                    save_rdms=save_rdms, max_memory=memory, device=device, progress=not quiet)

    if features is not None:
        from branchnet.rsa.features import affinity_from_features

        if out is None:
            if runs is None:
                raise BadInput("--features needs --out A.npz (or --runs DIR for DIR/affinity.npz): "
                               "where to write the affinity")
            out = runs / "affinity.npz"
        settings.update(center=center or "images", bootstrap=bootstrap or 0)
        paths = affinity_from_features(features, out, **settings)
    else:
        from branchnet.steps.affinity import affinity_from_runs

        cfg, runs_dir = resolve_config(config, runs, set_, trains=False)
        if measure == "fafs":
            from branchnet.steps.affinity import fafs_from_runs

            paths = fafs_from_runs(cfg, runs_dir, out=out, images=images, device=device, progress=not quiet,
                                   epoch=epoch)
        else:
            settings["pool"] = pool  # None: the config's affinity.pool
            paths = affinity_from_runs(cfg, runs_dir, out=out, epoch=epoch, **settings)
    if paths:
        say("affinity: wrote " + ", ".join(str(p) for p in dict(paths).values()))


def _fafs(config: Optional[Path], features: Optional[Path], losses: Optional[Path], locations: Optional[str],
          out: Optional[Path]) -> None:
    """``--measure fafs --losses L.npz --out A.npz``."""
    from branchnet.affinity.fafs import affinity_from_losses, parse_locations
    from branchnet.errors import BadInput
    from branchnet.progress import say

    if losses is None:
        raise BadInput("--measure fafs needs per-image losses: --losses L.npz (one array (K,) per task) --out A.npz")
    if features is not None or config is not None:
        raise BadInput("--losses is the whole input of --measure fafs; drop --features/--config")
    if out is None:
        raise BadInput("--losses needs --out A.npz: where to write the FAFS affinity")
    paths = affinity_from_losses(losses, out, parse_locations(locations))
    say("affinity (fafs): wrote " + ", ".join(str(p) for p in dict(paths).values()))


def _tag(config: Optional[Path], runs: Optional[Path], set_: Optional[list[str]], out: Optional[Path], device: str,
         resume: bool, force: bool, quiet: bool, others: dict) -> None:
    """``--measure tag --config CFG``."""
    from branchnet.errors import BadInput
    from branchnet.progress import say

    given = [flag for flag, value in others.items() if value is not None]
    if given:
        raise BadInput(f"{given[0]} is not a setting of --measure tag (it trains the all-shared network and "
                       "measures on its training batches); drop it")
    if config is None:
        raise BadInput("--measure tag needs --config CFG: it trains the config's all-shared network")
    from branchnet.affinity.outputs import check_out_path
    from branchnet.steps.affinity import tag_from_runs
    from branchnet import distributed

    if out is not None:
        check_out_path(out)
    cfg, runs_dir = resolve_config(config, runs, set_, device=None if device == "auto" else device)
    distributed.init_from_env(cfg.train.device)
    paths = tag_from_runs(cfg, runs_dir, out=out, resume=resume, force=force, quiet=quiet)
    if paths:
        say("affinity (tag): wrote " + ", ".join(str(p) for p in dict(paths).values()))
