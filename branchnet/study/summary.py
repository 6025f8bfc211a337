"""``summary.json`` and ``summary.md`` of a study, computed from the rows of trees.csv alone.

For every budget B and every scorer (a measure and a cost: ``rsa``, ``fafs``, ``rsa:mean``
...) whose tree of B was trained (docs/design.md, "Evaluation"; docs/evaluate.md, "Summary"):

* ``vs_random``: the tree's mean test Δ_MTL over seeds minus the mean over B's population
  (its random trees, or with ``--exhaustive`` every tree of the window but the ends) with a
  95% two-stage bootstrap interval over trees and seeds (:func:`branchnet.study.mean_difference`);
* ``vs_random_paired`` (with two or more seeds): the same difference taken within each seed,
  which removes the offset a seed gives every tree alike, with a bootstrap over the random
  trees and, jointly, the seeds (:func:`branchnet.study.paired_difference`);
* ``percentile``: the share of the population whose mean test Δ_MTL is below the tree's
  (ties count half; 100 = better than every tree of the population);
* ``pareto``: whether the tree is on the Pareto front of all the study's distinct trees
  (params against mean test Δ_MTL);
* ``spearman``: within the budget, over its distinct trees (population and scorers' trees),
  the Spearman correlation between the scorer's dissimilarity and mean test Δ_MTL.

Over all distinct trees of the study (shared and separate included), ``correlation`` gives
each scorer's Spearman ρ with p-value and bootstrap interval, and ``verdict`` one line in
plain words per scorer (:func:`branchnet.study.verdict`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from branchnet.atomic import atomic_write_json, atomic_write_text, json_safe
from branchnet.errors import BadInput
from branchnet.study.jobs import in_window
from branchnet.study.stats import (BOOTSTRAP, LEVEL, mean_difference, paired_difference, pareto_front, percentile,
                                   spearman_correlation, verdict)
from branchnet.units import format_count

SUMMARY_FORMAT = "branchnet.evaluate-summary/1"
DISSIMILARITY = "dissimilarity_"


def scorer_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The scorers of a trees.csv, from its ``dissimilarity_<measure>[_<cost>]`` columns
    (``rsa``, ``rsa:mean``), in column order."""
    if not rows:
        return []
    return [c[len(DISSIMILARITY):].replace("_", ":", 1) for c in rows[0] if c.startswith(DISSIMILARITY)]


def _column(name: str) -> str:
    return DISSIMILARITY + name.replace(":", "_")


