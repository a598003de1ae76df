//! Reductions over one axis (sum, mean, max, with or without keeping the axis) and over all
//! elements. Parallel sums use fixed-size chunks so results do not depend on the thread count.

use rayon::prelude::*;

use super::{split_at_axis, GRAIN};
use crate::simd::vectorized;
use crate::tensor::{resolve_axis, zeroed, zeros_for, Tensor};
use crate::{ensure, Result};

/// The output shape of reducing `axis` of `shape`.
fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut out = shape.to_vec();
    if keepdim {
        out[axis] = 1;
    } else {
        out.remove(axis);
    }
    out
}

/// `out[o, i] = Σ_k x[o, k, i]` for x viewed as (outer, n, inner). Parallel over output
/// columns, each summed in k order, so the result does not depend on the thread count.
pub(crate) fn sum_axis_raw(x: &[f32], outer: usize, n: usize, inner: usize) -> Result<Vec<f32>> {
    const COLS: usize = 256;
    let mut out = zeroed(outer * inner)?;
    if inner == 0 {
        return Ok(out);
    }
    if inner == 1 {
        // The last axis: each output sums one contiguous row; rows go to tasks in fixed
        // groups (one task per row cost more than the sums).
        let rows_per_task = (GRAIN / n.max(1)).max(1);
        out.par_chunks_mut(rows_per_task).enumerate().for_each(|(t, sums)| {
            for (r, sum) in sums.iter_mut().enumerate() {
                let row = &x[(t * rows_per_task + r) * n..][..n];
                *sum = vectorized(
                    #[inline(always)]
                    || {
                        // Eight running sums (one vector), then the tail: a fixed order.
                        let mut lanes = [0f64; 8];
                        let mut chunks = row.chunks_exact(8);
                        for c in &mut chunks {
                            lanes.iter_mut().zip(c).for_each(|(l, &v)| *l += v as f64);
                        }
                        lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| v as f64).sum::<f64>()
                    },
                ) as f32;
            }
        });
        return Ok(out);
    }
    out.par_chunks_mut(inner).enumerate().for_each(|(o, row)| {
        row.par_chunks_mut(COLS).enumerate().for_each(|(c, cols)| {
            // Summed in f64: a float32 running sum of 2^25 ones stops at 2^24.
            let mut acc = [0f64; COLS];
            let acc = &mut acc[..cols.len()];
            vectorized(
                #[inline(always)]
                || {
                    for k in 0..n {
                        let src = &x[(o * n + k) * inner + c * COLS..][..acc.len()];
                        acc.iter_mut().zip(src).for_each(|(a, &s)| *a += s as f64);
                    }
                },
            );
            cols.iter_mut().zip(acc.iter()).for_each(|(r, &a)| *r = a as f32);
        });
    });
    Ok(out)
}

/// Spreads a reduced gradient `g[o, i]` back over (outer, n, inner), times `scale`.
fn expand_axis(g: &[f32], outer: usize, n: usize, inner: usize, scale: f32) -> Result<Vec<f32>> {
    let mut out = zeroed(outer * n * inner)?;
    if inner == 0 || n == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(n * inner).enumerate().for_each(|(o, block)| {
        let src = &g[o * inner..][..inner];
        for row in block.chunks_mut(inner) {
            row.iter_mut().zip(src).for_each(|(r, s)| *r = s * scale);
        }
    });
    Ok(out)
}

/// Sum over `axis` (negative counts from the end).
pub fn sum(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    sum_scaled(x, axis, keepdim, false)
}

/// Mean over `axis` (negative counts from the end).
pub fn mean(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    sum_scaled(x, axis, keepdim, true)
}

fn sum_scaled(x: &Tensor, axis: isize, keepdim: bool, average: bool) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    // A mean over an empty axis is 0 · (1/0): NaN, as numpy and PyTorch give.
    let scale = if average { 1.0 / n as f32 } else { 1.0 };
    // An empty input sums to zeros, which can be far more than the input holds (a [2⁴⁰, 0]
    // tensor): allocated fallibly.
    let mut y = if n == 0 { zeros_for(&[outer, inner])? } else { sum_axis_raw(&x.read(), outer, n, inner)? };
    if average {
        y.iter_mut().for_each(|v| *v *= scale);
    }
    let op = if average { "mean" } else { "sum" };
    Ok(Tensor::from_op(y, reduced_shape(x.shape(), axis, keepdim), op, &[x], move |ctx| {
        Ok(vec![Some(expand_axis(ctx.grad, outer, n, inner, scale)?)])
    }))
}

