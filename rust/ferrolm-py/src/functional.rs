//! The functional ops (`ferrolm.functional`): argument conversion around `ferrolm::ops`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::wrap_pyfunction;

use ferrolm::ops::{self, Reduction};

use crate::tensor::{run, to_ids, to_mask, to_tensor, PyTensor};

/// Declares `fn name(x: Tensor) -> Tensor` wrappers for unary core ops.
macro_rules! unary {
    ($($name:ident),*) => {$(
        #[pyfunction]
        fn $name(py: Python<'_>, x: PyTensor) -> PyResult<PyTensor> {
            run(py, || Ok(ops::$name(&x.0)))
        }
    )*};
}
unary!(neg, exp, log, sqrt, rsqrt, tanh, sigmoid, log_sigmoid, relu, gelu, gelu_erf, abs, sin, cos, silu);

/// Declares `fn name(a, b) -> Tensor` wrappers for broadcasting binary core ops.
macro_rules! binary {
    ($($name:ident),*) => {$(
        #[pyfunction]
        fn $name(py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
            let (a, b) = (to_tensor(a)?, to_tensor(b)?);
            run(py, || ops::$name(&a, &b))
        }
    )*};
}
binary!(add, sub, mul, div, maximum, minimum, matmul);

#[pyfunction]
fn pow(py: Python<'_>, x: PyTensor, exponent: f32) -> PyResult<PyTensor> {
    run(py, || Ok(ops::pow(&x.0, exponent)))
}

#[pyfunction]
#[pyo3(signature = (x, min = None, max = None))]
fn clamp(py: Python<'_>, x: PyTensor, min: Option<f32>, max: Option<f32>) -> PyResult<PyTensor> {
    run(py, || ops::clamp(&x.0, min, max))
}

#[pyfunction]
#[pyo3(name = "where")]
fn where_(py: Python<'_>, cond: &Bound<'_, PyAny>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let cond = mask_tensor(cond)?;
    let (a, b) = (to_tensor(a)?, to_tensor(b)?);
    run(py, || ops::where_(&cond, &a, &b))
}

#[pyfunction]
fn masked_fill(py: Python<'_>, x: PyTensor, mask: &Bound<'_, PyAny>, value: f32) -> PyResult<PyTensor> {
    let mask = mask_tensor(mask)?;
    run(py, || ops::masked_fill(&x.0, &mask, value))
}

/// A boolean array-like as a 0/1 tensor (masks take no gradient).
fn mask_tensor(obj: &Bound<'_, PyAny>) -> PyResult<ferrolm::Tensor> {
    let (mask, shape) = to_mask(obj)?;
    Ok(ferrolm::Tensor::from_vec(mask.iter().map(|&m| m as u8 as f32).collect(), &shape).expect("mask matches shape"))
}

#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdim = false))]
fn sum(py: Python<'_>, x: PyTensor, axis: Option<isize>, keepdim: bool) -> PyResult<PyTensor> {
    match axis {
        None => run(py, || Ok(ops::sum_all(&x.0))),
        Some(a) => run(py, || ops::sum(&x.0, a, keepdim)),
    }
}

#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdim = false))]
fn mean(py: Python<'_>, x: PyTensor, axis: Option<isize>, keepdim: bool) -> PyResult<PyTensor> {
    match axis {
        None => run(py, || Ok(ops::mean_all(&x.0))),
        Some(a) => run(py, || ops::mean(&x.0, a, keepdim)),
    }
}

// pyo3 renders negative defaults as `...` in `__text_signature__`; `text_signature` spells them out
// (the stubs in python/ferrolm/_core.pyi are checked against it by stubtest).
#[pyfunction]
#[pyo3(signature = (x, axis = Some(-1), keepdim = false), text_signature = "(x, axis=-1, keepdim=False)")]
fn max(py: Python<'_>, x: PyTensor, axis: Option<isize>, keepdim: bool) -> PyResult<PyTensor> {
    run(py, || crate::tensor::max_over(&x.0, axis, keepdim))
}

#[pyfunction]
fn reshape(py: Python<'_>, x: PyTensor, shape: Vec<isize>) -> PyResult<PyTensor> {
    run(py, || ops::reshape(&x.0, &shape))
}

#[pyfunction]
fn permute(py: Python<'_>, x: PyTensor, dims: Vec<isize>) -> PyResult<PyTensor> {
    let dims = crate::tensor::dims_arg(&dims, x.0.rank())?;
    run(py, || ops::permute(&x.0, &dims))
}

#[pyfunction]
#[pyo3(signature = (x, dim0 = -2, dim1 = -1), text_signature = "(x, dim0=-2, dim1=-1)")]
fn transpose(py: Python<'_>, x: PyTensor, dim0: isize, dim1: isize) -> PyResult<PyTensor> {
    run(py, || ops::transpose(&x.0, dim0, dim1))
}

#[pyfunction]
fn narrow(py: Python<'_>, x: PyTensor, axis: isize, start: usize, length: usize) -> PyResult<PyTensor> {
    run(py, || ops::narrow(&x.0, axis, start, length))
}

