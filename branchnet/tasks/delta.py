"""Multi-task performance relative to single-task baselines (survey, Eq. 10).

``delta_mtl = 100 / T * sum_i (-1)^{l_i} (M_i - B_i) / B_i`` over the tasks' main
metrics, with ``l_i = 1`` where lower is better for task i and B the single-task
model's metric. Positive means the multi-task model beats its single-task baselines.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from branchnet.errors import BadInput


def task_delta(value: float, baseline: float, higher_is_better: bool, task: str = "?") -> float:
    """One task's relative change in percent, signed so that positive is better."""
    if baseline == 0:
        raise BadInput(f"the single-task baseline of task '{task}' scores 0, so its relative change is "
                       "undefined; retrain that single-task model")
    change = 100.0 * (value - baseline) / baseline
    return change if higher_is_better else -change


def multi_task_delta(metrics: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, float]],
                     tasks: Sequence) -> dict[str, object]:
    """``{"delta_mtl": mean, "per_task": {task: change}, "metric": {task: name}}`` in percent.

    ``tasks`` are :class:`branchnet.tasks.Task` objects (their ``main_metric`` and
    ``higher_is_better`` decide each term); ``metrics`` and ``baselines`` map task ->
    metric -> value.
    """
    missing = [t.name for t in tasks if t.name not in baselines]
    if missing:
        raise BadInput(f"no single-task metrics for {', '.join(missing)}; run `branchnet train-single` first")
    per_task = {}
    for task in tasks:
        main = task.main_metric
        per_task[task.name] = task_delta(metrics[task.name][main], baselines[task.name][main],
                                         task.higher_is_better, task.name)
    return {"delta_mtl": sum(per_task.values()) / len(per_task), "per_task": per_task,
            "metric": {t.name: t.main_metric for t in tasks}}
