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

/// Rows of A below which this path beats packing (a 6-layer model's products per token, f32:
/// 12 rows 2.4 ms here and 3.5-3.8 packed; at 16 they are even, in bf16 packing is ahead).
pub(super) const MAX_ROWS: usize = 16;

/// The same for X·W (B's rows contiguous), where each row of C streams B by itself: packing B
/// took over from 3 rows (measured: 3 rows of a 1536×384 B, 131 µs here and 103 µs packed).
const MAX_ROWS_BY_ROWS: usize = 3;

/// Columns of C per parallel task: few enough that a 384-wide layer splits evenly over two
/// cores (256 gave one core twice the other's: a 6-layer model's 4-row products per token took
/// 1.6-1.8 ms instead of 1.3-1.5).
const COLS_PER_TASK: usize = 64;

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
    if a.rows >= MAX_ROWS_BY_ROWS {
        return false;
    }
    for_each_task(a, n, 4 * k * n, c, ldc, may_parallelise, |xs, j0, outs| {
        vectorized(
            #[inline(always)]
            || {
                // Row p of B is contiguous: out_i += x_i[p] · B[p, j0..].
                if !accumulate {
                    outs.iter_mut().for_each(|out| out.fill(0.0));
                }
                let width = outs[0].len();
                for (x, out) in xs.iter().zip(outs.iter_mut()) {
                    for (p, &xp) in x.iter().enumerate() {
                        let src = &b.data[p * b.row_stride + j0..][..width];
                        out.iter_mut().zip(src).for_each(|(o, &s)| *o += xp * s);
                    }
                }
            },
        )
    });
    true
}

/// `C (+)= A·Wᵀ` for W [n, k] given as bfloat16 bits, row-major (a weight's bf16 copy), with A's
/// rows contiguous. The caller (`gemm::multiply_bf16_weight`) checked the shapes.
pub(super) fn multiply_bf16(a: MatRef, w: &[u16], n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
    let k = a.cols;
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
    for_each_task(a, n, bytes, c, ldc, may_parallelise, |xs, j0, outs| {
        vectorized(
            #[inline(always)]
            || {
                let col = |j: usize| column(j0 + j);
                let width = outs[0].len();
                let mut put = |j: usize, i: usize, d: f32| {
                    let o = &mut outs[i][j];
                    *o = if accumulate { *o + d } else { d };
                };
                // Each column is read from memory once, for every row of A, up to four rows per
                // call so the chains of adds overlap and each load of B feeds several rows. Four
                // columns at a time, the next four prefetched (4 rows of a 6-layer model: 1.6-1.8 ms
                // per token instead of 2.5-2.75 without); except that up to three rows streaming
                // B from memory read it a column at a time, in memory order, which the hardware
                // prefetches by itself (four columns interleaved: a 6-layer model's one-row
                // products per token took 1.84 ms instead of 1.12, and two rows' steps 2.6-2.8
                // instead of 1.6; prefetching the next column too: 617-647 tokens/s instead of
                // 745-790). Every element sums alike whatever the block, so a row's result does
                // not depend on the rows beside it.
                #[cfg(target_arch = "x86_64")]
                if crate::simd::avx512() {
                    let four = bytes < PARALLEL_MIN_BYTES || xs.len() >= 4;
                    let blocked = if four { width / 4 * 4 } else { 0 };
                    for j in (0..blocked).step_by(4) {
                        let cols = [col(j), col(j + 1), col(j + 2), col(j + 3)];
                        let next = if j + 4 < blocked { j + 4 } else { j };
                        let ahead = [col(next), col(next + 1), col(next + 2), col(next + 3)];
                        // SAFETY: simd::avx512() checked that this CPU has AVX-512F.
                        unsafe { dots_block(xs, cols, ahead, |l, i, d| put(j + l, i, d)) };
                    }
                    for j in blocked..width {
                        // SAFETY: as above.
                        unsafe { dots_block(xs, [col(j)], [col(j)], |_, i, d| put(j, i, d)) };
                    }
                    return;
                }
                for j in 0..width {
                    for (i, x) in xs.iter().enumerate() {
                        put(j, i, dot(x, col(j)));
                    }
                }
            },
        )
    });
}

