from .config import SoftMaskConfig
from .layer import Linear, SoftMaskLayer
from .model import SoftMaskModel

__all__ = ["Linear", "SoftMaskConfig", "SoftMaskLayer", "SoftMaskModel"]
