"""The pipeline's steps as library calls, one module per command; every CLI command is one call here.

* :func:`~branchnet.steps.train_single.train_single` (``branchnet train-single``)
* :func:`~branchnet.steps.affinity.affinity_from_runs`, ``fafs_from_runs``, ``tag_from_runs``
  (``branchnet affinity --config``; the measures' registry is :data:`~branchnet.steps.affinity.MEASURES`)
* :func:`~branchnet.steps.build.build_tree` (``branchnet build``)
* :func:`~branchnet.steps.export.export_graph` (``branchnet export``)
* :func:`~branchnet.steps.train_branched.train_branched` (``branchnet train``)
* :func:`~branchnet.steps.run.run_pipeline` (``branchnet run``)
* :func:`~branchnet.steps.select.select` (``branchnet select``)
* :func:`~branchnet.steps.groupings.run_groupings` (``branchnet groupings``)
* :func:`~branchnet.steps.evaluate.evaluate` (``branchnet evaluate``)
* :func:`~branchnet.steps.predict.predict` (``branchnet predict``)
* :func:`~branchnet.steps.export_model.export_model` (``branchnet export-model``)
* :func:`~branchnet.steps.profile.profile` (``branchnet profile``)

:func:`~branchnet.steps.commit.commit_network` is the save epilogue every training step shares.
"""
