from .scar import ScarInfer

__all__ = ["ScarInfer"]
