//! AVX-512 microkernels: an `R × 16·NV` tile of C held in zmm accumulators. Each k step loads NV
//! vectors of the packed B row and broadcasts R values of the packed A column.
//!
//! The same kernel runs in two precisions. `tile` multiplies f32s with FMA. `tile_bf16` reads
//! both operands as bfloat16 *pairs* (each 32-bit slot holds two consecutive k; see `bf16`)
//! and adds both products per lane with `vdpbf16ps`: half the steps for the same k, twice
//! the multiply-adds per instruction, sums still in f32.

// Microkernels take their operands as flat scalar arguments, on purpose: they stay in registers.
#![allow(clippy::too_many_arguments)]

use super::{pack, MatRef};
use std::arch::x86_64::*;

/// Rows of the full tile.
pub(super) const MR: usize = 6;
/// Vectors (of 16 floats) across the full tile.
const NV: usize = 4;
/// Columns of the full tile.
pub(super) const NR: usize = 16 * NV;

/// `R × 16·V` tile; the last vector column is written under `mask` (the valid lanes), so any
/// `cols` needs no scratch tile. Row r of A at step k is `a[r * a_rs + k * a_cs]` (a packed
/// panel or A itself); `b` advances by `NR` per k step whatever `V` is. Inlined into the
/// entry points below, which compile it for their instruction set.
#[inline(always)]
unsafe fn kernel<const R: usize, const V: usize, const BF16: bool>(
    kc: usize,
    mut a: *const f32,
    a_rs: usize,
    a_cs: usize,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
    mask: u16,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_load_ps(b.add(16 * v));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // A broadcast moves bits, so it serves bf16 pairs as well.
            let av = _mm512_set1_ps(*a.add(r * a_rs));
            for (x, bx) in row.iter_mut().zip(&bv) {
                *x = if BF16 {
                    _mm512_dpbf16_ps(
                        *x,
                        std::mem::transmute::<__m512, __m512bh>(av),
                        std::mem::transmute::<__m512, __m512bh>(*bx),
                    )
                } else {
                    _mm512_fmadd_ps(av, *bx, *x)
                };
            }
        }
        a = a.add(a_cs);
        b = b.add(NR);
    }
    for (r, row) in acc.iter().enumerate() {
        let cr = c.add(r * ldc);
        for (v, x) in row.iter().enumerate() {
            let m = if v + 1 == V { mask } else { 0xffff };
            let p = cr.add(16 * v);
            let mut x = *x;
            if load_c {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, p));
            }
            _mm512_mask_storeu_ps(p, m, x);
        }
    }
}

#[inline(always)]
unsafe fn by_vectors<const R: usize, const BF16: bool>(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    load_c: bool,
) {
    let v = cols.div_ceil(16);
    let mask = (u32::MAX >> (32 - (cols - 16 * (v - 1)))) as u16;
    match v {
        1 => kernel::<R, 1, BF16>(kc, a, a_rs, a_cs, b, c, ldc, load_c, mask),
        2 => kernel::<R, 2, BF16>(kc, a, a_rs, a_cs, b, c, ldc, load_c, mask),
        3 => kernel::<R, 3, BF16>(kc, a, a_rs, a_cs, b, c, ldc, load_c, mask),
        4 => kernel::<R, 4, BF16>(kc, a, a_rs, a_cs, b, c, ldc, load_c, mask),
        _ => unreachable!(),
    }
}

/// Computes the `rows × cols` (≤ MR × NR) corner of a tile.
#[inline(always)]
unsafe fn by_rows<const BF16: bool>(
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
    match rows {
        1 => by_vectors::<1, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        2 => by_vectors::<2, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        3 => by_vectors::<3, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        4 => by_vectors::<4, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        5 => by_vectors::<5, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        6 => by_vectors::<6, BF16>(kc, a, a_rs, a_cs, b, c, ldc, cols, load_c),
        _ => unreachable!(),
    }
}

/// f32 tile: C[rows × cols] (+)= A · B_panel over `kc` steps.
///
/// # Safety
/// The CPU supports AVX-512F and FMA; `a` addresses `rows` rows of `kc` floats at strides
/// (`a_rs`, `a_cs`); `b` is a 64-byte aligned packed panel of `kc` steps;
/// `c` addresses `rows` rows of `cols` writable floats at stride `ldc`.
#[target_feature(enable = "avx512f,avx2,fma")]
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
    by_rows::<false>(kc, a, a_rs, a_cs, b, c, ldc, rows, cols, load_c)
}

/// bfloat16-pair tile: as `tile`, with each of the `kc` steps a pair of k.
///
/// # Safety
/// As `tile`, on a CPU that also supports AVX512-BF16, with operands holding bf16 pairs.
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub(super) unsafe fn tile_bf16(
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
    by_rows::<true>(kc, a, a_rs, a_cs, b, c, ldc, rows, cols, load_c)
}

/// Transposes the 16 × 16 block held in `r` (row i in `r[i]`) in place: 64 in-lane and
/// cross-lane shuffles instead of 256 scalar moves.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // Rows 4g..4g+3 interleaved: u[4g + c] holds, in 128-bit lane L, column 4L + c of them.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let [r0, r1, r2, r3] = [r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]];
        let (t0, t1) = (_mm512_unpacklo_ps(r0, r1), _mm512_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm512_unpacklo_ps(r2, r3), _mm512_unpackhi_ps(r2, r3));
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t0, t2);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t0, t2);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t1, t3);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t1, t3);
    }
    // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
        r[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
        r[4 + c] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
    }
}

/// `pack::pack_b_panel` for a B whose columns are contiguous (B = Wᵀ, the NT case): 16 × 16
/// blocks transposed in registers (`pack::pack_b_transposed`).
///
/// # Safety
/// The CPU supports AVX-512F; `b` passed `MatRef::in_bounds`, and the block lies inside it.
pub(super) unsafe fn pack_b_panel(b: &MatRef, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    pack::pack_b_transposed::<NR, 16>(b, k0, kc, j0, w, dst, |cols, out| tile16(cols, out));
}

/// Loads 16 floats from each column pointer and stores them transposed, 16 rows NR apart.
#[target_feature(enable = "avx512f")]
unsafe fn tile16(cols: &[*const f32; 16], out: *mut f32) {
    let mut r = cols.map(|c| _mm512_loadu_ps(c));
    transpose16(&mut r);
    for (kk, x) in r.iter().enumerate() {
        _mm512_storeu_ps(out.add(kk * NR), *x);
    }
}
