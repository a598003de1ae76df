//! The functional ops (`ferrolm.functional`): argument conversion around `ferrolm::ops`.

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};
use pyo3::wrap_pyfunction;

use ferrolm::ops::{self, Dropout, Reduction};
use ferrolm::Tensor;

use crate::errors::{IntoPy, ShapeError};
use crate::nn::{seed_or_next, Seed};
use crate::tensor::{mask_of_shape, run, to_ids, to_mask, to_tensor, Axis, Constant, PyTensor};

/// Declares `fn name(x: Tensor) -> Tensor` wrappers for unary core ops, written `name: "docstring"`: the string
/// literals (one per docstring line) become the function's Python `__doc__`.
macro_rules! unary {
    ($($name:ident: $($doc:literal)+),* $(,)?) => {$(
        $(#[doc = $doc])+
        #[pyfunction]
        fn $name(py: Python<'_>, x: PyTensor) -> PyResult<PyTensor> {
            run(py, || ops::$name(&x.0))
        }
    )*};
}
unary! {
    neg: "-x, elementwise.",
    exp: "e**x, elementwise.",
    log: "Natural logarithm, elementwise (NaN for negative inputs, -inf at 0, as in numpy).",
    sqrt: "Square root, elementwise (NaN for negative inputs).",
    rsqrt: "1 / sqrt(x), elementwise.",
    tanh: "Hyperbolic tangent, elementwise.",
    sigmoid: "The logistic function 1 / (1 + e**-x), elementwise, computed without overflow.",
    log_sigmoid: "log(sigmoid(x)), elementwise, computed without overflow for large |x| (DPO and reward losses).",
    relu: "max(x, 0), elementwise; NaN stays NaN, and the gradient at 0 is 0.",
    gelu: "GELU with the tanh approximation (GPT-2's `gelu_new`; PyTorch's gelu(approximate='tanh')):"
        "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise. gelu_erf is the exact form.",
    gelu_erf: "Exact GELU, x·Φ(x) with Φ the standard normal CDF, elementwise (BERT's `gelu`; PyTorch's default)."
        "gelu is GPT-2's tanh approximation.",
    abs: "|x|, elementwise; the gradient at 0 is 0 (as in PyTorch).",
    sin: "Sine of x (radians), elementwise.",
    cos: "Cosine of x (radians), elementwise.",
    silu: "SiLU (swish), x·sigmoid(x), elementwise (SwiGLU feed-forward layers use it).",
}

/// Declares `fn name(a, b) -> Tensor` wrappers for binary core ops (a and b: Tensors, numbers or array-likes),
/// written `name: "docstring"` as in `unary!`.
macro_rules! binary {
    ($($name:ident: $($doc:literal)+),* $(,)?) => {$(
        $(#[doc = $doc])+
        #[pyfunction]
        fn $name(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
            let (a, b) = (to_tensor(a)?, to_tensor(b)?);
            run(py, || ops::$name(&a, &b))
        }
    )*};
}
binary! {
    add: "a + b, elementwise with numpy broadcasting; a and b may be Tensors, numbers or array-likes. The gradient"
        "of a broadcast (stretched) operand is summed back to its shape. Raises ShapeError if the shapes do not"
        "broadcast.",
    sub: "a - b, elementwise with numpy broadcasting (see add).",
    mul: "a * b, elementwise with numpy broadcasting (see add).",
    div: "a / b, elementwise with numpy broadcasting (see add); dividing by zero gives inf or NaN, as in numpy.",
    maximum: "Elementwise maximum of a and b, with numpy broadcasting (see add); NaN if either is NaN, as in numpy."
        "A tie splits the gradient evenly between a and b, as in torch.",
    minimum: "Elementwise minimum of a and b, with numpy broadcasting (see add); NaN if either is NaN, as in numpy."
        "A tie splits the gradient evenly between a and b, as in torch.",
    matmul: "Matrix product over the last two axes: [..., M, K] @ [..., K, N] -> [..., M, N]. As in numpy, a vector operand is a row on the left and a column on the right, its axis dropped from the result."
        "The leading (batch) axes broadcast as numpy's do (an operand without them is shared by every batch);"
        "each operand's gradient sums over the batches it was stretched to. Raises ShapeError otherwise.",
}

/// `x ** exponent`, elementwise. A float exponent: the gradient is exponent·x**(exponent - 1), and 0 everywhere
/// when the exponent is 0. A tensor (or array-like) exponent broadcasts with x as in add; its gradient is
/// x**exponent·ln(x) (0 where x is 0 and the exponent ≥ 0, as in torch). A negative x with a non-integer
/// exponent gives NaN, as in numpy.
#[pyfunction]
pub fn pow(py: Python<'_>, x: &Bound<'_, PyAny>, exponent: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let x = to_tensor(x)?;
    // A Python number is a constant exponent; a Tensor, even of one element, may want its gradient.
    if exponent.is_instance_of::<PyFloat>() || exponent.is_instance_of::<PyInt>() {
        let p = exponent.extract::<f32>()?;
        return run(py, || ops::pow(&x, p));
    }
    let p = to_tensor(exponent)?;
    run(py, || ops::power(&x, &p))
}

/// Rounds x to `decimals` decimal places (negative: to tens, hundreds, …), halves to even, as numpy's and torch's
/// round, and computed as they do in float32: round(x·10**d) / 10**d, or round(x / 10**-d)·10**-d for negative d.
/// Its gradient is 0.
#[pyfunction]
#[pyo3(signature = (x, decimals = 0))]
pub fn round(py: Python<'_>, x: PyTensor, decimals: i32) -> PyResult<PyTensor> {
    run(py, || ops::round(&x.0, decimals))
}

/// Limits x to [min, max], elementwise; either bound may be None (no limit on that side). The gradient passes where
/// min < x < max, and is 0 at a bound and outside, as in PyTorch 2.15 (and as relu's at 0). Raises ValueError if
/// min > max.
#[pyfunction]
#[pyo3(signature = (x, min = None, max = None))]
fn clamp(py: Python<'_>, x: PyTensor, min: Option<Constant>, max: Option<Constant>) -> PyResult<PyTensor> {
    run(py, || ops::clamp(&x.0, min.map(|c| c.0), max.map(|c| c.0)))
}

/// `a` where `cond` holds, else `b`, elementwise; cond, a and b broadcast together (numpy rules). cond is a boolean
/// mask (array-like or Tensor, of booleans or 0 and 1) and takes no gradient; a and b may be Tensors, numbers or
/// array-likes, and each receives the gradient of the positions it was picked for.
#[pyfunction]
#[pyo3(name = "where")]
fn where_(py: Python<'_>, cond: &Bound<'_, PyAny>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let cond = mask_tensor(cond)?;
    let (a, b) = (to_tensor(a)?, to_tensor(b)?);
    run(py, || ops::where_(&cond, &a, &b))
}

/// `x` with `value` wherever `mask` is True. mask is an array-like or Tensor of booleans or 0 and 1 that must
/// broadcast to x's shape (ShapeError otherwise). Filled positions get zero gradient, never NaN, so value=-inf is
/// safe before a softmax.
#[pyfunction]
fn masked_fill(py: Python<'_>, x: PyTensor, mask: &Bound<'_, PyAny>, value: Constant) -> PyResult<PyTensor> {
    let mask = mask_tensor(mask)?;
    run(py, || ops::masked_fill(&x.0, &mask, value.0))
}

/// A boolean array-like as a 0/1 tensor (masks take no gradient).
fn mask_tensor(obj: &Bound<'_, PyAny>) -> PyResult<ferrolm::Tensor> {
    let (mask, shape) = to_mask(obj)?;
    Ok(ferrolm::Tensor::from_vec(mask.iter().map(|&m| m as u8 as f32).collect(), &shape).expect("mask matches shape"))
}

/// Sum over `axis` (negative counts from the end), dropping that axis unless keepdim. With axis=None (the default)
/// the sum of all elements: a 0-d tensor, or with keepdim one of shape (1,) * x.ndim.
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdim = false))]
fn sum(py: Python<'_>, x: PyTensor, axis: Option<Axis>, keepdim: bool) -> PyResult<PyTensor> {
    run(py, || ops::reduce(&x.0, ops::Reduce::Sum, axis.map(|a| a.0), keepdim))
}

