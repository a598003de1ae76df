"""ferrolm: train and understand small language models end to end on CPUs."""

from ferrolm._core import FormatError, GradError, ShapeError
from ferrolm._core import Tokenizer  # tokenizers (issue 3)

__all__ = ["FormatError", "GradError", "ShapeError"]
__all__ += ["Tokenizer"]
