"""Training: the loop (:mod:`~branchnet.train.engine`) and the parts it composes, loss weightings
(:mod:`~branchnet.train.weighting`), optimisers and schedules (:mod:`~branchnet.train.optim`) and
training hooks (:mod:`~branchnet.train.hooks`). torch.distributed plumbing and device selection
are on the ground floor (:mod:`branchnet.distributed`, :mod:`branchnet.devices`); the run store
that decides what is reused is :mod:`branchnet.runs`."""