/// Mean over `axis` (negative counts from the end), dropping that axis unless keepdim; NaN over an empty axis, as in
/// numpy. With axis=None (the default) the mean of all elements (NaN if x is empty): a 0-d tensor, or with keepdim
/// one of shape (1,) * x.ndim.
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdim = false))]
fn mean(py: Python<'_>, x: PyTensor, axis: Option<Axis>, keepdim: bool) -> PyResult<PyTensor> {
    run(py, || ops::reduce(&x.0, ops::Reduce::Mean, axis.map(|a| a.0), keepdim))
}

/// Maximum over `axis` (negative counts from the end), dropping that axis unless keepdim. With axis=None (the
/// default, as for sum and mean) the maximum of all elements: a 0-d tensor, or with keepdim one of shape
/// (1,) * x.ndim. NaN wins over numbers. The gradient flows to the first position holding the maximum. Raises
/// ShapeError when the reduced axis is empty.
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdim = false))]
fn max(py: Python<'_>, x: PyTensor, axis: Option<Axis>, keepdim: bool) -> PyResult<PyTensor> {
    run(py, || ops::reduce(&x.0, ops::Reduce::Max, axis.map(|a| a.0), keepdim))
}

/// The same elements in `shape` (a sequence of ints; at most one may be -1, inferred from the others). No copy: the
/// result shares x's storage. Raises ShapeError if the element count does not fit the shape.
#[pyfunction]
fn reshape(py: Python<'_>, x: PyTensor, shape: Vec<isize>) -> PyResult<PyTensor> {
    run(py, || ops::reshape(&x.0, &shape))
}

