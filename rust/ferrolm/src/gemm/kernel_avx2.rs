//! AVX2+FMA microkernel for x86-64 CPUs without AVX-512: a 6 × 16 tile in 12 ymm accumulators
//! (the classic Haswell shape: 12 accumulators + 2 B vectors + 1 broadcast of 16 registers).

// Microkernels take their operands as flat scalar arguments, on purpose: they stay in registers.
#![allow(clippy::too_many_arguments)]

use std::arch::x86_64::*;

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
