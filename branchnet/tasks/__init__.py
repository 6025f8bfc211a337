"""Tasks: the task interface and registry, the built-in task types, their metrics, and Δ_MTL.

* :mod:`~branchnet.tasks.base`: :class:`TaskSpec`, :class:`Task`, the type registry.
* :mod:`~branchnet.tasks.types`: segmentation, depth, normals, edges, keypoints,
  classification, attribute.
* :mod:`~branchnet.tasks.extra`: instance offsets, attribute groups, edge maps.
* :mod:`~branchnet.tasks.metrics`: split-level accumulators (exact over batches and ranks).
* :mod:`~branchnet.tasks.delta`: the multi-task performance Δ_MTL (survey, Eq. 10).
"""

from branchnet.tasks.base import TASK_TYPES, Task, TaskMetrics, TaskSpec, make_task, register_task_type
from branchnet.tasks.types import (Attribute, Classification, Depth, Edges, Keypoints, Normals,  # registers them
                                   Segmentation)
from branchnet.tasks.extra import AttributeGroup, EdgeMap, InstanceOffset  # registers them
from branchnet.tasks.delta import multi_task_delta, task_delta

__all__ = [
    "TASK_TYPES", "Task", "TaskMetrics", "TaskSpec", "make_task", "register_task_type",
    "Attribute", "Classification", "Depth", "Edges", "Keypoints", "Normals", "Segmentation",
    "AttributeGroup", "EdgeMap", "InstanceOffset", "multi_task_delta", "task_delta",
]