/// Reorders the axes (a copy): output axis i is input axis `dims[i]`, with negative dims counting from the end. dims
/// must be a permutation of x's axes (ValueError otherwise; IndexError for a negative dim out of range).
#[pyfunction]
fn permute(py: Python<'_>, x: PyTensor, dims: Vec<isize>) -> PyResult<PyTensor> {
    let dims = crate::tensor::dims_arg(&dims, x.0.rank())?;
    run(py, || ops::permute(&x.0, &dims))
}

/// Swaps axes dim0 and dim1 (a copy); by default the last two. Negative axes count from the end.
#[pyfunction]
#[pyo3(signature = (x, dim0 = Axis(-2), dim1 = Axis(-1)), text_signature = "(x, dim0=-2, dim1=-1)")]
fn transpose(py: Python<'_>, x: PyTensor, dim0: Axis, dim1: Axis) -> PyResult<PyTensor> {
    run(py, || ops::transpose(&x.0, dim0.0, dim1.0))
}

/// `length` entries of `axis` starting at `start` (negative counts from the end, as in torch; a copy, and the
/// gradient flows back into that slice). Raises IndexError if they do not fit in the axis.
#[pyfunction]
fn narrow(py: Python<'_>, x: PyTensor, axis: Axis, start: i128, length: usize) -> PyResult<PyTensor> {
    let axis = axis.0;
    let size = x.0.shape()[ferrolm::tensor::resolve_axis(axis, x.0.rank()).py()?];
    let from = usize::try_from(if start < 0 { start + size as i128 } else { start }).map_err(|_| {
        PyIndexError::new_err(format!("narrow: start {start} is out of range for an axis of size {size}"))
    })?;
    run(py, || ops::narrow(&x.0, axis, from, length))
}

