//! Products with very few rows in A (token-by-token decoding: one row per sequence). Packing B
//! would cost more than the product, so each row of C is computed from B in place: dot
//! products against B's columns when they are contiguous (X·Wᵀ), or a running sum of B's rows
//! when those are (X·W). Threads split the columns of C only, so every element keeps one
//! summation order whatever the thread count.
//!
//! Decoding streams every weight once per token, so its speed is memory's: [`multiply_bf16`]
//! reads a layer's weights from their bfloat16 copy, half the bytes (a 6-layer, 384-wide
//! model's then fit in L3), widened to f32 as they are loaded, the sums staying f32.

use rayon::prelude::*;

use super::MatRef;
use crate::simd::vectorized;

/// Rows of A below which this path beats packing.
pub(super) const MAX_ROWS: usize = 4;

/// Columns of C per parallel task.
const COLS_PER_TASK: usize = 256;

/// Bytes of B from which both cores are used: these products stream B from memory once, so a
/// second core adds bandwidth as soon as B outgrows a core's L2.
const PARALLEL_MIN_BYTES: usize = 1 << 19;

/// An element of B as stored: f32, or bfloat16 bits (the upper half of an f32).
trait Element: Copy + Sync + 'static {
    fn value(self) -> f32;

    /// 16 consecutive elements as f32 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `p` points at 16 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Element for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: as the trait requires.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl Element for u16 {
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: as the trait requires; 16 u16 are the 32 bytes loaded.
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))) }
    }
}

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
    if b.row_stride == 1 {
        let column = |j: usize| &b.data[j * b.col_stride..][..k];
        dot_columns(a, column, n, 4 * k * n, c, ldc, accumulate, may_parallelise);
        return true;
    }
    for_each_task(a, n, 4 * k * n, c, ldc, may_parallelise, |x, j0, out| {
        vectorized(
            #[inline(always)]
            || {
                // Row p of B is contiguous: out += x[p] · B[p, j0..].
                if !accumulate {
                    out.fill(0.0);
                }
                for (p, &xp) in x.iter().enumerate() {
                    let src = &b.data[p * b.row_stride + j0..][..out.len()];
                    out.iter_mut().zip(src).for_each(|(o, &s)| *o += xp * s);
                }
            },
        )
    });
    true
}

/// `C (+)= A·Wᵀ` for W [n, k] given as bfloat16 bits, row-major (a weight's bf16 copy), with A's
/// rows contiguous. The caller checked the shapes.
pub(super) fn multiply_bf16(a: MatRef, w: &[u16], n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
    let k = a.cols;
    debug_assert!(a.col_stride == 1 && w.len() == n * k);
    dot_columns(a, |j| &w[j * k..][..k], n, 2 * k * n, c, ldc, accumulate, true);
}

/// C's row i, element j = x_i · column(j), for B's n columns of k contiguous elements each
/// (`bytes` in all).
#[allow(clippy::too_many_arguments)]
fn dot_columns<'b, E: Element>(
    a: MatRef,
    column: impl Fn(usize) -> &'b [E] + Sync,
    n: usize,
    bytes: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    may_parallelise: bool,
) {
    for_each_task(a, n, bytes, c, ldc, may_parallelise, |x, j0, out| {
        vectorized(
            #[inline(always)]
            || {
                let col = |j: usize| column(j0 + j);
                // When B is small enough to stay in cache, four columns at a time on AVX-512 so their
                // chains of adds overlap (baby GPT decoding 1.5x faster); a B streamed from memory is
                // read a column at a time, in memory order (four interleaved measured 30% slower).
                let mut done = 0;
                #[cfg(target_arch = "x86_64")]
                if crate::simd::avx512() && bytes < PARALLEL_MIN_BYTES {
                    for (g, o) in out.chunks_exact_mut(4).enumerate() {
                        // SAFETY: simd::avx512() checked that this CPU has AVX-512F.
                        let d =
                            unsafe { dots4_avx512(x, [col(4 * g), col(4 * g + 1), col(4 * g + 2), col(4 * g + 3)]) };
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
            },
        )
    });
}

/// Runs `task(x_i, j0, C[i, j0..j0 + len])` over every row i of A and column block of C, the
/// blocks in parallel when B (`bytes`) is large enough to be worth a second core.
fn for_each_task(
    a: MatRef,
    n: usize,
    bytes: usize,
    c: &mut [f32],
    ldc: usize,
    may_parallelise: bool,
    task: impl Fn(&[f32], usize, &mut [f32]) + Sync,
) {
    let k = a.cols;
    for (i, row) in c.chunks_mut(ldc).take(a.rows).enumerate() {
        let x = &a.data[i * a.row_stride..][..k];
        let block = |(t, out): (usize, &mut [f32])| task(x, t * COLS_PER_TASK, out);
        let row = &mut row[..n];
        if may_parallelise && bytes >= PARALLEL_MIN_BYTES && n > COLS_PER_TASK {
            row.par_chunks_mut(COLS_PER_TASK).enumerate().for_each(block);
        } else {
            row.chunks_mut(COLS_PER_TASK).enumerate().for_each(block);
        }
    }
}

/// Σ x·y with 16 independent partial sums (so the loop vectorises and pipelines).
#[inline(always)]
fn dot<E: Element>(x: &[f32], y: &[E]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..16 {
            acc[l] += a[l] * b[l].value();
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b.value()).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ col·x` for four columns at once: one 16-lane chain each, so the four overlap.
///
/// # Safety
/// The CPU must have AVX-512F; the columns are as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots4_avx512<E: Element>(x: &[f32], cols: [&[E]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let full = x.len() / 16 * 16;
    let mut acc = [_mm512_setzero_ps(); 4];
    for i in (0..full).step_by(16) {
        let xv = _mm512_loadu_ps(x.as_ptr().add(i));
        for (acc, col) in acc.iter_mut().zip(cols) {
            *acc = _mm512_fmadd_ps(xv, E::load16(col.as_ptr().add(i)), *acc);
        }
    }
    let mut out = [0.0; 4];
    for ((o, acc), col) in out.iter_mut().zip(acc).zip(cols) {
        *o = _mm512_reduce_add_ps(acc) + x[full..].iter().zip(&col[full..]).map(|(a, b)| a * b.value()).sum::<f32>();
    }
    out
}
