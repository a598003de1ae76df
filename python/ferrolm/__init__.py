"""ferrolm: train and understand small language models end to end on CPUs.

A multithreaded Rust core (tensors with reverse-mode autodiff, fused transformer kernels,
tokenizers) driven from Python.

>>> import ferrolm as fl
>>> w = fl.randn(3, 2, seed=0, requires_grad=True)
>>> loss = (fl.Tensor([[1.0, 2.0, 3.0]]) @ w).sum()
>>> loss.backward()
>>> w.grad.shape
(3, 2)
"""

from typing import Sequence, Union

from ferrolm import functional, nn
from ferrolm._core import (
    Embedding,
    FormatError,
    GradError,
    LayerNorm,
    Linear,
    ShapeError,
    Tensor,
    Tokenizer,
    clip_grad_norm,
    full,
    is_grad_enabled,
    load_safetensors,
    manual_seed,
    matmul_precision,
    num_threads,
    rand,
    randn,
    release_memory,
    save_safetensors,
    set_matmul_precision,
    set_num_threads,
)
from ferrolm.autograd import enable_grad, no_grad, set_grad_enabled
from ferrolm.bert import BERT
from ferrolm.gpt import GPT
from ferrolm.models import load_model
from ferrolm.optim import SGD, AdamW

__all__ = [
    "AdamW",
    "BERT",
    "GPT",
    "Embedding",
    "FormatError",
    "GradError",
    "SGD",
    "LayerNorm",
    "Linear",
    "ShapeError",
    "Tensor",
    "Tokenizer",
    "clip_grad_norm",
    "enable_grad",
    "full",
    "functional",
    "is_grad_enabled",
    "load_safetensors",
    "manual_seed",
    "matmul_precision",
    "nn",
    "no_grad",
    "num_threads",
    "rand",
    "randn",
    "release_memory",
    "save_safetensors",
    "set_grad_enabled",
    "set_matmul_precision",
    "set_num_threads",
    "tensor",
    "zeros",
    "ones",
    "load_model",
]


def tensor(data, requires_grad: bool = False) -> Tensor:
    """A float32 tensor from an array-like (numpy arrays of other dtypes are cast).

    >>> tensor([1, 2, 3]).numpy().dtype
    dtype('float32')
    """
    return Tensor(data, requires_grad=requires_grad)


def zeros(*shape: Union[int, Sequence[int]], requires_grad: bool = False) -> Tensor:
    """A tensor of zeros shaped `*shape` (`zeros(2, 3)` or `zeros((2, 3))`)."""
    return full(_one_shape(shape), 0.0, requires_grad=requires_grad)


def ones(*shape: Union[int, Sequence[int]], requires_grad: bool = False) -> Tensor:
    """A tensor of ones shaped `*shape` (`ones(2, 3)` or `ones((2, 3))`)."""
    return full(_one_shape(shape), 1.0, requires_grad=requires_grad)


def _one_shape(shape: tuple):
    """`f(2, 3)`'s and `f((2, 3))`'s shape as one argument."""
    return shape[0] if len(shape) == 1 else shape