/// Joins a sequence of Tensors along an existing `axis` (default 0); all other dimensions must agree (ShapeError
/// otherwise). Raises ValueError for an empty sequence.
#[pyfunction]
#[pyo3(signature = (tensors, axis = Axis(0)), text_signature = "(tensors, axis=0)")]
fn concat(py: Python<'_>, tensors: Vec<PyTensor>, axis: Axis) -> PyResult<PyTensor> {
    let ts: Vec<_> = tensors.into_iter().map(|t| t.0).collect();
    run(py, || ops::concat(&ts, axis.0))
}

/// Joins a sequence of equally shaped Tensors along a new `axis` (default 0; -1 adds a last axis). Raises ShapeError
/// if the shapes differ, ValueError for an empty sequence.
#[pyfunction]
#[pyo3(signature = (tensors, axis = Axis(0)), text_signature = "(tensors, axis=0)")]
fn stack(py: Python<'_>, tensors: Vec<PyTensor>, axis: Axis) -> PyResult<PyTensor> {
    let ts: Vec<_> = tensors.into_iter().map(|t| t.0).collect();
    run(py, || ops::stack(&ts, axis.0))
}

/// Rows of `weight` [V, C] for integer `ids` of any shape, giving ids.shape + (C,). The gradient is scatter-added
/// into weight's rows (repeated ids add up). Ids outside 0..V raise IndexError.
#[pyfunction]
fn embedding(py: Python<'_>, weight: PyTensor, ids: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (ids, shape) = to_ids(ids)?;
    run(py, || ops::embedding(&weight.0, &ids, &shape))
}

/// Entries `ids` (a one-dimensional integer array) of `axis`: the result has len(ids) entries along that axis, and
/// repeated ids add up in the gradient. Raises IndexError for an id out of range, ValueError if ids has more than
/// one dimension.
#[pyfunction]
fn index_select(py: Python<'_>, x: PyTensor, axis: Axis, ids: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (ids, shape) = to_ids(ids)?;
    if shape.len() > 1 {
        return Err(ShapeError::new_err(format!("index_select: ids must be one-dimensional, got shape {shape:?}")));
    }
    run(py, || ops::index_select(&x.0, axis.0, &ids))
}

/// torch.gather: out[..., j, ...] = x[..., index[..., j, ...], ...] along `axis`. `index` is an integer array of
/// x's rank and shape except along `axis` (any length there); the result has index's shape (ShapeError otherwise).
/// Out-of-range indices raise IndexError. E.g. each chosen token's log-prob: gather(logp, -1, ids[..., None]).
#[pyfunction]
fn gather(py: Python<'_>, x: PyTensor, axis: Axis, index: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (idx, shape) = to_ids(index)?;
    run(py, || ops::gather(&x.0, axis.0, &idx, &shape))
}

/// exp(x) / sum(exp(x)) along `axis` (default -1, the last axis), computed stably (the maximum is subtracted
/// first). A slice that is entirely -inf (fully masked) gives zeros, not NaN.
#[pyfunction]
#[pyo3(signature = (x, axis = Axis(-1)), text_signature = "(x, axis=-1)")]
fn softmax(py: Python<'_>, x: PyTensor, axis: Axis) -> PyResult<PyTensor> {
    run(py, || ops::softmax(&x.0, axis.0))
}

/// x - log(sum(exp(x))) along `axis` (default -1, the last axis), computed stably (the maximum is subtracted
/// first).
#[pyfunction]
#[pyo3(signature = (x, axis = Axis(-1)), text_signature = "(x, axis=-1)")]
fn log_softmax(py: Python<'_>, x: PyTensor, axis: Axis) -> PyResult<PyTensor> {
    run(py, || ops::log_softmax(&x.0, axis.0))
}

