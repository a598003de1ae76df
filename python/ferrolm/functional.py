"""Differentiable functions over tensors (the Rust core's ops).

Masks are boolean array-likes (True = the condition holds); integer inputs (ids, targets,
gather indices) must be integer arrays: floats are refused rather than truncated.
"""

from ferrolm._core import (
    add,
    attention,
    attention_qkv,
    clamp,
    concat,
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
    reshape,
    rsqrt,
    sigmoid,
    softmax,
    sqrt,
    stack,
    sub,
    sum,
    tanh,
    transpose,
)
from ferrolm._core import where as where  # noqa: PLC0414  (re-export of a keyword-like name)

__all__ = [
    "add", "attention", "attention_qkv", "clamp", "concat", "cross_entropy", "div", "dropout",
    "embedding", "exp", "gather", "gelu", "gelu_erf", "index_select", "layer_norm", "linear",
    "log", "log_sigmoid", "log_softmax", "masked_fill", "matmul", "max", "maximum", "mean",
    "minimum", "mul", "narrow", "neg", "permute", "pow", "relu", "reshape", "rsqrt", "sigmoid",
    "softmax", "sqrt", "stack", "sub", "sum", "tanh", "transpose", "where",
]
