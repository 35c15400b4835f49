from .config import DualPromptConfig
from .model import DualPromptModel

__all__ = ["DualPromptConfig", "DualPromptModel"]