/// (x - mean) / sqrt(var + eps) * weight + bias over the last axis (size C, biased variance). weight and bias are
/// optional `[C]` Tensors (None: no scale, no shift); eps defaults to 1e-5 and must be ≥ 0 (ValueError). Raises
/// ShapeError for an empty last axis or parameters not of shape `[C]`.
#[pyfunction]
#[pyo3(signature = (x, weight = None, bias = None, eps = 1e-5))]
fn layer_norm(
    py: Python<'_>,
    x: PyTensor,
    weight: Option<PyTensor>,
    bias: Option<PyTensor>,
    eps: f32,
) -> PyResult<PyTensor> {
    let (w, b) = (weight.map(|w| w.0.clone()), bias.map(|b| b.0.clone()));
    run(py, || ops::layer_norm(&x.0, w.as_ref(), b.as_ref(), eps))
}

/// x @ weight.T + bias for x [..., IN], weight [OUT, IN] (PyTorch's layout) and optional bias `[OUT]`, giving
/// [..., OUT]. Raises ShapeError when the shapes do not fit.
#[pyfunction]
#[pyo3(signature = (x, weight, bias = None))]
fn linear(py: Python<'_>, x: PyTensor, weight: PyTensor, bias: Option<PyTensor>) -> PyResult<PyTensor> {
    let b = bias.map(|b| b.0.clone());
    run(py, || ops::linear(&x.0, &weight.0, b.as_ref()))
}

/// Inverted dropout: zeroes each element with probability p (0 ≤ p < 1, else ValueError) and scales the others by
/// 1 / (1 - p). The mask is a function of `seed` and each element's position: the same seed drops the same elements.
/// Without a seed each call draws a fresh one from the stream manual_seed restarts. With training=False (p not
/// checked) or p=0, returns x unchanged.
#[pyfunction]
#[pyo3(signature = (x, p, seed = None, training = true))]
fn dropout(py: Python<'_>, x: PyTensor, p: f32, seed: Option<Seed>, training: bool) -> PyResult<PyTensor> {
    if !training || p == 0.0 {
        return Ok(PyTensor(x.0.clone())); // and no seed drawn, as for attention's dropout
    }
    let seed = seed_or_next(seed);
    run(py, || ops::dropout(&x.0, p, seed))
}

/// Cross-entropy of `logits` [..., V] (classes on the LAST axis, not PyTorch's axis 1) against integer `targets`
/// shaped like logits.shape[:-1] or flat, one per row. Rows whose target is `ignore_index` (default -100; None ignores
/// nothing) add no loss or gradient. reduction: "mean" over the other rows (0 if none), "sum", or "none" (losses
/// shaped logits.shape[:-1], 0 where ignored). A target outside 0..V raises IndexError, other target shapes ValueError.
#[pyfunction]
#[pyo3(
    signature = (logits, targets, ignore_index = -100, reduction = "mean"),
    text_signature = "(logits, targets, ignore_index=-100, reduction='mean')"
)]
fn cross_entropy(
    py: Python<'_>,
    logits: PyTensor,
    targets: &Bound<'_, PyAny>,
    ignore_index: Option<i64>,
    reduction: &str,
) -> PyResult<PyTensor> {
    let (targets, shape) = to_ids(targets)?;
    // Classes are the last axis: targets are logits.shape[:-1], or those rows flattened. A
    // PyTorch-style [N, T] for logits [N, C, T] (classes on axis 1) would pair the wrong values.
    let rows = &logits.0.shape()[..logits.0.rank().saturating_sub(1)];
    if shape.len() > 1 && shape != rows {
        return Err(PyValueError::new_err(format!(
            "cross_entropy: targets of shape {shape:?} for logits {:?}: give logits.shape[:-1] ({rows:?}) or one \
             flat row per logits row (classes are the last axis)",
            logits.0.shape()
        )));
    }
    let reduction = match reduction {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        other => {
            return Err(PyValueError::new_err(format!("reduction must be 'mean', 'sum' or 'none', got {other:?}")))
        }
    };
    run(py, || ops::cross_entropy(&logits.0, &targets, ignore_index, reduction))
}

