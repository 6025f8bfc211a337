"""Moved in 0.3.0: each command has its module, :mod:`branchnet.cli.export_model` and
:mod:`branchnet.cli.profile`; this old path goes in 0.4.0."""

import warnings

from branchnet.cli.export_model import export_model
from branchnet.cli.profile import profile

warnings.warn("branchnet.cli.deploy moved to branchnet.cli.export_model and branchnet.cli.profile; the old path "
              "goes in branchnet 0.4.0", DeprecationWarning, stacklevel=2)

__all__ = ["export_model", "profile"]
