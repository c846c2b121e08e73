"""Training T2MIR-AD / T2MIR-DPT and their ablations (Algorithms 1 and 3): ``t2mir train``."""

from training.train.config import TrainConfig, load_train_config
from training.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