/// Runs `task(xs, j0, outs)` over the column blocks of C, with `xs` the rows of A and `outs`
/// columns j0.. of each row of C; the blocks in parallel when B (`bytes`) is large enough to be
/// worth a second core.
fn for_each_task(
    a: MatRef,
    n: usize,
    bytes: usize,
    c: &mut [f32],
    ldc: usize,
    may_parallelise: bool,
    task: impl Fn(&[&[f32]], usize, &mut [&mut [f32]]) + Sync,
) {
    if a.rows == 0 || n == 0 {
        return;
    }
    let parallel = may_parallelise && bytes >= PARALLEL_MIN_BYTES && n > COLS_PER_TASK;
    let width = if parallel { COLS_PER_TASK } else { n }; // one task when there is one thread
    let xs: Vec<&[f32]> = (0..a.rows).map(|i| &a.data[i * a.row_stride..][..a.cols]).collect();
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(width)).map(|_| Vec::new()).collect();
    for row in c.chunks_mut(ldc).take(a.rows) {
        for (block, out) in blocks.iter_mut().zip(row[..n].chunks_mut(width)) {
            block.push(out);
        }
    }
    let run = |(t, mut outs): (usize, Vec<&mut [f32]>)| task(&xs, t * width, &mut outs);
    if parallel {
        blocks.into_par_iter().enumerate().for_each(run);
    } else {
        blocks.into_iter().enumerate().for_each(run);
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

/// `put(l, i, Σ cols[l]·xs[i])` for every row of `xs`, four rows per kernel call, prefetching
/// `ahead`: the columns read next, or `cols` themselves where none should be (prefetching lines
/// being read costs next to nothing; an `Option` tested in the kernel's loop cost the baby
/// model's decoding a fifth of its speed).
///
/// # Safety
/// The CPU must have AVX-512F; the columns, `ahead`'s and the rows have the same length.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_block<E: Element, const C: usize>(
    xs: &[&[f32]],
    cols: [&[E]; C],
    ahead: [&[E]; C],
    mut put: impl FnMut(usize, usize, f32),
) {
    for (r, rows) in xs.chunks(4).enumerate() {
        let mut emit = |d: &[[f32; C]]| {
            for (i, d) in d.iter().enumerate() {
                d.iter().enumerate().for_each(|(l, &d)| put(l, 4 * r + i, d));
            }
        };
        // SAFETY: as the caller promises.
        unsafe {
            match *rows {
                [a, b, c, d] => emit(&dots_avx512::<E, 4, C>([a, b, c, d], cols, ahead)),
                [a, b, c] => emit(&dots_avx512::<E, 3, C>([a, b, c], cols, ahead)),
                [a, b] => emit(&dots_avx512::<E, 2, C>([a, b], cols, ahead)),
                _ => emit(&dots_avx512::<E, 1, C>([rows[0]], cols, ahead)),
            }
        }
    }
}

/// `Σ col·x` for C columns and R rows x at once: one 16-lane chain each, so they overlap,
/// and each load of a column feeds every row; `ahead`'s lines are prefetched as `cols`' are
/// read. Every element sums alike whatever C and R.
///
/// # Safety
/// The CPU must have AVX-512F; the columns, `ahead`'s and the rows have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512<E: Element, const R: usize, const C: usize>(
    xs: [&[f32]; R],
    cols: [&[E]; C],
    ahead: [&[E]; C],
) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let k = cols[0].len();
    let full = k / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for i in (0..full).step_by(16) {
        let w = cols.map(|col| E::load16(col.as_ptr().add(i)));
        for a in ahead {
            _mm_prefetch::<_MM_HINT_T0>(a.as_ptr().add(i).cast());
        }
        for (acc, x) in acc.iter_mut().zip(xs) {
            let xv = _mm512_loadu_ps(x.as_ptr().add(i));
            for (acc, w) in acc.iter_mut().zip(w) {
                *acc = _mm512_fmadd_ps(xv, w, *acc);
            }
        }
    }
    let mut out = [[0.0; C]; R];
    for ((out, acc), x) in out.iter_mut().zip(acc).zip(xs) {
        for ((o, acc), col) in out.iter_mut().zip(acc).zip(cols) {
            *o =
                _mm512_reduce_add_ps(acc) + x[full..].iter().zip(&col[full..]).map(|(a, b)| a * b.value()).sum::<f32>();
        }
    }
    out
}
