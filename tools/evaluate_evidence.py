"""Where is the affinity's signal? The measurements of docs/evaluate.md, "Evidence".

After ``branchnet evaluate`` has run on a config (its single-task models trained with
``train.keep_checkpoints: true``), this script measures, on the same trained trees:

* **training length**: the RSA and FAFS affinities of the single-task models after each
  epoch E (``branchnet affinity --epoch E``);
* **images K**: the RSA affinity from the first K images of the affinity split;
* **locations**: the RSA affinity with one location dropped (its ``A[d]`` set to 1, so that
  stage d's grouping costs nothing and the other stages decide);
* **cost functions**: ``max`` (the paper's), ``mean``, ``weighted`` and ``sensitivity``;

each as measures of one more ``branchnet evaluate`` run with the study's budgets, random
trees and seeds (``--measures rsa,NAME=FILE,...``, ``--costs ...``): every trained tree is
rescored without retraining, and the tree each variant builds at each budget is trained when
the study does not hold it yet (the tables say which). Each group's summary is kept as
``<runs>/evidence/<group>.json`` and the tables are printed in Markdown.

Usage::

    python tools/evaluate_evidence.py --config configs/scenes-evaluate.yaml --runs runs/scenes-evaluate \\
        --sweep 3 --random 6 --seeds 3 [--images 25,50,100] [--groups epochs,images,locations,costs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _measure_files(config, runs: Path, group: str, images: list[int]) -> dict[str, Path]:
    """Write the affinity files of one group's variants (when missing); ``{name: path}``."""
    import numpy as np

    from branchnet.affinity import load_affinity, save_affinity
    from branchnet.runs import affinity_path
    from branchnet.steps.affinity import affinity_from_runs, fafs_from_runs

    out: dict[str, Path] = {}
    if group == "epochs":
        for epoch in range(1, config.train.epochs):
            for measure in ("rsa", "fafs"):
                path = affinity_path(runs, measure, epoch)
                if not path.is_file():
                    maker = affinity_from_runs if measure == "rsa" else fafs_from_runs
                    maker(config, runs, epoch=epoch, progress=False, device="cpu")
                out[f"{measure}-e{epoch}"] = path
    elif group == "images":
        for k in images:
            path = runs / f"affinity-k{k}.npz"
            if not path.is_file():
                affinity_from_runs(config, runs, out=path, images=k, progress=False, device="cpu")
            out[f"rsa-k{k}"] = path
    elif group == "locations":
        data = load_affinity(affinity_path(runs))
        for d, name in enumerate(data.locations):
            path = runs / f"affinity-drop-{name}.npz"
            if not path.is_file():
                a = np.array(data.affinity, copy=True)
                a[d] = 1.0  # no dissimilarity at stage d: its grouping is free, the other stages decide
                dropped = type(data)(**{**data.__dict__, "affinity": a, "rdms": None, "affinity_std": None})
                save_affinity(path, dropped)
            out[f"rsa-no-{name}"] = path
    return out


def _trees(summary: dict, name: str) -> list[str]:
    return [b["scorers"][name]["groups"] if name in b["scorers"] else "-" for b in summary["budgets"]]


def _ids(summary: dict, name: str) -> list[str | None]:
    return [b["scorers"].get(name, {}).get("tree_id") for b in summary["budgets"]]


def _vs(summary: dict, name: str) -> str:
    cells = []
    for b in summary["budgets"]:
        item = b["scorers"].get(name)
        vs = item.get("vs_random") if item else None
        cells.append("-" if vs is None else f"{vs['diff']:+.2f} [{vs['low']:+.2f}, {vs['high']:+.2f}]")
    return " / ".join(cells)


def _rho(rows: list[dict], main_ids: set[str], name: str) -> str:
    """Spearman ρ of scorer ``name``'s dissimilarity against mean test Δ_MTL over the main
    study's trees only (the same trees for every variant: a rescoring, nothing retrained)."""
    import numpy as np

    from branchnet.study.stats import spearman_correlation
    from branchnet.study.summary import DISSIMILARITY

    column = DISSIMILARITY + name.replace(":", "_")
    trees: dict[str, dict] = {}
    for r in rows:
        if r["tree_id"] in main_ids:
            t = trees.setdefault(r["tree_id"], {"x": float(r[column]), "y": {}})
            t["y"][r["seed"]] = float(r["delta_mtl_test"])
    c = spearman_correlation([t["x"] for t in trees.values()], [np.mean(list(t["y"].values())) for t in trees.values()])
    if not np.isfinite(c.rho):
        return f"- | - | {c.n}"
    return f"{c.rho:+.2f} [{c.low:+.2f}, {c.high:+.2f}] | {c.p:.2g} | {c.n}"


