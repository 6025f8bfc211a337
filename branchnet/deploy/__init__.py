"""Shipping a branched network: standalone inference artefacts and measured latency.

* :mod:`~branchnet.deploy.export`: a :class:`~branchnet.nn.branched.BranchedNet` as a
  TorchScript, ONNX or ``torch.export`` artefact with one named output per task, checked
  against the eager network before it is kept;
* :mod:`~branchnet.deploy.profile`: latency per encoder node and head and end to end
  (median and spread after warm-up), memory peak, and the per-stage latency table that
  ``branchnet build --latency`` budgets with.

These modules only see torch networks and devices, never a run directory: reading a
``model.pt`` or ``tree.json`` and writing files is the job of the steps
(:mod:`branchnet.steps.export_model`, :mod:`branchnet.steps.profile`,
:mod:`branchnet.steps.build`), paths are :mod:`branchnet.runs`'s (docs/deploy.md).
"""