/// Maximum over `axis`; the gradient flows to the first position holding the maximum.
pub fn max(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let argmax = argmax_along(x, axis)?;
    let data = x.read();
    let y = argmax.iter().enumerate().map(|(j, &k)| data[((j / inner) * n + k) * inner + j % inner]).collect();
    drop(data);
    Ok(Tensor::from_op(y, reduced_shape(x.shape(), axis, keepdim), "max", &[x], move |ctx| {
        let mut g = zeroed(outer * n * inner)?;
        for (j, &k) in argmax.iter().enumerate() {
            g[((j / inner) * n + k) * inner + j % inner] = ctx.grad[j];
        }
        Ok(vec![Some(g)])
    }))
}

/// Where along `axis` the largest elements are (the first on a tie; a NaN wins), with the
/// shape `max(x, axis, keepdim)` has: the positions `max` takes its values and gradient from.
pub fn argmax(x: &Tensor, axis: isize, keepdim: bool) -> Result<(Vec<usize>, Vec<usize>)> {
    let axis = resolve_axis(axis, x.rank())?;
    Ok((argmax_along(x, axis)?, reduced_shape(x.shape(), axis, keepdim)))
}

fn argmax_along(x: &Tensor, axis: usize) -> Result<Vec<usize>> {
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    ensure!(n > 0, Shape, "max over an empty axis {axis} of shape {:?}", x.shape());
    let data = x.read();
    Ok((0..outer * inner)
        .into_par_iter()
        .map(|j| {
            let (o, i) = (j / inner, j % inner);
            let at = |k: usize| data[(o * n + k) * inner + i];
            // NaN wins, so a NaN input is visible in the output rather than hidden.
            (1..n).fold(0, |best, k| if at(k) > at(best) || (at(k).is_nan() && !at(best).is_nan()) { k } else { best })
        })
        .collect())
}

/// Sum of all elements as a scalar (accumulated in f64 per fixed chunk).
pub fn sum_all(x: &Tensor) -> Tensor {
    total(x, "sum_all", 1.0)
}

/// Mean of all elements as a scalar (NaN for an empty tensor, as in numpy).
pub fn mean_all(x: &Tensor) -> Tensor {
    total(x, "mean_all", 1.0 / x.numel() as f32)
}

/// The reductions that take an optional axis.
#[derive(Clone, Copy, Debug)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

/// `how` over `axis` (dropped unless keepdim), or over every element when it is None: a scalar,
/// or with keepdim a tensor of shape (1, …, 1), as numpy and PyTorch give.
pub fn reduce(x: &Tensor, how: Reduce, axis: Option<isize>, keepdim: bool) -> Result<Tensor> {
    let Some(a) = axis else {
        let all = match how {
            Reduce::Sum => sum_all(x),
            Reduce::Mean => mean_all(x),
            Reduce::Max => max(&super::reshape(x, &[-1])?, 0, false)?,
        };
        return if keepdim { super::reshape(&all, &vec![1; x.rank()]) } else { Ok(all) };
    };
    match how {
        Reduce::Sum => sum(x, a, keepdim),
        Reduce::Mean => mean(x, a, keepdim),
        Reduce::Max => max(x, a, keepdim),
    }
}

fn total(x: &Tensor, op: &'static str, scale: f32) -> Tensor {
    // Folded from +0.0: Rust's float `sum` starts at -0.0, which an empty tensor's sum showed.
    let add = |s: f64, v: f64| s + v;
    let chunks: Vec<f64> = x.read().par_chunks(GRAIN).map(|c| c.iter().map(|&v| v as f64).fold(0.0, add)).collect();
    let s = chunks.into_iter().fold(0.0, add);
    let n = x.numel();
    Tensor::from_op(vec![(s * scale as f64) as f32], vec![], op, &[x], move |ctx| {
        Ok(vec![Some(vec![ctx.grad[0] * scale; n])])
    })
}
