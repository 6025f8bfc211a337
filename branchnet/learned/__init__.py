"""The learned sharing cost (docs/design.md, "Learned sharing cost"): a Bayesian model of what
sharing each stage with each task costs every task, fitted from trained trees with the
affinity measures as its prior (:mod:`~branchnet.learned.model`, on the design of
:mod:`~branchnet.learned.features` and the regression of :mod:`~branchnet.learned.bayes`);
which tree to train next and which to recommend (:mod:`~branchnet.learned.propose`); the active
loop (:mod:`~branchnet.learned.loop`); its leave-one-tree-out diagnostics
(:mod:`~branchnet.learned.diagnostics`); and a synthetic oracle to test the loop without
training (:mod:`~branchnet.learned.oracle`). No torch here."""

from branchnet.learned.loop import LoopResult, run_loop
from branchnet.learned.model import MODEL_FILE, Observation, SharingModel, load_model
from branchnet.learned.propose import ACQUISITIONS, Proposal, SearchSpace, propose, recommend

__all__ = ["ACQUISITIONS", "LoopResult", "MODEL_FILE", "Observation", "Proposal", "SearchSpace", "SharingModel",
           "load_model", "propose", "recommend", "run_loop"]
