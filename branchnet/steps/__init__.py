"""The pipeline's steps as library calls, one module each; every CLI command is one call here.

* :func:`~branchnet.steps.train_single.train_single` (``branchnet train-single``)
* :func:`~branchnet.steps.affinity.affinity_from_runs` (``branchnet affinity --config``)
* :func:`~branchnet.steps.build.build_tree` (``branchnet build``)
* :func:`~branchnet.steps.train_branched.train_branched` (``branchnet train``)
* :func:`~branchnet.steps.run.run_pipeline` (``branchnet run``)
* :func:`~branchnet.steps.groupings.run_groupings` (``branchnet groupings``)
"""
