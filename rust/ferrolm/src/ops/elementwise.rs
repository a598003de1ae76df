//! Elementwise ops: unary functions, scalar arithmetic, and broadcasting binary arithmetic.
//!
//! Broadcasting follows numpy: shapes are right-aligned and a dimension of 1 stretches. The
//! gradient of a stretched input is summed back over the stretched dimensions.

use ndarray::{ArrayViewD, Axis, CowArray, IxDyn};
use rayon::prelude::*;

use super::{map, zip, zip3, GRAIN};
use crate::autograd::Grad;
use crate::simd;
use crate::tensor::{copied, zeros_for, Tensor};
use crate::{bail, Result};

// ---------------------------------------------------------------- unary

/// What a unary op's derivative is written in terms of: its input x or its output y. The
/// backward pass reads the gradient and that one array only.
#[derive(Clone, Copy)]
enum DerivativeOf {
    Input,
    Output,
}
use DerivativeOf::{Input, Output};

/// An op `y = f(x)` whose derivative `df` is known in closed form.
fn unary(
    x: &Tensor,
    op: &'static str,
    f: impl Fn(f32) -> f32 + Sync,
    of: DerivativeOf,
    df: impl Fn(f32) -> f32 + Send + Sync + 'static,
) -> Result<Tensor> {
    let y = map(&x.read(), f)?;
    Ok(Tensor::from_op(y, x.shape().to_vec(), op, &[x], move |ctx| {
        let x = ctx.inputs[0].read();
        let at = match of {
            Input => &x[..],
            Output => ctx.out,
        };
        Ok(vec![Some(Grad::Values(zip(
            ctx.grad,
            at,
            #[inline(always)]
            |g, v| g * df(v),
        )?))])
    }))
}

pub fn neg(x: &Tensor) -> Result<Tensor> {
    unary(x, "neg", |x| -x, Input, |_| -1.0)
}

pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(x, "exp", simd::exp, Output, |y| y)
}

/// Natural logarithm (log of a negative number is NaN, of zero -inf, as in numpy).
pub fn log(x: &Tensor) -> Result<Tensor> {
    unary(x, "log", f32::ln, Input, |x| 1.0 / x)
}

pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    unary(x, "sqrt", f32::sqrt, Output, |y| 0.5 / y)
}

pub fn rsqrt(x: &Tensor) -> Result<Tensor> {
    unary(x, "rsqrt", |x| 1.0 / x.sqrt(), Output, |y| -0.5 * y * y * y)
}

pub fn tanh(x: &Tensor) -> Result<Tensor> {
    unary(x, "tanh", simd::tanh, Output, |y| 1.0 - y * y)
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(x, "sigmoid", sigmoid_f, Output, |y| y * (1.0 - y))
}

/// `log σ(x)`, computed without overflow for large |x| (DPO and reward losses need it).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(x, "log_sigmoid", |x| x.min(0.0) - simd::exp(-x.abs()).ln_1p(), Input, |x| sigmoid_f(-x))
}

/// |x|; its gradient at 0 is 0 (the sign), as in PyTorch.
pub fn abs(x: &Tensor) -> Result<Tensor> {
    unary(x, "abs", f32::abs, Input, |x| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    })
}

/// sin x (rotary position embeddings, sinusoidal encodings).
pub fn sin(x: &Tensor) -> Result<Tensor> {
    unary(x, "sin", f32::sin, Input, f32::cos)
}

pub fn cos(x: &Tensor) -> Result<Tensor> {
    unary(x, "cos", f32::cos, Input, |x| -x.sin())
}

/// SiLU (swish), x σ(x): SwiGLU feed-forward layers use it.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary(
        x,
        "silu",
        |x| x * sigmoid_f(x),
        Input,
        |x| {
            let s = sigmoid_f(x);
            s * (1.0 + x * (1.0 - s))
        },
    )
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    // NaN stays NaN, as in numpy and PyTorch (f32::max would turn it into 0).
    unary(x, "relu", |x| if x > 0.0 || x.is_nan() { x } else { 0.0 }, Input, |x| if x > 0.0 { 1.0 } else { 0.0 })
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// GELU with the tanh approximation (GPT-2's `gelu_new`), computed as `x σ(2u)`: the same
/// function as `0.5 x (1 + tanh u)`, with one exp and one division instead of tanh's.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    // u = √(2/π)(x + c x³); σ(2u) = 1 / (1 + e^(−2u)).
    #[inline(always)]
    fn sigmoid_2u(x: f32) -> f32 {
        1.0 / (1.0 + simd::exp(-2.0 * SQRT_2_OVER_PI * x * (1.0 + GELU_C * x * x)))
    }
    unary(
        x,
        "gelu",
        #[inline(always)]
        |x| x * sigmoid_2u(x),
        Input,
        // d/dx x σ(2u) = σ + 2 x σ (1 − σ) u'. Beyond |x| = 20, σ(1 − σ) is exactly 0; clamping x
        // there keeps x² finite, so huge inputs get slope 0 or 1 instead of 0·inf = NaN.
        #[inline(always)]
        |x| {
            let s = sigmoid_2u(x);
            let x = x.clamp(-20.0, 20.0);
            s + 2.0 * x * s * (1.0 - s) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
        },
    )
}