/// Attention's key mask, checked to be [B, Tk] (dimensions `batch_axis` and `key_axis` of `keys`), and its
/// dropout.
fn attention_options(
    keys: &Tensor,
    (batch_axis, key_axis): (usize, usize),
    key_padding_mask: Option<&Bound<'_, PyAny>>,
    dropout_p: f32,
    seed: Option<Seed>,
) -> PyResult<(Option<Vec<bool>>, Option<Dropout>)> {
    let dim = |axis: usize| keys.shape().get(axis).copied().unwrap_or(0);
    let mask = mask_of_shape(key_padding_mask, dim(batch_axis), dim(key_axis), "key_padding_mask")?;
    // A seed is drawn only when there is dropout to draw it for.
    let seed = if dropout_p > 0.0 { seed_or_next(seed) } else { seed.map_or(0, |s| s.0) };
    Ok((mask, Dropout::new(dropout_p, seed).py()?))
}

/// Scaled dot-product attention softmax(q·kᵀ/√D)·v over separate heads: q [B, H, Tq, D], k and v [B, H, Tk, D]
/// -> [B, H, Tq, D]. `causal` lets query i see keys 0..=i + Tk - Tq (needs Tq ≤ Tk). `key_padding_mask` [B, Tk] is
/// True for REAL tokens (attended) and False for padding (ignored): the opposite of PyTorch's nn.MultiheadAttention,
/// where True means "ignore". A query that can see no key outputs zeros. `dropout_p` > 0 drops attention
/// probabilities (training), with the mask `dropout(probs, dropout_p, seed)` would draw on them as a [B, H, Tq, Tk]
/// tensor (without a seed, a fresh one from the stream manual_seed restarts).
#[pyfunction]
#[pyo3(signature = (q, k, v, causal = false, key_padding_mask = None, dropout_p = 0.0, seed = None))]
#[allow(clippy::too_many_arguments)]
fn attention(
    py: Python<'_>,
    q: PyTensor,
    k: PyTensor,
    v: PyTensor,
    causal: bool,
    key_padding_mask: Option<&Bound<'_, PyAny>>,
    dropout_p: f32,
    seed: Option<Seed>,
) -> PyResult<PyTensor> {
    let (mask, probs) = attention_options(&k.0, (0, 2), key_padding_mask, dropout_p, seed)?;
    run(py, || ops::attention(&q.0, &k.0, &v.0, causal, mask.as_deref(), probs))
}

/// Multi-head self-attention from a packed projection: `qkv` [B, T, 3C] holds queries, keys and values side by side
/// (each C = n_head·D wide) -> [B, T, C], heads concatenated. Causal by default. `key_padding_mask` [B, T] is True
/// for REAL tokens (attended) and False for padding (ignored): the opposite of PyTorch's nn.MultiheadAttention.
/// `dropout_p` and `seed` drop attention probabilities as in `attention` (the same seed drops the same ones).
#[pyfunction]
#[pyo3(signature = (qkv, n_head, causal = true, key_padding_mask = None, dropout_p = 0.0, seed = None))]
fn attention_qkv(
    py: Python<'_>,
    qkv: PyTensor,
    n_head: usize,
    causal: bool,
    key_padding_mask: Option<&Bound<'_, PyAny>>,
    dropout_p: f32,
    seed: Option<Seed>,
) -> PyResult<PyTensor> {
    let (mask, probs) = attention_options(&qkv.0, (0, 1), key_padding_mask, dropout_p, seed)?;
    run(py, || ops::attention_qkv(&qkv.0, n_head, causal, mask.as_deref(), probs))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => { $( m.add_function(wrap_pyfunction!($f, m)?)?; )* };
    }
    add!(neg, exp, log, sqrt, rsqrt, tanh, sigmoid, log_sigmoid, relu, gelu, gelu_erf, abs, sin, cos, silu);
    add!(add, sub, mul, div, maximum, minimum, matmul, pow, round, clamp, where_, masked_fill);
    add!(sum, mean, max, reshape, permute, transpose, narrow, concat, stack);
    add!(embedding, index_select, gather, softmax, log_softmax, layer_norm, linear, dropout, cross_entropy);
    add!(attention, attention_qkv);
    Ok(())
}
