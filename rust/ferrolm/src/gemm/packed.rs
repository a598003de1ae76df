//! Weights packed once for many products. Decoding a batch multiplies the same weights at
//! every token, and products of 16 rows or more go through the blocked product, which packs
//! B as it goes: for 16 prompts of a 6-layer, 384-wide model, packing took about as long as
//! the arithmetic. A [`PackedB`] holds every block of B already packed, in the order the
//! product reads them, and [`gemm_packed`] multiplies by it.

use rayon::prelude::*;

use super::{kernel, multiply, nothing_to_multiply, Kernel, Line, MatRef, Panels, Threads};
use crate::tensor::{cannot_allocate, checked_numel};
use crate::{ensure, Result};

/// A `k × n` matrix B packed into the blocked product's panels, for the arithmetic products
/// used when it was packed: f32, or bf16 pairs under bf16 precision on a CPU that runs them.
pub struct PackedB {
    k: usize,
    n: usize,
    bf16: bool,
    panels: Vec<Line>,
}

impl PackedB {
    /// Packs `b` for the current precision ([`super::set_matmul_precision`]).
    pub fn new(b: MatRef) -> Result<PackedB> {
        #[cfg(target_arch = "x86_64")]
        return PackedB::for_kernel(b, super::blocked_bf16());
        #[cfg(not(target_arch = "x86_64"))]
        PackedB::for_kernel(b, None)
    }

    /// Packs `b` in bf16 pairs for `bf16`, the pair kernel, or else in f32.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn for_kernel(b: MatRef, bf16: Option<&Kernel>) -> Result<PackedB> {
        ensure!(b.in_bounds(), Shape, "gemm: B view out of bounds");
        let (k, n) = (b.rows, b.cols);
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = bf16 {
            let mut pairs = crate::tensor::zeroed(checked_numel(&[k.div_ceil(2), n])?)?;
            let pairs = super::bf16::pair_b(b, &mut pairs, rayon::current_num_threads());
            return Ok(PackedB { k, n, bf16: true, panels: pack_blocks(kern, &pairs)? });
        }
        Ok(PackedB { k, n, bf16: false, panels: pack_blocks(kernel(), &b)? })
    }

    /// Whether products now use the arithmetic this was packed for.
    pub fn is_current(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.bf16 == super::blocked_bf16().is_some();
        #[cfg(not(target_arch = "x86_64"))]
        !self.bf16
    }

    /// B's rows and columns.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The bytes its panels take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.panels.as_slice())
    }

    fn floats(&self) -> &[f32] {
        Line::floats(&self.panels)
    }
}

/// Every KC × NC block of `b` packed by `kern`, in the order [`multiply`] reads them: for each
/// NC block of columns, its KC blocks of rows, each as whole NR-wide panels.
fn pack_blocks(kern: &Kernel, b: &MatRef) -> Result<Vec<Line>> {
    let (k, n, nr) = (b.rows, b.cols, kern.nr);
    let padded_n: usize = (0..n).step_by(kern.nc).map(|jc| kern.nc.min(n - jc).div_ceil(nr) * nr).sum();
    let lines = checked_numel(&[k, padded_n])? / 16; // nr is a multiple of 16
    let mut panels = Vec::new();
    panels.try_reserve_exact(lines).map_err(|_| cannot_allocate(16 * lines))?;
    panels.resize(lines, Line([0.0; 16]));
    let mut rest = Line::floats_mut(&mut panels);
    for jc in (0..n).step_by(kern.nc) {
        let ncb = kern.nc.min(n - jc);
        for pc in (0..k).step_by(kern.kc) {
            let kcb = kern.kc.min(k - pc);
            let (block, after) = std::mem::take(&mut rest).split_at_mut(ncb.div_ceil(nr) * kcb * nr);
            rest = after;
            block.par_chunks_mut(kcb * nr).enumerate().for_each(|(p, dst)| {
                // SAFETY: the packer was selected with the kernel, for this CPU; B's view is in
                // bounds (checked by `PackedB::new`) and the block lies inside it.
                unsafe { (kern.pack_b)(b, pc, kcb, jc + p * nr, nr.min(ncb - p * nr), dst) }
            });
        }
    }
    Ok(panels)
}