/// Exact GELU, `x Φ(x)` (BERT's `gelu`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    unary(
        x,
        "gelu_erf",
        #[inline(always)]
        |x| 0.5 * x * (1.0 + simd::erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Input,
        // Φ(x) + x φ(x), where φ(x) = e^(−x²/2)/√(2π) is the exp erf(x/√2) takes.
        #[inline(always)]
        |x| {
            let (erf, gauss) = simd::erf_and_gauss(x * std::f32::consts::FRAC_1_SQRT_2);
            0.5 * (1.0 + erf) + x * gauss * 0.398_942_3
        },
    )
}

/// A copy of `x` that stays in the graph (PyTorch's `clone`): its gradient is the output's. As
/// that reads no input, `x` may change in place afterwards (`snapshot = w.clone()`, then an
/// optimizer step on `w`); the copy itself may not (its gradient would pass through values that
/// are no longer `x`'s).
pub fn copy(x: &Tensor) -> Result<Tensor> {
    let data = copied(&x.read())?;
    Ok(Tensor::from_op_watching(data, x.shape().to_vec(), "clone", &[x], |_| Ok(vec![Some(Grad::Output)]), false))
}

pub fn add_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    Ok(Tensor::from_op(map(&x.read(), |x| x + s)?, x.shape().to_vec(), "add_scalar", &[x], |_| {
        Ok(vec![Some(Grad::Output)])
    }))
}

pub fn mul_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary(x, "mul_scalar", move |x| x * s, Input, move |_| s)
}

/// `x ** p` for a scalar exponent.
pub fn pow(x: &Tensor, p: f32) -> Result<Tensor> {
    // d/dx x^0 is 0 everywhere, including at 0 (where 0 · 0^-1 would be NaN).
    unary(x, "pow", move |x| x.powf(p), Input, move |x| if p == 0.0 { 0.0 } else { p * x.powf(p - 1.0) })
}

/// Limits values to `[min, max]` (either bound optional); the gradient flows where the input
/// was strictly inside the bounds, and is 0 at a bound and outside (PPO's ratio clipping relies
/// on the latter), as in PyTorch 2.15 and as `relu` at 0.
pub fn clamp(x: &Tensor, min: Option<f32>, max: Option<f32>) -> Result<Tensor> {
    let (lo, hi) = (min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY));
    if lo.is_nan() || hi.is_nan() || lo > hi {
        bail!(Argument, "clamp: min ({lo}) must not be NaN or greater than max ({hi})");
    }
    // An absent bound passes everything, ±inf included.
    let inside = move |x: f32| (min.is_none() || x > lo) && (max.is_none() || x < hi);
    unary(x, "clamp", move |x| x.clamp(lo, hi), Input, move |x| if inside(x) { 1.0 } else { 0.0 })
}

/// Rounds to `decimals` decimal places (negative: to tens, hundreds, …), halves to even, as
/// numpy and PyTorch do, in f32: `round(x · 10^d) / 10^d`, or for negative d
/// `round(x / 10^-d) · 10^-d` (0.001 is not exact in f32; 1000 is). Its gradient is 0.
pub fn round(x: &Tensor, decimals: i32) -> Result<Tensor> {
    let scale = 10f32.powi(decimals.saturating_abs());
    match decimals {
        0 => unary(x, "round", f32::round_ties_even, Input, |_| 0.0),
        1.. => unary(x, "round", move |x| (x * scale).round_ties_even() / scale, Input, |_| 0.0),
        _ => unary(x, "round", move |x| (x / scale).round_ties_even() * scale, Input, |_| 0.0),
    }
}

#[inline(always)]
pub(crate) fn sigmoid_f(x: f32) -> f32 {
    // e^{-|x|} never overflows; the two branches are the same function on either side of 0.
    let e = simd::exp(-x.abs());
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

// ---------------------------------------------------------------- broadcasting

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => bail!(Shape, "shapes {a:?} and {b:?} cannot be broadcast together"),
        })
        .collect()
}

