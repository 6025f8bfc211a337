"""Moved in 0.3.0: the validation pass is :func:`branchnet.train.validation.split_metrics` ("evaluate"
names the study, :mod:`branchnet.steps.evaluate`); this old path goes in 0.4.0."""

import warnings

from branchnet.train.validation import split_metrics as evaluate

warnings.warn("branchnet.train.evaluate.evaluate moved to branchnet.train.validation.split_metrics; the old path "
              "goes in branchnet 0.4.0", DeprecationWarning, stacklevel=2)

__all__ = ["evaluate"]
