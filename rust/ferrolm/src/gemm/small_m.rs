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
                    // Column j of B is contiguous: a dot product per output. When B is small
                    // enough to stay in cache, four at a time on AVX-512 so their chains of adds
                    // overlap (baby GPT decoding 1.5x faster); a B streamed from memory is read
                    // a column at a time, in memory order (four interleaved measured 30% slower).
                    let col = |j: usize| &b.data[(j0 + j) * b.col_stride..][..k];
                    let mut done = 0;
                    #[cfg(target_arch = "x86_64")]
                    if crate::simd::avx512() && k * n < PARALLEL_MIN_B {
                        for (g, o) in out.chunks_exact_mut(4).enumerate() {
                            // SAFETY: simd::avx512() checked that this CPU has AVX-512F.
                            let d = unsafe {
                                dots4_avx512(x, [col(4 * g), col(4 * g + 1), col(4 * g + 2), col(4 * g + 3)])
                            };
                            for (o, d) in o.iter_mut().zip(d) {
                                *o = if accumulate { *o + d } else { d };
                            }
                        }
                        done = out.len() / 4 * 4;
                    }
                    for (dj, o) in out.iter_mut().enumerate().skip(done) {
                        let d = dot(x, col(dj));
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

/// `Σ col·x` for four columns at once: one 16-lane chain each, so the four overlap.
///
/// # Safety
/// The CPU must have AVX-512F; the columns are as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots4_avx512(x: &[f32], cols: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let full = x.len() / 16 * 16;
    let mut acc = [_mm512_setzero_ps(); 4];
    for i in (0..full).step_by(16) {
        let xv = _mm512_loadu_ps(x.as_ptr().add(i));
        for (acc, col) in acc.iter_mut().zip(cols) {
            *acc = _mm512_fmadd_ps(xv, _mm512_loadu_ps(col.as_ptr().add(i)), *acc);
        }
    }
    let mut out = [0.0; 4];
    for ((o, acc), col) in out.iter_mut().zip(acc).zip(cols) {
        *o = _mm512_reduce_add_ps(acc) + x[full..].iter().zip(&col[full..]).map(|(a, b)| a * b).sum::<f32>();
    }
    out
}
