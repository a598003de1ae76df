"""Training: one loop (`loop.train`) shared by every objective; one module per objective."""

from ferrolm.train.causal import CausalLM
from ferrolm.train.loop import Objective, TrainConfig, evaluate_model, train
from ferrolm.train.mlm import MaskedLM

__all__ = ["CausalLM", "MaskedLM", "Objective", "TrainConfig", "evaluate_model", "train"]