class _Trees:
    """The distinct trees of the rows: params, dissimilarities and test Δ_MTL per seed."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], scorers: Sequence[str]) -> None:
        self.ids: list[str] = []
        self.params: dict[str, float] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.delta: dict[str, dict[int, float]] = OrderedDict()
        self.dissimilarity: dict[str, dict[str, float]] = {}
        for row in rows:
            tid = row["tree_id"]
            if tid not in self.delta:
                self.ids.append(tid)
                self.delta[tid] = {}
                self.params[tid] = float(row["params"])
                self.info[tid] = {"groups": row["groups"], "partitions": row["partitions"]}
                self.dissimilarity[tid] = {s: float(row[_column(s)]) for s in scorers}
            value = row["delta_mtl_test"]
            if value is None or not np.isfinite(float(value)):
                raise BadInput(f"tree {tid} seed {row['seed']} has no test Δ_MTL; retrain it")
            self.delta[tid][int(row["seed"])] = float(value)

    def values(self, tid: str) -> np.ndarray:
        """(S,) test Δ_MTL of ``tid`` over its seeds, in seed order."""
        return np.array([v for _, v in sorted(self.delta[tid].items())])

    def mean(self, tid: str) -> float:
        return float(self.values(tid).mean())


def summarize(rows: Sequence[Mapping[str, Any]], n_boot: int = BOOTSTRAP, level: float = LEVEL,
              seed: int = 0) -> dict[str, Any]:
    """The summary (see the module docstring) of the rows of trees.csv
    (:func:`branchnet.study.table.read_trees_csv`, or the rows before they are written)."""
    if not rows:
        raise BadInput("trees.csv has no rows: nothing was trained")
    scorers = scorer_names(rows)
    trees = _Trees(rows, scorers)
    means = np.array([trees.mean(t) for t in trees.ids])
    front = pareto_front([trees.params[t] for t in trees.ids], means)
    on_front = {t for t, f in zip(trees.ids, front) if f}
    seeds = sorted({int(r["seed"]) for r in rows})
    budgets = sorted({float(r["budget"]) for r in rows if r.get("budget") is not None})
    exhaustive = [t for t in trees.ids if any(r["tree_id"] == t and r["source"] == "exhaustive" for r in rows)]

    def tree_entry(tid: str) -> dict[str, Any]:
        v = trees.values(tid)
        return {"tree_id": tid, "params": trees.params[tid], **trees.info[tid], "mean_delta": float(v.mean()),
                "std_delta": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "seeds": len(v),
                "pareto": tid in on_front,
                "dissimilarity": {s: trees.dissimilarity[tid][s] for s in scorers}}

    out_budgets = []
    comparisons: dict[str, list] = {s: [] for s in scorers}
    paired_comparisons: dict[str, list] = {s: [] for s in scorers}
    for budget in budgets:
        window = (0.9 * budget, budget)
        here = [r for r in rows if r.get("budget") is not None and float(r["budget"]) == budget]
        population = list(OrderedDict.fromkeys(r["tree_id"] for r in here if r["source"] == "random"))
        kind = "random"
        if not population and exhaustive:
            population = [t for t in exhaustive if in_window(trees.params[t], window)]
            kind = "exhaustive"
        entry: dict[str, Any] = {"budget": budget, "window": list(window), "population": kind,
                                 "population_trees": population,
                                 "population_mean_delta": float(np.mean([trees.mean(t) for t in population]))
                                 if population else None, "scorers": {}}
        members = list(OrderedDict.fromkeys(population + [r["tree_id"] for r in here if r["source"] in scorers]))
        for name in scorers:
            mine = [r["tree_id"] for r in here if r["source"] == name]
            if not mine:
                continue
            tid = mine[0]
            item = tree_entry(tid)
            if population:
                diff = mean_difference(trees.values(tid), [trees.values(t) for t in population], n_boot=n_boot,
                                       seed=seed, level=level)
                comparisons[name].append(diff)
                item["vs_random"] = {"diff": diff.diff, "low": diff.low, "high": diff.high, "level": diff.level,
                                     "trees": diff.trees, "seeds": diff.seeds, "outcome": diff.outcome}
                paired = paired_difference(trees.delta[tid], [trees.delta[t] for t in population], n_boot=n_boot,
                                           seed=seed, level=level)
                if paired is not None:
                    paired_comparisons[name].append(paired)
                    item["vs_random_paired"] = {"diff": paired.diff, "low": paired.low, "high": paired.high,
                                                "level": paired.level, "trees": paired.trees,
                                                "seeds": paired.seeds, "outcome": paired.outcome}
                item["percentile"] = percentile(trees.mean(tid), [trees.mean(t) for t in population])
            corr = spearman_correlation([trees.dissimilarity[t][name] for t in members],
                                        [trees.mean(t) for t in members], n_boot=n_boot, seed=seed, level=level)
            item["spearman_in_budget"] = _correlation(corr)
            entry["scorers"][name] = item
        out_budgets.append(entry)

    correlation, verdicts, paired_verdicts = {}, {}, {}
    for name in scorers:
        corr = spearman_correlation([trees.dissimilarity[t][name] for t in trees.ids], means, n_boot=n_boot,
                                    seed=seed, level=level)
        correlation[name] = _correlation(corr)
        verdicts[name] = verdict(name, comparisons[name], corr)
        if paired_comparisons[name]:
            paired_verdicts[name] = "Paired by seed: " + verdict(name, paired_comparisons[name])
    ends = {name: tree_entry(name) for name in ("shared", "separate") if name in trees.delta}
    return {"format": SUMMARY_FORMAT, "seeds": seeds, "scorers": scorers, "trees": len(trees.ids),
            "networks": sum(len(d) for d in trees.delta.values()), "level": level, "bootstrap": n_boot,
            "budgets": out_budgets, "ends": ends, "correlation": correlation,
            "pareto_front": [t for t in trees.ids if t in on_front], "verdict": verdicts,
            "verdict_paired": paired_verdicts}


def _correlation(c) -> dict[str, Any]:
    return {"rho": c.rho, "p": c.p, "low": c.low, "high": c.high, "level": c.level, "n": c.n}


# ---------------------------------------------------------------------------------
# summary.md


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def _pp(value: float | None, signed: bool = True) -> str:
    if not _finite(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _source_name(name: str) -> str:
    measure, _, cost = name.partition(":")
    label = measure.upper() if measure in ("rsa", "fafs", "tag") else measure
    return f"{label} ({cost} cost)" if cost else label


def summary_markdown(summary: Mapping[str, Any], title: str = "branchnet evaluate") -> str:
    """summary.md: the verdicts first, then a table per budget, the correlations and the ends."""
    lines = [f"# {title}", ""]
    lines.append(f"{summary['trees']} distinct trees, {len(summary['seeds'])} seed(s) each "
                 f"({summary['networks']} networks); Δ_MTL in percent against the single-task models "
                 "(test split, mean over seeds; higher is better).")
    lines += ["", "## Verdict", ""]
    lines += [f"- {text}." for text in summary["verdict"].values()]
    lines += [f"- {text}." for text in summary.get("verdict_paired", {}).values()]
    level = int(round(100 * summary["level"]))
    for entry in summary["budgets"]:
        b = entry["budget"]
        lo, hi = entry["window"]
        pop = entry["population_trees"]
        lines += ["", f"## Budget {format_count(b)} (window {format_count(lo)} to {format_count(hi)} params)", ""]
        if pop:
            lines.append(f"Population: {len(pop)} {entry['population']} tree(s) of the window, mean Δ_MTL "
                         f"{_pp(entry['population_mean_delta'])}.")
        else:
            lines.append("No population tree was trained at this budget: nothing to compare with.")
        lines += ["", f"| tree | id | groups | params | Δ_MTL (mean ± sd) | minus population [{level}% CI] | "
                      f"paired by seed [{level}% CI] | percentile | Pareto | Spearman in budget (ρ, p) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, item in entry["scorers"].items():
            vs = item.get("vs_random")
            diff = f"{_pp(vs['diff'])} [{_pp(vs['low'])}, {_pp(vs['high'])}] ({vs['outcome']})" if vs else "-"
            pv = item.get("vs_random_paired")
            paired = f"{_pp(pv['diff'])} [{_pp(pv['low'])}, {_pp(pv['high'])}] ({pv['outcome']})" if pv else "-"
            pct = f"{item['percentile']:.0f}" if "percentile" in item else "-"
            sp = item["spearman_in_budget"]
            rho = f"{_pp(sp['rho'])}, {sp['p']:.2g}" if _finite(sp["rho"]) else "-"
            lines.append(f"| {_source_name(name)} | `{item['tree_id']}` | {item['groups']} | "
                         f"{format_count(item['params'])} | {_pp(item['mean_delta'])} ± {_pp(item['std_delta'], False)} | "
                         f"{diff} | {paired} | {pct} | {'yes' if item['pareto'] else 'no'} | {rho} |")
    lines += ["", f"*Minus population*: the tree's mean Δ_MTL minus the population's, with a {level}% bootstrap "
                  "interval over trees and seeds (*better*/*worse* when the interval excludes 0, else *unclear*); "
                  "*paired by seed*: the same difference taken within each seed (every tree of a seed shares that "
                  "seed's offset against the baselines), resampling the random trees and, jointly, the seeds; "
                  "*percentile*: the share of the population it beats (ties half); *Pareto*: no trained tree has "
                  "fewer or as many params and a Δ_MTL as high.",
              "", "## Does the dissimilarity predict Δ_MTL?", "",
              f"Spearman ρ over all {summary['trees']} distinct trees between each measure's dissimilarity and "
              "mean test Δ_MTL (negative: less dissimilar trees do better, what the method assumes).", "",
              f"| measure | ρ | p | {level}% CI | n |", "|---|---|---|---|---|"]
    for name, c in summary["correlation"].items():
        if not _finite(c["rho"]):
            lines.append(f"| {_source_name(name)} | - | - | - | {c['n']} |")
        else:
            lines.append(f"| {_source_name(name)} | {c['rho']:+.3f} | {c['p']:.3g} | "
                         f"[{_pp(c['low'])}, {_pp(c['high'])}] | {c['n']} |")
    lines += ["", "## The ends", "", "| network | params | Δ_MTL (mean ± sd) | Pareto |", "|---|---|---|---|"]
    for name, item in summary["ends"].items():
        lines.append(f"| {name} | {format_count(item['params'])} | {_pp(item['mean_delta'])} ± "
                     f"{_pp(item['std_delta'], False)} | {'yes' if item['pareto'] else 'no'} |")
    lines += ["", f"Pareto front (params against mean Δ_MTL): {', '.join(f'`{t}`' for t in summary['pareto_front'])}.",
              ""]
    return "\n".join(lines)


def write_summary(directory: str | os.PathLike, summary: Mapping[str, Any], title: str = "branchnet evaluate",
                  json_name: str = "summary.json", md_name: str = "summary.md") -> list[Path]:
    """Write summary.json (JSON that cannot fail) and summary.md in ``directory``."""
    directory = Path(directory)
    return [atomic_write_json(directory / json_name, json_safe(dict(summary))),
            atomic_write_text(directory / md_name, summary_markdown(summary, title))]

