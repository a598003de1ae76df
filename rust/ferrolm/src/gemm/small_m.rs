//! Products with very few rows in A (token-by-token decoding: one row per sequence). Packing B
//! would cost more than the product, so each row of C is computed from B in place: dot
//! products against B's columns when they are contiguous (X·Wᵀ), or a running sum of B's rows
//! when those are (X·W). Threads split the columns of C only, so every element keeps one
//! summation order whatever the thread count.

use rayon::prelude::*;

use super::MatRef;
use crate::simd::vectorized;

/// Rows of A below which this path beats packing.
pub(super) const MAX_ROWS: usize = 4;

/// Columns of C per parallel task.
const COLS_PER_TASK: usize = 256;

/// Elements of B from which both cores are used: these products stream B from memory once,
/// so a second core adds bandwidth as soon as B outgrows a core's L2.
const PARALLEL_MIN_B: usize = 1 << 17;

/// Computes C (m × n, row stride ldc) when A's rows and one of B's axes are contiguous;
/// returns false (doing nothing) for other layouts. `may_parallelise` is false when the
/// caller is already running in parallel.
pub(super) fn multiply(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    may_parallelise: bool,
) -> bool {
    if a.col_stride != 1 || (b.row_stride != 1 && b.col_stride != 1) {
        return false;
    }
    let (k, n) = (a.cols, b.cols);
    for (i, row) in c.chunks_mut(ldc).take(a.rows).enumerate() {
        let x = &a.data[i * a.row_stride..][..k];
        let row = &mut row[..n];
        let task = |(t, out): (usize, &mut [f32])| {
            vectorized(|| {
                let j0 = t * COLS_PER_TASK;
                if b.row_stride == 1 {
                    // Column j of B is contiguous: a dot product per output.
                    for (dj, o) in out.iter_mut().enumerate() {
                        let col = &b.data[(j0 + dj) * b.col_stride..][..k];
                        let d = dot(x, col);
                        *o = if accumulate { *o + d } else { d };
                    }
                } else {
                    // Row p of B is contiguous: out += x[p] · B[p, j0..].
                    if !accumulate {
                        out.fill(0.0);
                    }
                    for (p, &xp) in x.iter().enumerate() {
                        let src = &b.data[p * b.row_stride + j0..][..out.len()];
                        out.iter_mut().zip(src).for_each(|(o, &s)| *o += xp * s);
                    }
                }
            })
        };
        if may_parallelise && k * n >= PARALLEL_MIN_B && n > COLS_PER_TASK {
            row.par_chunks_mut(COLS_PER_TASK).enumerate().for_each(task);
        } else {
            row.chunks_mut(COLS_PER_TASK).enumerate().for_each(task);
        }
    }
    true
}

/// Σ x·y with 16 independent partial sums (so the loop vectorises and pipelines).
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..16 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}