/// Element strides of `shape` read as the larger broadcast shape `out` (0 along stretched dims).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        strides[pad + i] = if shape[i] == 1 { 0 } else { stride };
        stride *= shape[i];
    }
    strides
}

/// Where flat index `flat` of the shape `out` reads an operand of the given broadcast strides.
pub(crate) fn broadcast_offset(mut flat: usize, out: &[usize], strides: &[usize]) -> usize {
    let mut at = 0;
    for d in (0..out.len()).rev() {
        at += (flat % out[d]) * strides[d];
        flat /= out[d];
    }
    at
}

/// `f(a, b)` over the broadcast shape `out`; stretching can make it far larger than either
/// input, so its buffer is allocated fallibly.
fn zip_broadcast(
    out: &[usize],
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Vec<f32>> {
    if a_shape == out && b_shape == out {
        return zip(a, b, f);
    }
    let mut result = zeros_for(out)?;
    if result.is_empty() {
        return Ok(result);
    }
    let (sa, sb) = (broadcast_strides(a_shape, out), broadcast_strides(b_shape, out));
    let last = *out.last().unwrap_or(&1);
    let (la, lb) = (*sa.last().unwrap_or(&0), *sb.last().unwrap_or(&0));
    let rows_per_task = (GRAIN / last.max(1)).max(1);
    // Each output row (the last dimension) has one starting offset into a and into b.
    result.par_chunks_mut(last.max(1) * rows_per_task).enumerate().for_each(|(task, chunk)| {
        for (r, row) in chunk.chunks_mut(last.max(1)).enumerate() {
            let (row_index, rows) = (task * rows_per_task + r, &out[..out.len().saturating_sub(1)]);
            let (oa, ob) = (broadcast_offset(row_index, rows, &sa), broadcast_offset(row_index, rows, &sb));
            for (j, o) in row.iter_mut().enumerate() {
                *o = f(a[oa + j * la], b[ob + j * lb]);
            }
        }
    });
    Ok(result)
}

/// Sums a gradient of the broadcast shape `from` back to the input shape `to` (handed back
/// as it is when the shapes match).
pub(crate) fn reduce_to(grad: Vec<f32>, from: &[usize], to: &[usize]) -> Vec<f32> {
    if from == to {
        return grad;
    }
    sum_to(&grad, from, to)
}

/// `grad` (shape `from`) summed over the axes along which `to` was broadcast to it.
fn sum_to(grad: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    let pad = from.len() - to.len();
    let mut g = CowArray::from(ArrayViewD::from_shape(IxDyn(from), grad).expect("gradient matches its shape"));
    for axis in 0..from.len() {
        let target = if axis < pad { 1 } else { to[axis - pad] };
        if target == 1 && from[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis)).into();
        }
    }
    g.as_standard_layout().into_owned().into_raw_vec_and_offset().0
}

/// A broadcasting binary op; `backward(grad, a, b, out)` gives both gradients in the broadcast
/// shape (or `None` when not needed), which are then summed back to each input's shape. An
/// output gradient passed on unchanged stays shared where its input was not stretched.
fn binary(
    a: &Tensor,
    b: &Tensor,
    op: &'static str,
    f: impl Fn(f32, f32) -> f32 + Sync,
    backward: impl Fn(&Side, &[f32], &[f32]) -> Result<(Option<Grad>, Option<Grad>)> + Send + Sync + 'static,
) -> Result<Tensor> {
    let out_shape = broadcast_shape(a.shape(), b.shape())?;
    let y = zip_broadcast(&out_shape, &a.read(), a.shape(), &b.read(), b.shape(), f)?;
    let shape = out_shape.clone();
    Ok(Tensor::from_op(y, out_shape, op, &[a, b], move |ctx| {
        let (ta, tb) = (&ctx.inputs[0], &ctx.inputs[1]);
        let (ad, bd) = (ta.read(), tb.read());
        let side = Side {
            out: &shape,
            a: &ad,
            a_shape: ta.shape(),
            b: &bd,
            b_shape: tb.shape(),
            need_a: ctx.needs(0),
            need_b: ctx.needs(1),
        };
        let (ga, gb) = backward(&side, ctx.grad, ctx.out)?;
        let to_input = |g: Grad, to: &[usize]| match g {
            Grad::Output if to == shape.as_slice() => Grad::Output,
            Grad::Output => Grad::Values(sum_to(ctx.grad, &shape, to)),
            Grad::Values(v) => Grad::Values(reduce_to(v, &shape, to)),
        };
        Ok(vec![ga.map(|g| to_input(g, ta.shape())), gb.map(|g| to_input(g, tb.shape()))])
    }))
}

