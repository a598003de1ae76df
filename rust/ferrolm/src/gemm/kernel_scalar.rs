//! Portable microkernel (any architecture): a 4 × 16 tile in plain arrays, which LLVM
//! vectorises with whatever the baseline target offers (SSE2, NEON...).

// Microkernels take their operands as flat scalar arguments, on purpose: they stay in registers.
#![allow(clippy::too_many_arguments)]

pub(super) const MR: usize = 4;
pub(super) const NR: usize = 16;

/// # Safety
/// As for `tile`, with a full MR × NR tile at `c`.
unsafe fn full(kc: usize, a: *const f32, a_rs: usize, a_cs: usize, b: &[f32], c: *mut f32, ldc: usize, load_c: bool) {
    let mut acc = [[0.0f32; NR]; MR];
    for (k, bk) in b.chunks_exact(NR).enumerate().take(kc) {
        for (r, row) in acc.iter_mut().enumerate() {
            let x = *a.add(r * a_rs + k * a_cs);
            for (o, &y) in row.iter_mut().zip(bk) {
                *o += x * y;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // Through the pointer, element by element: other threads may be writing C between these
        // rows, and when overwriting C may be uninitialised (`gemm::product`), so no slice of it.
        let out = c.add(r * ldc);
        for (j, &x) in row.iter().enumerate() {
            out.add(j).write(if load_c { out.add(j).read() + x } else { x });
        }
    }
}

/// Computes the `rows × cols` (≤ MR × NR) corner of the tile (edges go through a scratch tile).
///
/// # Safety
/// `a` addresses MR rows of `kc` floats at strides (`a_rs`, `a_cs`); `b` is a packed panel of
/// `kc` steps; `c` addresses `rows` rows of `cols` writable floats at stride `ldc`.
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
    let b = std::slice::from_raw_parts(b, kc * NR);
    if rows == MR && cols == NR {
        full(kc, a, a_rs, a_cs, b, c, ldc, load_c);
    } else {
        super::via_scratch(|t, ld, l| full(kc, a, a_rs, a_cs, b, t, ld, l), NR, c, ldc, rows, cols, load_c);
    }
}
