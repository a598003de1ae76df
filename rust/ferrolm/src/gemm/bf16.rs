//! bfloat16 products with f32 sums (`MatmulPrecision::Bf16`): operands are rounded to bfloat16
//! (8 significant bits, f32's range), products and sums stay f32, and so do the results (unlike
//! PyTorch's bf16 autocast, which also rounds the outputs). On AVX512-BF16 CPUs `vdpbf16ps`
//! does twice the multiply-adds of an f32 FMA.
//!
//! Both operands are first converted to *pair* matrices: k is halved and each 32-bit slot holds
//! two consecutive k (the lower half is the even k), zero-padded when k is odd. An `m × k` A
//! becomes `m × ⌈k/2⌉` and a `k × n` B becomes `⌈k/2⌉ × n`, in the layout the packing reads
//! fastest; the blocked product then runs unchanged on them (its packing only moves bits) with
//! the pair kernel. Each element still sums in one fixed order, so results do not depend on the
//! thread count.

use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;

use super::{kernel_avx512 as k, pack, to_bf16, with_buffer, CPtr, Kernel, Line, MatRef, Panels};

/// The pair kernel and its blocking (k steps are pairs, so KC = 256 spans 512 k like the f32
/// kernel's KC = 512, in half the bytes).
pub(super) fn kernel() -> Option<&'static Kernel> {
    static KERNEL: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    KERNEL
        .get_or_init(|| {
            supported().then_some(Kernel {
                mr: k::MR,
                nr: k::NR,
                kc: 256,
                nc: 768,
                tile: k::tile_bf16,
                pack_a: pack::pack_a::<{ k::MR }>,
                pack_b: k::pack_b_panel,
            })
        })
        .as_ref()
}

/// Whether this CPU has the instructions of the bf16 path.
pub(super) fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
        && is_x86_feature_detected!("fma")
}

/// `to_bf16` back to f32: the value a bf16 operand contributes.
#[cfg(test)]
pub(super) fn rounded(x: f32) -> f32 {
    f32::from_bits((to_bf16(x) as u32) << 16)
}

/// One pair slot (as the f32 whose bits it is): `lo` for the even k, `hi` for the odd one.
fn pair(lo: f32, hi: f32) -> f32 {
    f32::from_bits(to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16)
}

thread_local! {
    static PAIRS_A: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static PAIRS_B: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Pair buffers up to this many floats stay with their thread for the next product; larger
/// ones (an LM head's gradient with a large vocabulary) are freed after use.
const KEEP_PAIRS: usize = 1 << 22;

/// `C = A·B` (or `+=`) in bf16 on `nt` threads, B given as a view or as panels of its pairs
/// ([`pair_b`]); the caller checked shapes and bounds, and chose `kern` from `kernel()` (so the
/// CPU has the bf16 instructions).
///
/// # Safety
/// As for `super::blocked`: `c` addresses the m × n matrix at stride `ldc`, writable, and
/// initialised if `accumulate`; packed panels were packed with `kern`.
pub(super) unsafe fn multiply(kern: &Kernel, a: MatRef, b: Panels, c: CPtr, ldc: usize, accumulate: bool, nt: usize) {
    debug_assert!(supported());
    let (m, k2) = (a.rows, a.cols.div_ceil(2));
    let n = b.dims().1;
    with_buffer(&PAIRS_A, m * k2, |ap| {
        let a2 = to_pairs(a, ap, nt);
        // SAFETY (both): passed on from our caller; the paired operands have the same m × n
        // product.
        match b {
            Panels::Pack(b) => with_buffer(&PAIRS_B, k2 * n, |bp| unsafe {
                super::multiply(kern, a2, Panels::Pack(pair_b(b, bp, nt)), c, ldc, accumulate, nt)
            }),
            packed => unsafe { super::multiply(kern, a2, packed, c, ldc, accumulate, nt) },
        }
    });
    let b_len = if matches!(b, Panels::Pack(_)) { k2 * n } else { 0 }; // packed B: no buffer
    for (key, len) in [(&PAIRS_A, m * k2), (&PAIRS_B, b_len)] {
        if len > KEEP_PAIRS {
            drop(key.take());
        }
    }
}

/// B (k × n) as the ⌈k/2⌉ × n pair matrix the pair kernel multiplies, in `out`.
pub(super) fn pair_b<'a>(b: MatRef, out: &'a mut [f32], nt: usize) -> MatRef<'a> {
    // B's k runs down its rows: pair the columns of Bᵀ.
    to_pairs(b.t(), out, nt).t()
}