/// The inputs of a binary op as seen from its backward pass.
struct Side<'a> {
    out: &'a [usize],
    a: &'a [f32],
    a_shape: &'a [usize],
    b: &'a [f32],
    b_shape: &'a [usize],
    need_a: bool,
    need_b: bool,
}

impl Side<'_> {
    /// `f(g, a)` over the broadcast shape, if the gradient of the given side is wanted.
    fn with_a(&self, need: bool, g: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Option<Grad>> {
        need.then(|| Ok(Grad::Values(zip_broadcast(self.out, g, self.out, self.a, self.a_shape, f)?))).transpose()
    }
    fn with_b(&self, need: bool, g: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Option<Grad>> {
        need.then(|| Ok(Grad::Values(zip_broadcast(self.out, g, self.out, self.b, self.b_shape, f)?))).transpose()
    }
    /// `f(g, a, b)` over the broadcast shape.
    fn with_ab(&self, need: bool, g: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Result<Option<Grad>> {
        need.then(|| {
            let a = zip_broadcast(self.out, g, self.out, self.a, self.a_shape, |_, a| a)?;
            let b = zip_broadcast(self.out, g, self.out, self.b, self.b_shape, |_, b| b)?;
            Ok(Grad::Values(zip3(g, &a, &b, f)?))
        })
        .transpose()
    }
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        a,
        b,
        "add",
        |a, b| a + b,
        |s, _, _| Ok((s.need_a.then_some(Grad::Output), s.need_b.then_some(Grad::Output))),
    )
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        a,
        b,
        "sub",
        |a, b| a - b,
        |s, g, _| {
            Ok((s.need_a.then_some(Grad::Output), s.need_b.then(|| map(g, |g| -g)).transpose()?.map(Grad::Values)))
        },
    )
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        a,
        b,
        "mul",
        |a, b| a * b,
        |s, g, _| Ok((s.with_b(s.need_a, g, |g, b| g * b)?, s.with_a(s.need_b, g, |g, a| g * a)?)),
    )
}

pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        a,
        b,
        "div",
        |a, b| a / b,
        |s, g, out| {
            let gb = s.need_b.then(|| {
                let g_out = zip(g, out, |g, y| g * y)?;
                zip_broadcast(s.out, &g_out, s.out, s.b, s.b_shape, |gy, b| -gy / b).map(Grad::Values)
            });
            Ok((s.with_b(s.need_a, g, |g, b| g / b)?, gb.transpose()?))
        },
    )
}

/// `a ** b` elementwise with a tensor exponent (numpy's `power`; a negative base with a
/// non-integer exponent is NaN). The base's gradient is `b·a^(b−1)` (0 where b is 0), the
/// exponent's `a^b·ln a` (0 where a is 0 and b ≥ 0, as in torch).
pub fn power(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        a,
        b,
        "power",
        |a, b| a.powf(b),
        |s, g, _| {
            let da = |g: f32, a: f32, b: f32| if b == 0.0 { 0.0 } else { g * b * a.powf(b - 1.0) };
            let db = |g: f32, a: f32, b: f32| if a == 0.0 && b >= 0.0 { 0.0 } else { g * a.powf(b) * a.ln() };
            Ok((s.with_ab(s.need_a, g, da)?, s.with_ab(s.need_b, g, db)?))
        },
    )
}

/// Elementwise maximum (NaN if either is NaN, as in numpy); a tie splits the gradient evenly, as
/// in torch.
pub fn maximum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    extremum(a, b, "maximum", |x, y| x > y)
}

/// Elementwise minimum (NaN if either is NaN, as in numpy); a tie splits the gradient evenly, as
/// in torch.
pub fn minimum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    extremum(a, b, "minimum", |x, y| x < y)
}

/// The operand that `beats` the other, elementwise; its gradient goes to the winner, half to each
/// on a tie.
fn extremum(a: &Tensor, b: &Tensor, op: &'static str, beats: fn(f32, f32) -> bool) -> Result<Tensor> {
    let share = move |g: f32, x: f32, y: f32| {
        if beats(x, y) {
            g
        } else if x == y {
            0.5 * g
        } else {
            0.0
        }
    };
    binary(
        a,
        b,
        op,
        move |a, b| if beats(a, b) || a == b || a.is_nan() { a } else { b },
        move |s, g, _| Ok((s.with_ab(s.need_a, g, share)?, s.with_ab(s.need_b, g, move |g, a, b| share(g, b, a))?)),
    )
}

