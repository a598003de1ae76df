//! AVX2+FMA microkernel for x86-64 CPUs without AVX-512: a 6 × 16 tile in 12 ymm accumulators
//! (the classic Haswell shape: 12 accumulators + 2 B vectors + 1 broadcast of 16 registers).

// Microkernels take their operands as flat scalar arguments, on purpose: they stay in registers.
#![allow(clippy::too_many_arguments)]

use std::arch::x86_64::*;

use super::{pack, MatRef};

pub(super) const MR: usize = 6;
pub(super) const NR: usize = 16;

#[target_feature(enable = "avx2,fma")]
unsafe fn full(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // Each row read from its own base at one running offset: stepping a single pointer from row
    // to row made a chain of six dependent adds per k step, as long as its twelve FMAs take.
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * a_rs));
    // C's tile is fetched while the k loop runs, not after it: each tile's rows are new lines
    // of a C too large for cache, and the loads (or stores) missing at the end stalled the core.
    for r in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + NR - 1) as *const i8);
    }
    let mut at = 0;
    for _ in 0..kc {
        let b0 = _mm256_load_ps(b);
        let b1 = _mm256_load_ps(b.add(8));
        for (row, base) in acc.iter_mut().zip(rows) {
            let av = _mm256_broadcast_ss(&*base.add(at));
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
        at += a_cs;
        b = b.add(NR);
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, x) in row.iter().enumerate() {
            let p = c.add(r * ldc + 8 * v);
            let x = if load_c { _mm256_add_ps(*x, _mm256_loadu_ps(p)) } else { *x };
            _mm256_storeu_ps(p, x);
        }
    }
}

/// Computes the `rows × cols` (≤ MR × NR) corner of the tile (edges go through a scratch tile).
///
/// # Safety
/// The CPU supports AVX2 and FMA; `a` addresses MR rows of `kc` floats at strides (`a_rs`,
/// `a_cs`); `b` is a 32-byte aligned packed panel of `kc` steps;
/// `c` addresses `rows` rows of `cols` writable floats at stride `ldc`.
pub(super) unsafe fn tile(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load_c: bool,
) {
    if rows == MR && cols == NR {
        full(kc, a, a_rs, a_cs, b, c, ldc, load_c);
    } else {
        super::via_scratch(|t, ld, l| full(kc, a, a_rs, a_cs, b, t, ld, l), NR, c, ldc, rows, cols, load_c);
    }
}

/// Transposes the 8 × 8 block held in `r` (row i in `r[i]`) in place: 24 shuffles instead of
/// 64 scalar moves.
#[target_feature(enable = "avx2")]
fn transpose8(r: &mut [__m256; 8]) {
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(x, y)
        } else {
            _mm256_unpackhi_ps(x, y)
        }
    });
    // s[4h + q]: element q of rows 4h..4h + 4 (and q + 4 in the high lane).
    let s: [__m256; 8] = std::array::from_fn(|i| {
        let (h, q) = (i / 4, i % 4);
        let (x, y) = (t[4 * h + q / 2], t[4 * h + 2 + q / 2]);
        if q % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(x, y)
        } else {
            _mm256_shuffle_ps::<0xEE>(x, y)
        }
    });
    for (q, out) in r.iter_mut().enumerate() {
        *out = if q < 4 {
            _mm256_permute2f128_ps::<0x20>(s[q], s[4 + q])
        } else {
            _mm256_permute2f128_ps::<0x31>(s[q - 4], s[q])
        };
    }
}

/// `pack::pack_b_panel` for a B whose columns are contiguous (B = Wᵀ, the NT case): 8 × 8
/// blocks transposed in registers (`pack::pack_b_transposed`).
///
/// # Safety
/// The CPU supports AVX2; `b` passed `MatRef::in_bounds`, and the block lies inside it.
pub(super) unsafe fn pack_b_panel(b: &MatRef, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    pack::pack_b_transposed::<NR, 8>(b, k0, kc, j0, w, dst, |cols, out| tile8(cols, out));
}

/// Loads 8 floats from each column pointer and stores them transposed, 8 rows NR apart.
#[target_feature(enable = "avx2")]
unsafe fn tile8(cols: &[*const f32; 8], out: *mut f32) {
    let mut r = cols.map(|c| _mm256_loadu_ps(c));
    transpose8(&mut r);
    for (kk, x) in r.iter().enumerate() {
        _mm256_storeu_ps(out.add(kk * NR), *x);
    }
}