/// `C = A·B` (or `C += A·B` when `accumulate`) for a packed B, with C row-major `m × n` at row
/// stride `ldc`: the same sums, in the same order, as the blocked product that packs B as it
/// goes (what [`super::gemm`] runs for 16 rows or more), in the arithmetic B was packed for
/// (bf16 rounds A too, whatever its rows).
///
/// # Panics
/// When A's columns are not B's rows, A runs past its slice, `ldc < n`, or C is too small.
pub fn gemm_packed(a: MatRef, b: &PackedB, c: &mut [f32], ldc: usize, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, b.k, b.n);
    assert!(a.cols == k && a.in_bounds() && ldc >= n, "gemm_packed: operands do not fit");
    if nothing_to_multiply(m, k, n, c, ldc, accumulate) {
        return;
    }
    let nt = super::blocked_threads(m, k, n, threads);
    let c = super::CPtr(c.as_mut_ptr());
    // SAFETY (both): C holds the m × n view at stride ldc (checked above) and is initialised;
    // the panels were packed by the kernel used here (a bf16 pack only where it exists).
    #[cfg(target_arch = "x86_64")]
    if b.bf16 {
        let kern = super::bf16::kernel().expect("packed for bf16 on this CPU");
        let panels = Panels::Packed { panels: b.floats(), k: k.div_ceil(2), n };
        return unsafe { super::bf16::multiply(kern, a, panels, c, ldc, accumulate, nt) };
    }
    unsafe { multiply(kernel(), a, Panels::Packed { panels: b.floats(), k, n }, c, ldc, accumulate, nt) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{gemm, product, Panels};

    /// Products with nothing to multiply: an empty C, or zeros (k = 0), as `product` gives.
    #[test]
    fn empty_products() {
        for (m, k, n) in [(2, 0, 0), (0, 3, 0), (0, 0, 0), (2, 0, 3), (0, 3, 4), (3, 4, 0)] {
            let (a, b) = (vec![1.0; m * k], vec![1.0; k * n]);
            let (a, b) = (MatRef::new(&a, m, k), MatRef::new(&b, k, n));
            assert_eq!(product(a, b, Threads::Pool).unwrap(), vec![0.0; m * n], "{m}x{k}x{n}");
            let mut c = vec![f32::NAN; m * n];
            gemm_packed(a, &PackedB::new(b).unwrap(), &mut c, n, false, Threads::Pool);
            assert_eq!(c, vec![0.0; m * n], "{m}x{k}x{n} packed");
        }
    }

    /// Products by a packed B equal, bitwise, the blocked product that packs B as it goes (f32
    /// and bf16), on 1 and 2 threads, over sizes that cross the KC and NC blocks, with B a
    /// weight read transposed (as `linear` does) or row-major.
    #[test]
    fn packed_products_equal_packing_as_they_go() {
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(m, k, n) in &[(3, 1, 1), (4, 49, 130), (16, 300, 70), (20, 1100, 900)] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let a = MatRef::new(&x, m, k);
            for b in [MatRef::new(&w, n, k).t(), MatRef::new(&w, k, n)] {
                let mut kernels = vec![None];
                #[cfg(target_arch = "x86_64")]
                kernels.extend(crate::gemm::bf16::kernel().map(Some));
                for bf16 in kernels {
                    let packed = PackedB::for_kernel(b, bf16).unwrap();
                    for accumulate in [false, true] {
                        let start = vec![if accumulate { 0.25 } else { f32::NAN }; m * n];
                        let as_they_go = {
                            let mut c = start.clone();
                            let nt = crate::gemm::blocked_threads(m, k, n, Threads::Pool);
                            let cp = crate::gemm::CPtr(c.as_mut_ptr());
                            // SAFETY: c holds the m × n product at stride n and is initialised.
                            match bf16 {
                                #[cfg(target_arch = "x86_64")]
                                Some(kern) => unsafe {
                                    crate::gemm::bf16::multiply(kern, a, Panels::Pack(b), cp, n, accumulate, nt)
                                },
                                _ => unsafe { multiply(kernel(), a, Panels::Pack(b), cp, n, accumulate, nt) },
                            }
                            c
                        };
                        for threads in [1, 2] {
                            let mut c = start.clone();
                            let run = || gemm_packed(a, &packed, &mut c, n, accumulate, Threads::Pool);
                            crate::with_threads(Some(threads), run).unwrap();
                            let same = c.iter().zip(&as_they_go).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "{m}x{k}x{n} bf16 {} threads {threads}", bf16.is_some());
                        }
                        if bf16.is_none() && m >= 16 {
                            // …which is what `gemm` computes for that many rows.
                            let mut c = start.clone();
                            gemm(a, b, &mut c, n, accumulate, Threads::Pool);
                            assert!(c.iter().zip(&as_they_go).all(|(x, y)| x.to_bits() == y.to_bits()));
                        }
                    }
                }
            }
        }
    }
}