/// Pairs the columns of `x` (rows × k): the result is the rows × ⌈k/2⌉ pair matrix, stored in
/// `out` row-major when x's rows are contiguous, else transposed (⌈k/2⌉ rows of x's rows).
fn to_pairs<'a>(x: MatRef, out: &'a mut [f32], nt: usize) -> MatRef<'a> {
    let (rows, k2) = (x.rows, x.cols.div_ceil(2));
    // Output lines are converted a task at a time, each task at least ~16 KiB of output: enough
    // work to be worth a thread, and one call per task rather than per line (attention's
    // products are many small ones).
    let mut by_tasks = |line: usize, lines: usize, f: &(dyn Fn(Range<usize>, &mut [f32]) + Sync)| {
        let per = (1 << 12) / line.max(1) + 1;
        let out = &mut out[..line * lines];
        let task = |(t, o): (usize, &mut [f32])| f(t * per..(t * per + per).min(lines), o);
        if nt > 1 {
            out.par_chunks_mut((line * per).max(1)).enumerate().for_each(task);
        } else {
            out.chunks_mut((line * per).max(1)).enumerate().for_each(task);
        }
    };
    // SAFETY (both): `supported()` was checked before the pair kernel was chosen, and x's
    // elements lie inside `x.data` (in bounds: `check_operands`).
    if x.col_stride == 1 {
        by_tasks(k2, rows, &|rs, o| unsafe { pair_runs(x, rs, o) });
        MatRef::new(out, rows, k2)
    } else {
        by_tasks(rows, k2, &|ps, o| unsafe { pair_columns(x, ps, o) });
        MatRef::new(out, k2, rows).t()
    }
}

/// Rows `rows` of `x` (contiguous k) paired into `out`, ⌈k/2⌉ slots per row.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_runs(x: MatRef, rows: Range<usize>, out: &mut [f32]) {
    let k2 = x.cols.div_ceil(2);
    for (i, o) in rows.zip(out.chunks_exact_mut(k2)) {
        pair_run(&x.data[i * x.row_stride..][..x.cols], o);
    }
}

/// Column pairs `pairs` of `x` (columns 2p and 2p + 1) interleaved into `out`, one line of
/// x.rows slots per pair.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_columns(x: MatRef, pairs: Range<usize>, out: &mut [f32]) {
    let at = |j: usize| (j < x.cols).then(|| j * x.col_stride);
    for (p, o) in pairs.zip(out.chunks_exact_mut(x.rows)) {
        match (x.row_stride, at(2 * p), at(2 * p + 1)) {
            (1, Some(lo), hi) => pair_rows(&x.data[lo..][..x.rows], hi.map(|h| &x.data[h..][..x.rows]), o),
            (rs, lo, hi) => {
                let get = |k: Option<usize>, i: usize| k.map_or(0.0, |k| x.data[i * rs + k]);
                o.iter_mut().enumerate().for_each(|(i, o)| *o = pair(get(lo, i), get(hi, i)));
            }
        }
    }
}

/// Pairs consecutive floats of `src` into `out` (`⌈len/2⌉` slots), 32 floats per instruction.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_run(src: &[f32], out: &mut [f32]) {
    assert!(out.len() >= src.len().div_ceil(2));
    for (j, chunk) in src.chunks(32).enumerate() {
        let len = chunk.len();
        let (lo, hi) = (len.min(16), len.saturating_sub(16));
        let p = chunk.as_ptr();
        let v =
            _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(low_bits(hi), p.add(lo)), _mm512_maskz_loadu_ps(low_bits(lo), p));
        _mm512_mask_storeu_epi32(
            out.as_mut_ptr().add(16 * j).cast(),
            low_bits(len.div_ceil(2)),
            std::mem::transmute::<__m512bh, __m512i>(v),
        );
    }
}

/// Interleaves rows `lo` and `hi` (zeros when absent) into pairs, 16 slots per instruction.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_rows(lo: &[f32], hi: Option<&[f32]>, out: &mut [f32]) {
    assert!(out.len() >= lo.len() && hi.is_none_or(|h| h.len() == lo.len()));
    // 16-bit lane 2j takes lane j (from `lo`), lane 2j + 1 takes lane 16 + j (from `hi`).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    for i in (0..lo.len()).step_by(16) {
        let mask = low_bits((lo.len() - i).min(16));
        let h = hi.map_or(_mm512_setzero_ps(), |h| _mm512_maskz_loadu_ps(mask, h.as_ptr().add(i)));
        let v = _mm512_cvtne2ps_pbh(h, _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(i)));
        let v = _mm512_permutexvar_epi16(interleave, std::mem::transmute::<__m512bh, __m512i>(v));
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(i).cast(), mask, v);
    }
}

/// A mask of the low `n` (≤ 16) lanes.
fn low_bits(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round` agrees with the CPU's conversion on random bit patterns and the special values.
    #[test]
    fn round_matches_the_instruction() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut xs: Vec<f32> = (0..100_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                f32::from_bits(seed as u32)
            })
            .collect();
        xs.extend([
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        xs.extend([1.0 + f32::EPSILON * 64.0, 1.0 + f32::EPSILON * 192.0]); // ties: to even
        let mut got = vec![0.0; xs.len().div_ceil(2)];
        unsafe { pair_run(&xs, &mut got) };
        for (i, x) in xs.iter().enumerate() {
            let hw = (got[i / 2].to_bits() >> (16 * (i % 2))) as u16;
            assert_eq!(to_bf16(*x), hw, "{x:e} ({:#010x})", x.to_bits());
        }
    }
}
