from .random_pick import RandomPick
from .uncertainty import MostUncertain

__all__ = ["MostUncertain", "RandomPick"]
