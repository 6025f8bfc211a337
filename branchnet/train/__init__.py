"""Training: the loop (:mod:`~branchnet.train.engine`), loss weightings
(:mod:`~branchnet.train.weighting`), torch.distributed plumbing
(:mod:`~branchnet.train.distributed`) and device selection (:mod:`~branchnet.train.devices`).
The run store that decides what is reused is :mod:`branchnet.runs`."""
