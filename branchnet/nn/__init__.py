"""Networks: timm encoders split into stages (:mod:`~branchnet.nn.backbones`), task heads and
their registry (:mod:`~branchnet.nn.heads`), the branched multi-task network
(:mod:`~branchnet.nn.branched`) and Maximum Roaming's channel masks (:mod:`~branchnet.nn.masking`).
The ``model.pt`` file that rebuilds a network with its config is :mod:`branchnet.model_file`."""

from branchnet.moved import moved_attribute
from branchnet.nn.backbones import NUM_STAGES, StageLayout, build_stages, count_flops, count_params
from branchnet.nn.branched import BranchedNet
from branchnet.nn.heads import HEADS, build_head

__all__ = ["NUM_STAGES", "StageLayout", "build_stages", "count_flops", "count_params", "BranchedNet",
           "HEADS", "build_head"]

#: Names that moved a floor up in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"LoadedModel": "branchnet.model_file", "load_model": "branchnet.model_file",
          "save_model": "branchnet.model_file"}


def __getattr__(name: str):
    return moved_attribute(__name__, name, _MOVED)
