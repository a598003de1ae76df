//! softmax and log_softmax along an axis, numerically stable (the row maximum is subtracted).

use rayon::prelude::*;

use super::{permute, GRAIN};
use crate::simd::{self, vectorized};
use crate::tensor::{resolve_axis, zeroed, Tensor};
use crate::Result;

/// Rows per parallel task for a row length `n`.
fn rows_per_task(n: usize) -> usize {
    (GRAIN / n.max(1)).max(1)
}

/// Applies a last-axis kernel along any axis by moving that axis last and back.
fn along_axis(x: &Tensor, axis: isize, last_axis_op: fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    let last = x.rank() - 1;
    if axis == last {
        return last_axis_op(x);
    }
    let mut dims: Vec<usize> = (0..x.rank()).collect();
    dims.swap(axis, last);
    permute(&last_axis_op(&permute(x, &dims)?)?, &dims)
}

/// `exp(x) / Σ exp(x)` along `axis`.
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    along_axis(x, axis, softmax_last)
}

/// `x - log Σ exp(x)` along `axis`.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    along_axis(x, axis, log_softmax_last)
}

/// Runs `f(input_row, output_row)` over the rows of the last axis, in parallel.
fn rowwise(x: &[f32], n: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Result<Vec<f32>> {
    rowwise2(x, x, n, |x, _, y| f(x, y))
}

/// Runs `f(a_row, b_row, output_row)` over the rows of two equally shaped buffers, in parallel.
fn rowwise2(a: &[f32], b: &[f32], n: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Result<Vec<f32>> {
    let mut y = zeroed(a.len())?;
    if n > 0 {
        let chunk = rows_per_task(n) * n;
        y.par_chunks_mut(chunk).zip(a.par_chunks(chunk).zip(b.par_chunks(chunk))).for_each(|(y, (a, b))| {
            vectorized(
                #[inline(always)]
                || y.chunks_mut(n).zip(a.chunks(n).zip(b.chunks(n))).for_each(|(y, (a, b))| f(a, b, y)),
            );
        });
    }
    Ok(y)
}

/// Replaces `row` by its softmax; returns log Σ exp(row) in two parts, (max, log Σ exp(row −
/// max)), so log-softmax and cross-entropy can subtract the max first: max + log Σ rounds to
/// max when |max| is huge (1e30). (-inf, 0), with all-zero probabilities, when every entry is
/// -inf (masked out).
/// Inlined so that, inside the callers' `vectorized`, exp and the sums run 16 wide.
#[inline(always)]
pub(crate) fn softmax_in_place(row: &mut [f32]) -> (f32, f32) {
    let Some(max) = unmasked_max(row) else {
        row.fill(0.0);
        return (f32::NEG_INFINITY, 0.0);
    };
    row.iter_mut().for_each(|v| *v = simd::exp(*v - max));
    let sum = simd::sum_zip([row], |[p]| p);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    (max, sum.ln())
}

/// `softmax_in_place`'s (max, ln Σ e^(x − max)) without writing the row (the same sums, so the
/// same bits): what a loss needs of it.
#[inline(always)]
pub(crate) fn max_and_ln_sum(row: &[f32]) -> (f32, f32) {
    match unmasked_max(row) {
        Some(max) => (max, simd::sum_zip([row], |[x]| simd::exp(x - max)).ln()),
        None => (f32::NEG_INFINITY, 0.0),
    }
}

/// The row's maximum, or None when everything is masked (−inf). f32::max skips NaN, so a row
/// of NaN and −inf is not that.
#[inline(always)]
fn unmasked_max(row: &[f32]) -> Option<f32> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    (max != f32::NEG_INFINITY || row.iter().any(|v| v.is_nan())).then_some(max)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let n = *x.shape().last().unwrap_or(&1);
    let y = rowwise(&x.read(), n, |x, y| {
        y.copy_from_slice(x);
        softmax_in_place(y);
    });
    Ok(Tensor::from_op(y?, x.shape().to_vec(), "softmax", &[x], move |ctx| {
        // dx = y ⊙ (g − Σ g⊙y)
        Ok(vec![Some(rowwise2(ctx.grad, ctx.out, n, |g, y, d| {
            let dot = simd::sum_zip([g, y], |[g, y]| g * y);
            d.iter_mut().zip(g.iter().zip(y)).for_each(|(d, (g, y))| *d = y * (g - dot));
        })?)])
    }))
}

fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let n = *x.shape().last().unwrap_or(&1);
    let y = rowwise(&x.read(), n, |x, y| {
        y.copy_from_slice(x);
        let (max, ln_sum) = softmax_in_place(y);
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x - max) - ln_sum);
    });
    Ok(Tensor::from_op(y?, x.shape().to_vec(), "log_softmax", &[x], move |ctx| {
        // dx = g − softmax ⊙ Σ g, with softmax = exp(y)
        Ok(vec![Some(rowwise2(ctx.grad, ctx.out, n, |g, y, d| {
            let total = simd::sum_zip([g], |[g]| g);
            d.iter_mut().zip(g.iter().zip(y)).for_each(|(d, (g, y))| *d = g - simd::exp(*y) * total);
        })?)])
    }))
}
