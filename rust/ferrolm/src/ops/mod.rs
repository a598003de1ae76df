//! Differentiable operations, one file per family; each op's backward sits next to its forward.
//!
//! Shape letters in comments: B batch, T tokens, C channels, H heads, D head size, V vocab,
//! N rows (flattened leading dimensions).

mod attention;
mod dropout;
mod elementwise;
mod index;
mod loss;
mod matmul;
mod norm;
mod packed_weights;
mod reduce;
mod shape;
mod softmax;

pub use attention::{attention, attention_cached, attention_qkv, KvCache};
pub use dropout::{dropout, Dropout};
pub use elementwise::{
    abs, add, add_scalar, clamp, compare, copy, cos, div, exp, gelu, gelu_erf, log, log_sigmoid, masked_fill, maximum,
    minimum, mul, mul_scalar, neg, pow, power, relu, round, rsqrt, sigmoid, silu, sin, sqrt, sub, tanh, where_,
};
pub use index::{embedding, gather, index_select};
pub use loss::{cross_entropy, Reduction};
pub use matmul::{linear, matmul};
pub use norm::layer_norm;
pub use packed_weights::PackedWeights;
pub use reduce::{argmax, max, mean, mean_all, reduce, sum, sum_all, Reduce};
pub use shape::{concat, narrow, permute, reshape, stack, transpose};
pub use softmax::{log_softmax, softmax};

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::simd::vectorized;
use crate::tensor::reserved;
use crate::Result;

/// Elements per parallel task: below this, spreading work over threads costs more than it saves.
pub(crate) const GRAIN: usize = 1 << 14;

/// A vector of `n` floats made by `fill(i, chunk)` on chunks of `chunk` elements, in parallel;
/// nothing is zeroed first. An error when they cannot be allocated (not an aborted process).
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
pub(crate) unsafe fn filled(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Result<Vec<f32>> {
    // SAFETY: passed on to the caller.
    Ok(unsafe { filled_in(reserved(n)?, n, chunk, fill) })
}

/// [`filled`] into `out`, an empty vector with room for `n` (from [`reserved`]).
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
pub(crate) unsafe fn filled_in(
    mut out: Vec<f32>,
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    debug_assert!(out.is_empty());
    out.spare_capacity_mut()[..n].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, o)| fill(i, o));
    // SAFETY: the chunks cover 0..n and `fill` wrote each of them (a panic would have
    // propagated before this line, leaving the vector empty).
    unsafe { out.set_len(n) };
    out
}

/// `f` applied to every element, in parallel for large inputs (an error when the result cannot
/// be allocated, as for [`zip`] and [`zip3`]).
pub(crate) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Result<Vec<f32>> {
    // SAFETY: the loop writes every element of the chunk (x is as long as the result).
    unsafe {
        filled(x.len(), GRAIN, |i, o| {
            vectorized(
                #[inline(always)]
                || {
                    let x = &x[i * GRAIN..][..o.len()];
                    for (o, &x) in o.iter_mut().zip(x) {
                        o.write(f(x));
                    }
                },
            )
        })
    }
}

/// `acc += g` (gradient accumulation), in parallel for large inputs.
pub(crate) fn add_assign(acc: &mut [f32], g: &[f32]) {
    debug_assert_eq!(acc.len(), g.len());
    acc.par_chunks_mut(GRAIN).zip(g.par_chunks(GRAIN)).for_each(|(acc, g)| {
        vectorized(
            #[inline(always)]
            || acc.iter_mut().zip(g).for_each(|(a, g)| *a += g),
        )
    });
}

/// `f` applied pairwise to two equally long slices, in parallel for large inputs.
pub(crate) fn zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Vec<f32>> {
    assert_eq!(a.len(), b.len());
    // SAFETY: the loop writes every element of the chunk (a and b are as long as the result).
    unsafe {
        filled(a.len(), GRAIN, |i, o| {
            vectorized(
                #[inline(always)]
                || {
                    let (a, b) = (&a[i * GRAIN..][..o.len()], &b[i * GRAIN..][..o.len()]);
                    for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
                        o.write(f(a, b));
                    }
                },
            )
        })
    }
}

/// `f` applied elementwise to three equally long slices, in parallel for large inputs.
pub(crate) fn zip3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Result<Vec<f32>> {
    assert!(a.len() == b.len() && b.len() == c.len());
    // SAFETY: the loop writes every element of the chunk (a, b and c are as long as the result).
    unsafe {
        filled(a.len(), GRAIN, |i, o| {
            vectorized(
                #[inline(always)]
                || {
                    let n = o.len();
                    let (a, b, c) = (&a[i * GRAIN..][..n], &b[i * GRAIN..][..n], &c[i * GRAIN..][..n]);
                    for (o, (&a, (&b, &c))) in o.iter_mut().zip(a.iter().zip(b.iter().zip(c))) {
                        o.write(f(a, b, c));
                    }
                },
            )
        })
    }
}

/// Splits a shape around `axis` into (elements before, size of axis, elements after).
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}
