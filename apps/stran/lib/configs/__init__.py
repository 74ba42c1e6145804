from .scar import ScarConfig

__all__ = ["ScarConfig"]
