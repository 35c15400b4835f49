from .config import MemoryTokenConfig
from .model import MemoryTokenModel

__all__ = ["MemoryTokenConfig", "MemoryTokenModel"]
