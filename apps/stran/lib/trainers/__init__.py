from .scar import ScarTrainer, training_options

__all__ = ["ScarTrainer", "training_options"]