#[pyfunction]
#[pyo3(signature = (tensors, axis = 0))]
fn concat(py: Python<'_>, tensors: Vec<PyTensor>, axis: isize) -> PyResult<PyTensor> {
    let ts: Vec<_> = tensors.into_iter().map(|t| t.0).collect();
    run(py, || ops::concat(&ts, axis))
}

#[pyfunction]
#[pyo3(signature = (tensors, axis = 0))]
fn stack(py: Python<'_>, tensors: Vec<PyTensor>, axis: isize) -> PyResult<PyTensor> {
    let ts: Vec<_> = tensors.into_iter().map(|t| t.0).collect();
    run(py, || ops::stack(&ts, axis))
}

#[pyfunction]
fn embedding(py: Python<'_>, weight: PyTensor, ids: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (ids, shape) = to_ids(ids)?;
    run(py, || ops::embedding(&weight.0, &ids, &shape))
}

#[pyfunction]
fn index_select(py: Python<'_>, x: PyTensor, axis: isize, ids: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (ids, shape) = to_ids(ids)?;
    if shape.len() > 1 {
        return Err(PyValueError::new_err(format!("index_select: ids must be one-dimensional, got shape {shape:?}")));
    }
    run(py, || ops::index_select(&x.0, axis, &ids))
}

#[pyfunction]
fn gather(py: Python<'_>, x: PyTensor, axis: isize, index: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (idx, shape) = to_ids(index)?;
    run(py, || ops::gather(&x.0, axis, &idx, &shape))
}

#[pyfunction]
#[pyo3(signature = (x, axis = -1), text_signature = "(x, axis=-1)")]
fn softmax(py: Python<'_>, x: PyTensor, axis: isize) -> PyResult<PyTensor> {
    run(py, || ops::softmax(&x.0, axis))
}

#[pyfunction]
#[pyo3(signature = (x, axis = -1), text_signature = "(x, axis=-1)")]
fn log_softmax(py: Python<'_>, x: PyTensor, axis: isize) -> PyResult<PyTensor> {
    run(py, || ops::log_softmax(&x.0, axis))
}

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

#[pyfunction]
#[pyo3(signature = (x, weight, bias = None))]
fn linear(py: Python<'_>, x: PyTensor, weight: PyTensor, bias: Option<PyTensor>) -> PyResult<PyTensor> {
    let b = bias.map(|b| b.0.clone());
    run(py, || ops::linear(&x.0, &weight.0, b.as_ref()))
}

#[pyfunction]
#[pyo3(signature = (x, p, seed, training = true))]
fn dropout(py: Python<'_>, x: PyTensor, p: f32, seed: u64, training: bool) -> PyResult<PyTensor> {
    if !training {
        return Ok(PyTensor(x.0.clone()));
    }
    run(py, || ops::dropout(&x.0, p, seed))
}

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

/// Converts an optional [B, Tk] key mask, checking its shape against the expected one.
fn key_mask(mask: Option<&Bound<'_, PyAny>>, b: usize, tk: usize) -> PyResult<Option<Vec<bool>>> {
    let Some(mask) = mask else { return Ok(None) };
    let (m, shape) = to_mask(mask)?;
    if shape != [b, tk] {
        return Err(PyValueError::new_err(format!("key_padding_mask must have shape ({b}, {tk}), got {shape:?}")));
    }
    Ok(Some(m))
}

#[pyfunction]
#[pyo3(signature = (q, k, v, causal = false, key_padding_mask = None))]
fn attention(
    py: Python<'_>,
    q: PyTensor,
    k: PyTensor,
    v: PyTensor,
    causal: bool,
    key_padding_mask: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let (b, tk) = (k.0.shape().first().copied().unwrap_or(0), k.0.shape().get(2).copied().unwrap_or(0));
    let mask = key_mask(key_padding_mask, b, tk)?;
    run(py, || ops::attention(&q.0, &k.0, &v.0, causal, mask.as_deref()))
}

#[pyfunction]
#[pyo3(signature = (qkv, n_head, causal = true, key_padding_mask = None))]
fn attention_qkv(
    py: Python<'_>,
    qkv: PyTensor,
    n_head: usize,
    causal: bool,
    key_padding_mask: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTensor> {
    let (b, t) = (qkv.0.shape().first().copied().unwrap_or(0), qkv.0.shape().get(1).copied().unwrap_or(0));
    let mask = key_mask(key_padding_mask, b, t)?;
    run(py, || ops::attention_qkv(&qkv.0, n_head, causal, mask.as_deref()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    macro_rules! add {
        ($($f:ident),*) => { $( m.add_function(wrap_pyfunction!($f, m)?)?; )* };
    }
    add!(neg, exp, log, sqrt, rsqrt, tanh, sigmoid, log_sigmoid, relu, gelu, gelu_erf, abs, sin, cos, silu);
    add!(add, sub, mul, div, maximum, minimum, matmul, pow, clamp, where_, masked_fill);
    add!(sum, mean, max, reshape, permute, transpose, narrow, concat, stack);
    add!(embedding, index_select, gather, softmax, log_softmax, layer_norm, linear, dropout, cross_entropy);
    add!(attention, attention_qkv);
    Ok(())
}
