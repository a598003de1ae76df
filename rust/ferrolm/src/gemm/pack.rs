//! Packing: copies blocks of the (arbitrarily strided) operands into the contiguous, zero-padded
//! layouts the microkernels stream through. This is where transposes and strides are absorbed,
//! so the kernels see one layout whatever the views.

use super::MatRef;

/// Packs the `kc × w` block of B starting at (k0, j0) into a micro-panel of width `NR`:
/// element (k, j) goes to `dst[k * NR + j]`, columns `w..NR` are zeroed. `NR` is a constant so
/// a full panel's rows are fixed-size moves (a 64-byte `memcpy` call per row cost ~3% of a
/// training step).
pub(super) fn pack_b_panel<const NR: usize>(b: &MatRef, k0: usize, kc: usize, j0: usize, w: usize, dst: &mut [f32]) {
    let dst = &mut dst[..kc * NR];
    if b.col_stride == 1 {
        // Rows of B are contiguous (NN): one copy per k.
        for (k, out) in dst.chunks_exact_mut(NR).enumerate() {
            let start = (k0 + k) * b.row_stride + j0;
            if w == NR {
                let row: &[f32; NR] = b.data[start..start + NR].try_into().expect("NR floats");
                out.copy_from_slice(row);
            } else {
                out[..w].copy_from_slice(&b.data[start..start + w]);
                out[w..].fill(0.0);
            }
        }
    } else if b.row_stride == 1 {
        // Columns of B are contiguous (B = Wᵀ, the NT case): read each column once, scatter it
        // down the panel. Zero the padding columns first.
        if w < NR {
            for out in dst.chunks_exact_mut(NR) {
                out[w..].fill(0.0);
            }
        }
        for j in 0..w {
            let start = (j0 + j) * b.col_stride + k0;
            let col = &b.data[start..start + kc];
            for (out, &x) in dst.chunks_exact_mut(NR).zip(col) {
                out[j] = x;
            }
        }
    } else {
        for (k, out) in dst.chunks_exact_mut(NR).enumerate() {
            for (j, o) in out.iter_mut().enumerate() {
                *o = if j < w { b.data[(k0 + k) * b.row_stride + (j0 + j) * b.col_stride] } else { 0.0 };
            }
        }
    }
}

/// `pack_b_panel` for a B whose columns are contiguous (B = Wᵀ, the NT case), T × T blocks at a
/// time: `tile(cols, out)` reads T floats from each of the T column pointers and writes them
/// transposed, T rows of T floats NR apart from `out` (a SIMD kernel's register transpose,
/// instead of scattering every float down the panel). Other layouts go to `pack_b_panel`.
///
/// # Safety
/// `tile` reads and writes only what it is given; `b` passed `MatRef::in_bounds`, and the block
/// lies inside it.
#[cfg(target_arch = "x86_64")] // its callers are the x86 kernels
pub(super) unsafe fn pack_b_transposed<const NR: usize, const T: usize>(
    b: &MatRef,
    k0: usize,
    kc: usize,
    j0: usize,
    w: usize,
    dst: &mut [f32],
    tile: impl Fn(&[*const f32; T], *mut f32),
) {
    if b.row_stride != 1 || b.col_stride == 1 {
        return pack_b_panel::<NR>(b, k0, kc, j0, w, dst);
    }
    let dst = &mut dst[..kc * NR];
    let (wfull, kfull) = (w / T * T, kc / T * T);
    let col = |j: usize| (j0 + j) * b.col_stride + k0;
    for jb in (0..wfull).step_by(T) {
        // The last element read is B(k0 + kc - 1, j0 + jb + T - 1), inside `b.data` since the
        // view is in bounds; so every T-float run below is too.
        assert!(col(jb + T - 1) + kc <= b.data.len() && jb + T <= NR);
        for kb in (0..kfull).step_by(T) {
            let cols = std::array::from_fn(|jj| b.data.as_ptr().add(col(jb + jj) + kb));
            tile(&cols, dst.as_mut_ptr().add(kb * NR + jb));
        }
        for k in kfull..kc {
            for jj in 0..T {
                dst[k * NR + jb + jj] = b.data[col(jb + jj) + k];
            }
        }
    }
    for (k, out) in dst.chunks_exact_mut(NR).enumerate() {
        for (j, o) in out.iter_mut().enumerate().skip(wfull) {
            *o = if j < w { b.data[col(j) + k] } else { 0.0 };
        }
    }
}

/// Packs the `rows × kc` block of A starting at (i0, k0) into `rows.div_ceil(MR)` consecutive
/// micro-panels of height `MR` and `kc * MR` floats each: element (r, k) goes to
/// `dst[(r / MR) * kc * MR + k * MR + r % MR]`, padding rows of the last panel are zeroed.
/// Several panels are packed at once so a column-major A (the TN case) is read many cache
/// lines at a time. `MR` is a constant so the per-panel copies are fixed-size moves.
pub(super) fn pack_a<const MR: usize>(a: &MatRef, i0: usize, rows: usize, k0: usize, kc: usize, dst: &mut [f32]) {
    let mr = MR;
    let panels = rows.div_ceil(mr);
    let dst = &mut dst[..panels * kc * mr];
    let tail = rows - (panels - 1) * mr;
    if tail < mr {
        for out in dst[(panels - 1) * kc * mr..].chunks_exact_mut(mr) {
            out[tail..].fill(0.0);
        }
    }
    if a.row_stride == 1 {
        // Columns of A are contiguous (A = Xᵀ, the TN case): one read of `rows` floats per k,
        // dealt out to the panels.
        let full = rows / MR;
        for k in 0..kc {
            let start = (k0 + k) * a.col_stride + i0;
            let src = &a.data[start..start + rows];
            for (s, panel) in src.chunks_exact(MR).zip(dst.chunks_exact_mut(kc * MR)) {
                panel[k * MR..k * MR + MR].copy_from_slice(s);
            }
            if full < panels {
                dst[full * kc * MR + k * MR..][..rows - full * MR].copy_from_slice(&src[full * MR..]);
            }
        }
    } else if a.col_stride == 1 {
        // Rows of A are contiguous (NN): read each row once, interleave.
        for r in 0..rows {
            let start = (i0 + r) * a.row_stride + k0;
            let panel = &mut dst[(r / mr) * kc * mr..(r / mr + 1) * kc * mr];
            for (out, &x) in panel.chunks_exact_mut(mr).zip(&a.data[start..start + kc]) {
                out[r % mr] = x;
            }
        }
    } else {
        for r in 0..rows {
            let panel = &mut dst[(r / mr) * kc * mr..(r / mr + 1) * kc * mr];
            for (k, out) in panel.chunks_exact_mut(mr).enumerate() {
                out[r % mr] = a.data[(i0 + r) * a.row_stride + (k0 + k) * a.col_stride];
            }
        }
    }
}
