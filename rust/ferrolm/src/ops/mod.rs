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
mod reduce;
mod shape;
mod softmax;

pub use attention::{attention, attention_cached, attention_qkv, KvCache};
pub use dropout::dropout;
pub use elementwise::{
    add, add_scalar, clamp, div, exp, gelu, gelu_erf, log, log_sigmoid, masked_fill, maximum, minimum, mul, mul_scalar,
    neg, pow, relu, rsqrt, sigmoid, sqrt, sub, tanh, where_,
};
pub use index::{embedding, gather, index_select};
pub use loss::{cross_entropy, Reduction};
pub use matmul::{linear, matmul};
pub use norm::layer_norm;
pub use reduce::{max, mean, mean_all, sum, sum_all};
pub use shape::{concat, narrow, permute, reshape, stack, transpose};
pub use softmax::{log_softmax, softmax};

use rayon::prelude::*;

use crate::simd::vectorized;

/// Elements per parallel task: below this, spreading work over threads costs more than it saves.
pub(crate) const GRAIN: usize = 1 << 14;

/// `f` applied to every element, in parallel for large inputs.
pub(crate) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(GRAIN).zip(x.par_chunks(GRAIN)).for_each(|(o, x)| {
        vectorized(
            #[inline(always)]
            || {
                for (i, o) in o.iter_mut().enumerate() {
                    *o = f(x[i]);
                }
            },
        );
    });
    out
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
pub(crate) fn zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![0.0; a.len()];
    out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN).zip(b.par_chunks(GRAIN))).for_each(|(o, (a, b))| {
        vectorized(
            #[inline(always)]
            || {
                let b = &b[..a.len()];
                for (i, o) in o.iter_mut().enumerate() {
                    *o = f(a[i], b[i]);
                }
            },
        );
    });
    out
}

/// `f` applied elementwise to three equally long slices, in parallel for large inputs.
pub(crate) fn zip3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert!(a.len() == b.len() && b.len() == c.len());
    let mut out = vec![0.0; a.len()];
    let inputs = a.par_chunks(GRAIN).zip(b.par_chunks(GRAIN).zip(c.par_chunks(GRAIN)));
    out.par_chunks_mut(GRAIN).zip(inputs).for_each(|(o, (a, (b, c)))| {
        vectorized(
            #[inline(always)]
            || {
                let (b, c) = (&b[..a.len()], &c[..a.len()]);
                for (i, o) in o.iter_mut().enumerate() {
                    *o = f(a[i], b[i], c[i]);
                }
            },
        );
    });
    out
}

/// Splits a shape around `axis` into (elements before, size of axis, elements after).
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}