/// `cond ? a : b` elementwise, all three broadcast together; `cond` is nonzero for true and
/// receives no gradient.
pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out_shape = broadcast_shape(&broadcast_shape(cond.shape(), a.shape())?, b.shape())?;
    let expand = |t: &Tensor| zip_broadcast(&out_shape, &t.read(), t.shape(), &t.read(), t.shape(), |x, _| x);
    let c = expand(cond)?;
    let y = zip3(&c, &expand(a)?, &expand(b)?, |c, a, b| if c != 0.0 { a } else { b })?;
    let shape = out_shape.clone();
    Ok(Tensor::from_op(y, out_shape, "where", &[cond, a, b], move |ctx| {
        let pick = |keep_true: bool, t: &Tensor| -> Result<Grad> {
            let g = zip(ctx.grad, &c, |g, c| if (c != 0.0) == keep_true { g } else { 0.0 })?;
            Ok(reduce_to(g, &shape, t.shape()).into())
        };
        Ok(vec![
            None,
            ctx.needs(1).then(|| pick(true, &ctx.inputs[1])).transpose()?,
            ctx.needs(2).then(|| pick(false, &ctx.inputs[2])).transpose()?,
        ])
    }))
}

/// Elementwise comparison, broadcast: 1.0 where `holds(a, b)`, else 0.0, a mask of the kind
/// `where_` and `masked_fill` take. Not differentiable: the result records no graph.
pub fn compare(a: &Tensor, b: &Tensor, holds: impl Fn(f32, f32) -> bool + Sync) -> Result<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let y = zip_broadcast(&shape, &a.read(), a.shape(), &b.read(), b.shape(), |x, y| f32::from(u8::from(holds(x, y))))?;
    Tensor::from_vec(y, &shape)
}

/// `x` with `value` wherever `mask` (broadcast to x's shape, nonzero = fill) is set. Filling
/// with `-inf` is safe: masked positions receive zero gradient, never NaN.
pub fn masked_fill(x: &Tensor, mask: &Tensor, value: f32) -> Result<Tensor> {
    let out_shape = broadcast_shape(x.shape(), mask.shape())?;
    if out_shape != x.shape() {
        bail!(
            Shape,
            "masked_fill: mask of shape {:?} does not broadcast to the input's shape {:?}",
            mask.shape(),
            x.shape()
        );
    }
    where_(mask, &Tensor::scalar(value), x)
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// Both GELUs against their defining formulas in f64, out to where they saturate.
    #[test]
    fn gelu_values_match_their_formulas() {
        let xs: Vec<f32> = (-6000..=6000).map(|i| i as f32 * 5e-3).chain([-100.0, -30.0, 30.0, 100.0]).collect();
        let x = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap();
        let (tanh_form, erf_form) = (super::gelu(&x).unwrap().to_vec(), super::gelu_erf(&x).unwrap().to_vec());
        for (i, &v) in xs.iter().enumerate() {
            let v = v as f64;
            let want_tanh = 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh());
            let want_erf = 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
            let tol = 1e-6 * (1.0 + v.abs());
            assert!((tanh_form[i] as f64 - want_tanh).abs() < tol, "gelu({v}) = {} want {want_tanh}", tanh_form[i]);
            assert!((erf_form[i] as f64 - want_erf).abs() < tol, "gelu_erf({v}) = {} want {want_erf}", erf_form[i]);
        }
        assert!(super::gelu(&Tensor::from_vec(vec![f32::NAN], &[1]).unwrap()).unwrap().to_vec()[0].is_nan());
    }

    /// The tanh-form GELU's slope against its f64 derivative, huge inputs included.
    #[test]
    fn gelu_slope_matches_its_formula() {
        let xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 1e-2).chain([-1e30, -1e20, 1e20, 1e30]).collect();
        let x = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap().with_grad();
        crate::ops::sum_all(&super::gelu(&x).unwrap()).backward().unwrap();
        let slope = x.grad().unwrap().to_vec();
        for (&v, &got) in xs.iter().zip(&slope) {
            let v = (v as f64).clamp(-50.0, 50.0);
            let (k, c) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
            let t = (k * (v + c * v.powi(3))).tanh();
            let want = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * c * v * v);
            assert!((got as f64 - want).abs() < 2e-6, "gelu'({v}) = {got} want {want}");
        }
    }
}
