"""Differentiable functions over tensors (the Rust core's ops).

Masks are boolean array-likes (True = the condition holds), or of 0 and 1: other values (an
additive mask's -inf) are refused rather than read as True; integer inputs (ids, targets,
gather indices) must be integer arrays: floats are refused rather than truncated.
"""

from typing import Optional

import numpy as np

from ferrolm._core import (
    ShapeError,
    abs,
    add,
    attention,
    attention_qkv,
    clamp,
    concat,
    cos,
    cross_entropy,
    div,
    dropout,
    embedding,
    exp,
    gather,
    gelu,
    gelu_erf,
    index_select,
    layer_norm,
    linear,
    log,
    log_sigmoid,
    log_softmax,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    minimum,
    mul,
    narrow,
    neg,
    permute,
    pow,
    relu,
    round,
    reshape,
    rsqrt,
    sigmoid,
    silu,
    sin,
    softmax,
    sqrt,
    stack,
    sub,
    sum,
    tanh,
    transpose,
    Tensor,
)
from ferrolm._core import where as where  # noqa: PLC0414  (re-export of a keyword-like name)


def min(x, axis: Optional[int] = None, keepdim: bool = False):  # noqa: A001  (torch's name)
    """Minimum over `axis` (all elements when None, the default): −max(−x), so its gradient is max's."""
    return (x if isinstance(x, Tensor) else Tensor(x)).min(axis, keepdim)


def mse_loss(prediction, target, reduction: str = "mean"):
    """Mean (or "sum", or "none": elementwise) of the squared differences. The shapes must
    match: [N, 1] against [N] would broadcast to every pair's difference."""
    shapes = [tuple(v.shape) if hasattr(v, "shape") else np.shape(v) for v in (prediction, target)]
    if all(shapes) and shapes[0] != shapes[1]:  # a scalar () broadcasts as meant
        raise ShapeError(f"mse_loss: prediction shape {shapes[0]} and target shape {shapes[1]} differ")
    squared = sub(prediction, target) ** 2  # a Tensor, whatever array-likes or numbers are given
    if reduction == "none":
        return squared
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return squared.mean() if reduction == "mean" else squared.sum()

__all__ = [
    "abs", "add", "attention", "attention_qkv", "clamp", "concat", "cos", "cross_entropy", "div", "dropout",
    "embedding", "exp", "gather", "gelu", "gelu_erf", "index_select", "layer_norm", "linear",
    "log", "log_sigmoid", "log_softmax", "masked_fill", "matmul", "max", "maximum", "mean",
    "min", "minimum", "mse_loss", "mul", "narrow", "neg", "permute", "pow", "relu", "reshape", "round", "rsqrt", "sigmoid",
    "silu", "sin", "softmax", "sqrt", "stack", "sub", "sum", "tanh", "transpose", "where",
]
