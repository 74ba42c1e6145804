from .uncertainty import ScarUncertaintyScoring

__all__ = ["ScarUncertaintyScoring"]