def table(group: str, summary: dict, reference: dict, new: set[str], epochs: int, rows: list[dict],
          main_ids: set[str]) -> str:
    """A Markdown table of one group (rows: its scorers; reference: the main study's summary)."""
    base = {name: _ids(reference, name) for name in reference["scorers"]}
    head = ("| affinity | trees (groups per stage) at each budget | same trees as the final | "
            "Δ_MTL minus random at each budget [95% CI] | Spearman ρ [95% CI], main study's trees | p | n |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name in summary["scorers"]:
        measure = name.split(":")[0].split("-")[0]
        final = base.get(measure, [None] * len(summary["budgets"]))
        ids = _ids(summary, name)
        same = sum(a == b for a, b in zip(ids, final))
        trained = [i for i in ids if i in new]
        mark = f" ({len(trained)} newly trained)" if trained else ""
        lines.append(f"| {name} | {', '.join(_trees(summary, name))}{mark} | {same}/{len(ids)} | "
                     f"{_vs(summary, name)} | {_rho(rows, main_ids, name)} |")
    if group == "epochs":
        lines.append("")
        for measure in ("rsa", "fafs"):
            final = base.get(measure)
            stable = epochs
            for epoch in range(epochs - 1, 0, -1):
                if _ids(summary, f"{measure}-e{epoch}") == final:
                    stable = epoch
                else:
                    break
            lines.append(f"{measure.upper()}: the trees of every budget stop changing after epoch {stable} of "
                         f"{epochs} ({100 * stable / epochs:.0f}% of the single-task training).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--runs", required=True)
    parser.add_argument("--sweep", type=int, default=3)
    parser.add_argument("--budgets", default=None)
    parser.add_argument("--random", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", default="25,50,100")
    parser.add_argument("--groups", default="epochs,images,locations,costs")
    args = parser.parse_args()

    from branchnet.config import load_config
    from branchnet.runs import SUMMARY_JSON, TREES_FILE, evaluate_dir
    from branchnet.steps.evaluate import evaluate
    from branchnet.study.table import read_trees_csv

    config = load_config(args.config)
    runs = Path(args.runs)
    study = dict(budgets=args.budgets, sweep=None if args.budgets else args.sweep, random=args.random,
                 seeds=args.seeds)
    reference = evaluate(config, runs, measures="rsa,fafs", **study)
    main_ids = {r["tree_id"] for r in read_trees_csv(evaluate_dir(runs) / TREES_FILE)}
    trained = {p.parent.parent.name for p in (evaluate_dir(runs) / "nets").glob("*/seed0/run.json")}
    (runs / "evidence").mkdir(exist_ok=True)
    shutil.copy(evaluate_dir(runs) / SUMMARY_JSON, runs / "evidence" / "main.json")
    images = [int(k) for k in args.images.split(",") if k.strip()]
    for group in [g.strip() for g in args.groups.split(",") if g.strip()]:
        if group == "costs":
            summary = evaluate(config, runs, measures="rsa,fafs", costs="max,mean,weighted,sensitivity", **study)
        else:
            files = _measure_files(config, runs, group, images)
            spec = ["rsa", "fafs"] + [f"{name}={path}" for name, path in files.items()]
            summary = evaluate(config, runs, measures=spec, **study)
        now = {p.parent.parent.name for p in (evaluate_dir(runs) / "nets").glob("*/seed0/run.json")}
        new, trained = now - trained, now
        (runs / "evidence" / f"{group}.json").write_text(json.dumps(summary, indent=2, default=str))
        shutil.copy(evaluate_dir(runs) / TREES_FILE, runs / "evidence" / f"{group}-trees.csv")
        rows = read_trees_csv(evaluate_dir(runs) / TREES_FILE)
        print(f"\n### {group}\n")
        print(table(group, summary, reference, new, config.train.epochs, rows, main_ids), flush=True)
    evaluate(config, runs, measures="rsa,fafs", **study)  # leave the main study's report in place


if __name__ == "__main__":
    main()
