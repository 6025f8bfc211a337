"""Networks: timm encoders split into stages (:mod:`~branchnet.nn.backbones`), task heads
(:mod:`~branchnet.nn.heads`), the branched multi-task network (:mod:`~branchnet.nn.branched`)
and its ``model.pt`` file (:mod:`~branchnet.nn.model_file`)."""

from branchnet.nn.backbones import NUM_STAGES, StageLayout, build_stages, count_flops, count_params
from branchnet.nn.branched import BranchedNet
from branchnet.nn.heads import build_head
from branchnet.nn.model_file import LoadedModel, load_model, save_model

__all__ = ["NUM_STAGES", "StageLayout", "build_stages", "count_flops", "count_params", "BranchedNet",
           "build_head", "LoadedModel", "load_model", "save_model"]
