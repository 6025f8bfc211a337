"""Moved to :mod:`branchnet.model_file` (a floor above the config it rebuilds) in 0.3.0; this old
path goes in 0.4.0."""

from branchnet.moved import alias_module

alias_module(__name__, "branchnet.model_file")
