//! Single-precision matrix multiplication, the operation training time goes to.
//!
//! Every matrix is a strided view, so transposed operands cost nothing: `A^T` is `A` with its
//! row and column strides swapped.
//!
//! The structure is GotoBLAS/BLIS's, with the roles of A and B swapped to suit a row-major C
//! whose rows are the SIMD direction:
//!
//! ```text
//! for jc in 0..n step NC                 B block KC × NC
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..]                 (NR-wide panels; see below for threads)
//!     for each MR-row A micro-panel
//!       A[i.., pc..]: read in place if its rows are contiguous, else packed 8 panels at a time;
//!       MR × KC, it stays in L1 while ...
//!       for each NR-wide B panel         ... the B panels stream past it from L2/L3
//!         microkernel: C[MR × NR] (+)= A_panel · B_panel
//! ```
//!
//! Threads cut C once, by rows or by columns, the larger operand's way (`split_once`): each job
//! runs the whole product on its part, packing what it reads, with no barrier between blocks.
//!
//! A B multiplied many times over (a weight, at every step of a batch's decoding) can be packed
//! whole once ([`PackedB`]) and multiplied by with [`gemm_packed`], which skips the packing;
//! its threads split N whenever there are enough panels (its A has few rows).
//!
//! On AVX-512 the microkernel is 6 × 64 (24 zmm accumulators); AVX2 machines get 6 × 16 and
//! other targets a portable 4 × 16, all chosen at run time (the crate is built for baseline
//! CPUs). Strides and transposes are absorbed by the packing (`pack`), so NN, NT and TN all run
//! the same kernel.
//!
//! Each element of C sums its k products in the same order whatever the thread count or the
//! tiling of M and N, so results are bitwise reproducible across thread counts.
//!
//! [`set_matmul_precision`] switches products to bfloat16 operands with f32 sums (`bf16`),
//! which runs the same blocking on converted operands with a `vdpbf16ps` kernel.

#[cfg(target_arch = "x86_64")]
mod bf16;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512;
mod kernel_scalar;
mod pack;
mod packed;
mod small_m;

use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::LocalKey;

use crate::tensor::{checked_numel, reserved, zeroed};
use crate::{ensure, Result};

pub use packed::{gemm_packed, PackedB};

/// A read-only strided matrix view: element (i, j) is at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The same matrix read as its transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// A row-major `rows × cols` matrix whose rows are `row_stride` apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        MatRef { data, rows, cols, row_stride, col_stride: 1 }
    }

    /// Whether every element's index is inside `data` (the largest index is the last element's,
    /// computed without overflow).
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c));
        matches!(last, Some(i) if i < self.data.len())
    }
}

/// Whether `gemm` may use the rayon pool or must stay on the calling thread (callers that are
/// already parallel, e.g. over attention heads, pass `Serial`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Pool,
    Serial,
}

/// The arithmetic of products on this process's threads, like PyTorch's
/// `set_float32_matmul_precision`: f32 throughout, or bfloat16 operands with f32 sums (about
/// twice as fast on CPUs with AVX512-BF16, and what mixed-precision training uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPrecision {
    F32,
    Bf16,
}

static BF16_PRODUCTS: AtomicBool = AtomicBool::new(false);

/// Sets the precision of every later product, process-wide. Under Bf16, products with at least
/// `small_m::MAX_ROWS` rows round both operands, as do products by a weight packed in bf16
/// ([`PackedB`]: a batch's decoding steps); other products with fewer rows by a layer's weight
/// (decoding one or two sequences token by token) keep the activations f32 and read a
/// bfloat16 copy of the weight, made at its first such use after each change and kept with it
/// (half again the weight's memory; decoding is bound by memory traffic, which it halves);
/// other products with fewer rows stay f32. Bf16 applies on CPUs with AVX512-BF16
/// ([`bf16_supported`]); elsewhere products stay f32.
pub fn set_matmul_precision(precision: MatmulPrecision) {
    BF16_PRODUCTS.store(precision == MatmulPrecision::Bf16, Ordering::Relaxed);
}

/// The precision requested with [`set_matmul_precision`] (f32 unless set), whether or not this
/// CPU can apply it.
pub fn matmul_precision() -> MatmulPrecision {
    if BF16_PRODUCTS.load(Ordering::Relaxed) {
        MatmulPrecision::Bf16
    } else {
        MatmulPrecision::F32
    }
}

/// Whether this CPU runs bf16 products (AVX512-BF16).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return bf16::supported();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// f32 → bfloat16 bits as `vcvtne2ps2bf16` rounds: to nearest even, subnormals to (signed)
/// zero, NaNs kept NaN (quieted).
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if x.is_subnormal() {
        return ((bits >> 16) & 0x8000) as u16;
    }
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Whether a product of `rows` rows by a weight reads the weight's bfloat16 copy
/// ([`multiply_bf16_weight`]) under bf16 precision, on a CPU that runs it, unless it reads a
/// packed copy (no rows: nothing to read it for).
pub(crate) fn reads_bf16_weight(rows: usize) -> bool {
    (1..small_m::MAX_ROWS).contains(&rows) && matmul_precision() == MatmulPrecision::Bf16 && bf16_supported()
}

/// `C (+)= A·Wᵀ` for W [n, k] as bfloat16 bits, row-major, and A's rows contiguous: decoding's
/// products, reading half the bytes of the f32 weights. Sums are f32 and each keeps one order
/// whatever the thread count.
///
/// # Panics
/// When the shapes do not fit together (the tensor ops check them first).
pub(crate) fn multiply_bf16_weight(a: MatRef, w: &[u16], n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
    assert!(
        a.col_stride == 1 && a.in_bounds() && w.len() == n * a.cols && ldc >= n,
        "multiply_bf16_weight: operands do not fit"
    );
    assert!(a.rows == 0 || c.len() >= (a.rows - 1) * ldc + n, "multiply_bf16_weight: C too small");
    small_m::multiply_bf16(a, w, n, c, ldc, accumulate);
}

/// Micro-panels of a strided A packed together (8 × 6 rows: three cache lines per k of a
/// column-major A).
const A_GROUP: usize = 8;

/// Products smaller than this many multiply-adds stay on one thread: waking the pool costs
/// ~15 µs, about what a second core saves on a 128³ product (measured: 64³–96³ were 2–3×
/// slower on the pool than serial, 128³ even, 160³ faster).
const PARALLEL_MIN_WORK: usize = 128 * 128 * 128;

/// `C = A·B` (or `C += A·B` when `accumulate`), with C row-major `m × n` at row stride `ldc`.
/// When overwriting, the old contents of C are never read (they may be NaN).
///
/// # Panics
/// When the inner dimensions differ, a view runs past its slice, `ldc < n`, or C is too small
/// (the tensor ops check shapes first and return errors).
pub fn gemm(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if let Err(e) = check_operands(&a, &b, ldc) {
        panic!("{e}");
    }
    if nothing_to_multiply(m, k, n, c, ldc, accumulate) {
        return;
    }
    if m < small_m::MAX_ROWS && small_m::multiply(a, b, c, ldc, accumulate, threads == Threads::Pool) {
        return;
    }
    // SAFETY: C holds the m × n view at stride ldc (checked above) and is initialised.
    unsafe { blocked(a, b, CPtr(c.as_mut_ptr()), ldc, accumulate, threads) }
}

/// `A·B` as a new row-major `m × n` matrix, written by the product alone: no zeroing pass first
/// (for a small model's layers, zeroing cost ~4% of the training step). An error when the
/// allocator refuses C (an outer product can be far larger than its operands), or a Shape error
/// when the operands do not fit together.
pub fn product(a: MatRef, b: MatRef, threads: Threads) -> Result<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check_operands(&a, &b, n)?;
    let len = checked_numel(&[m, n])?;
    if m < small_m::MAX_ROWS || k == 0 || n == 0 {
        let mut c = zeroed(len)?;
        gemm(a, b, &mut c, n, false, threads);
        return Ok(c);
    }
    let mut c = reserved(len)?;
    // SAFETY: the capacity holds the m × n matrix at stride n. Overwriting, the blocked product
    // writes every element of C in its first k block and reads none before (kernels load C
    // only when accumulating), so all `len` elements are initialised when the length is set.
    unsafe {
        blocked(a, b, CPtr(c.as_mut_ptr()), n, false, threads);
        c.set_len(len);
    }
    Ok(c)
}

/// The shape and bounds checks every product makes before touching memory.
fn check_operands(a: &MatRef, b: &MatRef, ldc: usize) -> Result<()> {
    ensure!(b.rows == a.cols, Shape, "gemm: inner dimensions differ ({}×{} · {}×{})", a.rows, a.cols, b.rows, b.cols);
    ensure!(ldc >= b.cols, Shape, "gemm: ldc {ldc} smaller than n {}", b.cols);
    ensure!(a.in_bounds(), Shape, "gemm: A view out of bounds");
    ensure!(b.in_bounds(), Shape, "gemm: B view out of bounds");
    Ok(())
}

/// Checks that C holds the `m × n` product at row stride `ldc`, and does the products with
/// nothing to multiply (m, n or k zero): whether it did.
///
/// # Panics
/// When C is too small.
fn nothing_to_multiply(m: usize, k: usize, n: usize, c: &mut [f32], ldc: usize, accumulate: bool) -> bool {
    assert!(
        m == 0 || n == 0 || (m - 1).checked_mul(ldc).and_then(|x| x.checked_add(n)).is_some_and(|len| c.len() >= len),
        "gemm: C too small"
    );
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 && !accumulate {
        c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
    }
    k == 0
}

/// How many threads the blocked product of `m × k · k × n` uses.
fn blocked_threads(m: usize, k: usize, n: usize, threads: Threads) -> usize {
    let work = m.saturating_mul(k).saturating_mul(n);
    if threads == Threads::Pool && work >= PARALLEL_MIN_WORK {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// The bf16 pair kernel when blocked products now round their operands (bf16 precision on a
/// CPU that runs it).
#[cfg(target_arch = "x86_64")]
fn blocked_bf16() -> Option<&'static Kernel> {
    (matmul_precision() == MatmulPrecision::Bf16).then(bf16::kernel).flatten()
}

/// The packed product (f32, or bf16 when selected) of checked, non-empty operands.
///
/// # Safety
/// `c` addresses the `m × n` matrix at row stride `ldc`, writable, and initialised if
/// `accumulate`.
unsafe fn blocked(a: MatRef, b: MatRef, c: CPtr, ldc: usize, accumulate: bool, threads: Threads) {
    let nt = blocked_threads(a.rows, a.cols, b.cols, threads);
    #[cfg(target_arch = "x86_64")]
    if a.rows >= small_m::MAX_ROWS {
        if let Some(kern) = blocked_bf16() {
            return bf16::multiply(kern, a, Panels::Pack(b), c, ldc, accumulate, nt);
        }
    }
    multiply(kernel(), a, Panels::Pack(b), c, ldc, accumulate, nt);
}

/// B as the blocked product reads it.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// A view, packed a block at a time as the product goes.
    Pack(MatRef<'a>),
    /// Every block packed beforehand (`packed::pack_blocks`), in the order the product reads
    /// them, for a `k × n` B.
    Packed { panels: &'a [f32], k: usize, n: usize },
}

impl Panels<'_> {
    /// B's rows and columns.
    fn dims(&self) -> (usize, usize) {
        match *self {
            Panels::Pack(b) => (b.rows, b.cols),
            Panels::Packed { k, n, .. } => (k, n),
        }
    }
}

/// The blocked product on `nt` threads for validated, non-empty operands.
///
/// # Safety
/// As for [`blocked`]; packed panels were packed by `kern`'s packer and blocking.
unsafe fn multiply(kern: &Kernel, a: MatRef, b: Panels, c: CPtr, ldc: usize, accumulate: bool, nt: usize) {
    let (k, n) = b.dims();
    debug_assert_eq!(a.cols, k);
    if let Panels::Pack(b) = b {
        if nt > 1 && split_once(kern, a, b, c, ldc, accumulate, nt) {
            return;
        }
    }
    let (kc, nc, nr, m) = (kern.kc, kern.nc, kern.nr, a.rows);
    let mp = m.div_ceil(kern.mr);
    let mut packed_at = 0;
    for jc in (0..n).step_by(nc) {
        let ncb = nc.min(n - jc);
        let np = ncb.div_ceil(nr);
        for pc in (0..k).step_by(kc) {
            let kcb = kc.min(k - pc);
            let block = Block { kern, a: &a, kcb, pc, jc, ncb, c, ldc, m, load_c: accumulate || pc > 0 };
            match b {
                Panels::Pack(b) if nt == 1 => block.private(&b, 0..np, 0..mp),
                Panels::Pack(b) => block.shared(&b, nt),
                Panels::Packed { panels, .. } => {
                    let bp = &panels[packed_at..packed_at + np * kcb * nr];
                    packed_at += bp.len();
                    match nt {
                        1 => block.tiles(bp, 0..np, 0..mp),
                        // Packed B is decoding's, with few rows: split N, as above.
                        _ if np >= nt => block.spread(bp, 1, np.min(2 * nt)),
                        _ => block.spread_evenly(bp, nt),
                    }
                }
            }
        }
    }
}

/// Runs the product as parallel jobs that each compute a part of C whole, with no barrier
/// between blocks (one per block cost ~7% on 2 AVX2 cores): C's rows are cut, each job packing
/// all of B for itself, or its columns, each job reading (or packing) all of A. The larger of
/// A and B is cut, so the operand every job goes through is the smaller. Two jobs per thread
/// let work stealing even out a busy core. False (nothing done) when neither side has a
/// micro-panel per thread.
///
/// # Safety
/// As for [`multiply`].
unsafe fn split_once(kern: &Kernel, a: MatRef, b: MatRef, c: CPtr, ldc: usize, accumulate: bool, nt: usize) -> bool {
    let (m, n) = (a.rows, b.cols);
    let (mp, np) = (m.div_ceil(kern.mr), n.div_ceil(kern.nr));
    let by_rows = if m >= n { mp >= nt } else { np < nt && mp >= nt };
    if !by_rows && np < nt {
        return false;
    }
    let (panels, width) = if by_rows { (mp, kern.mr) } else { (np, kern.nr) };
    let jobs = panels.min(2 * nt);
    (0..jobs).into_par_iter().with_max_len(1).for_each(|t| {
        let part = split(panels, jobs, t);
        let (start, end) = (part.start * width, (part.end * width).min(if by_rows { m } else { n }));
        // SAFETY: the job's rows (or columns) start..end of C, disjoint from the other jobs'.
        unsafe {
            if by_rows {
                let a = MatRef { data: &a.data[start * a.row_stride..], rows: end - start, ..a };
                multiply(kern, a, Panels::Pack(b), c.offset(start * ldc), ldc, accumulate, 1);
            } else {
                let b = MatRef { data: &b.data[start * b.col_stride..], cols: end - start, ..b };
                multiply(kern, a, Panels::Pack(b), c.offset(start), ldc, accumulate, 1);
            }
        }
    });
    true
}

/// C's base pointer, shared by the threads that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: threads write disjoint tiles (distinct rows/columns ranges), and C (the caller's `&mut`
// borrow, or `product`'s vector) outlives the parallel section, which joins before returning.
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The element `n` floats further.
    ///
    /// # Safety
    /// It lies inside C.
    unsafe fn offset(self, n: usize) -> CPtr {
        CPtr(self.0.add(n))
    }
}

/// One KC × NC block of B against all of A's rows.
struct Block<'a> {
    kern: &'a Kernel,
    a: &'a MatRef<'a>,
    kcb: usize,
    pc: usize,
    jc: usize,
    ncb: usize,
    c: CPtr,
    ldc: usize,
    m: usize,
    load_c: bool,
}

impl Block<'_> {
    /// Packs panel `p` of this block of `b` (columns jc + p·NR ..) into `dst`.
    fn pack_b(&self, b: &MatRef, p: usize, dst: &mut [f32]) {
        let j = p * self.kern.nr;
        // SAFETY: the packer was selected with the kernel, for this CPU; B's view is in bounds
        // (`check_operands`) and the block lies inside it.
        unsafe { (self.kern.pack_b)(b, self.pc, self.kcb, self.jc + j, self.kern.nr.min(self.ncb - j), dst) }
    }

    /// Packs B panels `jp` into this thread's buffer and computes them against A micro-panels
    /// `ip`.
    fn private(&self, b: &MatRef, jp: Range<usize>, ip: Range<usize>) {
        let len = self.kcb * self.kern.nr;
        with_buffer(&PACK_B, jp.len() * len, |bp| {
            for (p, dst) in jp.clone().zip(bp.chunks_exact_mut(len)) {
                self.pack_b(b, p, dst);
            }
            self.tiles(bp, jp, ip);
        });
    }

    /// Packs the whole B block once, in parallel, then splits M (the A micro-panels) across
    /// the threads, for A layouts that are packed (splitting N would pack A on every thread).
    fn shared(&self, b: &MatRef, nt: usize) {
        let len = self.kcb * self.kern.nr;
        with_buffer(&PACK_B, self.ncb.div_ceil(self.kern.nr) * len, |bp| {
            bp.par_chunks_mut(len).enumerate().with_max_len(1).for_each(|(p, dst)| self.pack_b(b, p, dst));
            self.spread_evenly(bp, nt);
        });
    }

    /// Computes the packed block `bp` on `nt` threads: a few jobs per thread so work stealing
    /// evens out a busy core, cutting M, and N as well only when M alone cannot feed every
    /// thread.
    fn spread_evenly(&self, bp: &[f32], nt: usize) {
        let (mp, np) = (self.m.div_ceil(self.kern.mr), self.ncb.div_ceil(self.kern.nr));
        let gm = mp.min(4 * nt);
        let gn = if gm >= nt { 1 } else { np.min(nt.div_ceil(gm)) };
        self.spread(bp, gm, gn);
    }

    /// Computes the packed block `bp` as `gm × gn` parallel jobs: the A micro-panels cut in
    /// `gm` ranges, the B panels in `gn`.
    fn spread(&self, bp: &[f32], gm: usize, gn: usize) {
        let (mp, np) = (self.m.div_ceil(self.kern.mr), self.ncb.div_ceil(self.kern.nr));
        let len = self.kcb * self.kern.nr;
        (0..gm * gn).into_par_iter().with_max_len(1).for_each(|t| {
            let jp = split(np, gn, t % gn);
            let first = jp.start * len;
            self.tiles(&bp[first..first + jp.len() * len], jp, split(mp, gm, t / gn));
        });
    }

    /// Computes the tiles of A micro-panels `ip` × B panels `jp`, packed in `bp`.
    fn tiles(&self, bp: &[f32], jp: Range<usize>, ip: Range<usize>) {
        let Kernel { mr, nr, tile, .. } = *self.kern;
        let (a, kcb) = (self.a, self.kcb);
        // Rows of A that are contiguous in k are read in place: MR row streams stay in L1
        // across the B panels, and packing them would cost as much as it saves. Other layouts
        // are packed A_GROUP micro-panels at a time (whole cache lines of a column-major A).
        let direct = a.col_stride == 1;
        let group = if direct { 1 } else { A_GROUP };
        with_buffer(&PACK_A, group * mr * kcb, |ap| {
            for g in ip.clone().step_by(group) {
                let g_end = ip.end.min(g + group);
                let g_rows = (g_end * mr).min(self.m) - g * mr;
                // Only the zero-padded last panel needs packing when A is read in place.
                let packed = !direct || g_rows < mr;
                if packed {
                    (self.kern.pack_a)(a, g * mr, g_rows, self.pc, kcb, ap);
                }
                for i in g..g_end {
                    let rows = mr.min(self.m - i * mr);
                    let (ptr, a_rs, a_cs) = if packed {
                        (ap[(i - g) * mr * kcb..].as_ptr(), 1, mr)
                    } else {
                        (a.data[i * mr * a.row_stride + self.pc..].as_ptr(), a.row_stride, 1)
                    };
                    for (p, bp) in jp.clone().zip(bp.chunks_exact(kcb * nr)) {
                        let cols = nr.min(self.ncb - p * nr);
                        // SAFETY: the kernel was selected for this CPU; `ptr` addresses MR rows
                        // of `kcb` floats at (a_rs, a_cs), inside A (`check_operands`)
                        // or the packed panel; `bp` is a 64-byte aligned packed panel of `kcb`
                        // steps (nr·4 bytes is a multiple of 64); the tile's rows < m and
                        // columns < n lie inside C (`blocked`'s contract).
                        unsafe {
                            let c = self.c.0.add(i * mr * self.ldc + self.jc + p * nr);
                            tile(kcb, ptr, a_rs, a_cs, bp.as_ptr(), c, self.ldc, rows, cols, self.load_c);
                        }
                    }
                }
            }
        });
    }
}

/// Part `i` of `len` items cut into `parts` near-equal contiguous ranges.
fn split(len: usize, parts: usize, i: usize) -> Range<usize> {
    len * i / parts..len * (i + 1) / parts
}

/// `tile(kc, a, a_rs, a_cs, b, c, ldc, rows, cols, load_c)`: C[rows × cols] (+)= A · B_panel,
/// where A's (r, k) is at `a[r * a_rs + k * a_cs]`.
type TileFn = unsafe fn(usize, *const f32, usize, usize, *const f32, *mut f32, usize, usize, usize, bool);

/// A microkernel with its tile shape (mr × nr) and cache blocking (kc, nc).
struct Kernel {
    mr: usize,
    nr: usize,
    kc: usize,
    nc: usize,
    tile: TileFn,
    /// `pack::pack_a` for this kernel's MR.
    pack_a: fn(&MatRef, usize, usize, usize, usize, &mut [f32]),
    /// `pack::pack_b_panel` for this kernel's NR (or a faster equivalent for its CPU).
    pack_b: unsafe fn(&MatRef, usize, usize, usize, usize, &mut [f32]),
}

impl Kernel {
    /// 6 × 64 tiles in 24 zmm accumulators (see `kernel_avx512`). KC = 512 keeps the 6 × KC
    /// A panel (12 KiB) in L1 beside the streaming B panel. The KC × NC B block (1.5 MiB)
    /// overflows Zen 4's 1 MiB L2 but streams from L3 behind the prefetcher, and measured up to
    /// ~5% faster on 2 threads than L2-sized blocks (384 × 384): fewer NC blocks mean fewer
    /// re-reads of A and fewer thread synchronisations.
    #[cfg(target_arch = "x86_64")]
    fn avx512() -> Option<Kernel> {
        use kernel_avx512 as k;
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")).then_some(Kernel {
            mr: k::MR,
            nr: k::NR,
            kc: 512,
            nc: 768,
            tile: k::tile,
            pack_a: pack::pack_a::<{ k::MR }>,
            pack_b: k::pack_b_panel,
        })
    }

    /// 6 × 16 tiles in 12 ymm accumulators, for AVX2 machines (Haswell to Zen 3). KC = 512
    /// (a 12 KiB A panel in L1) makes a transformer's 384-deep products one pass over C instead
    /// of two: with the kernel's C prefetch, ~7% faster than 256 on Zen 3's 2 threads across a
    /// training step's products (~3% of it from KC alone).
    #[cfg(target_arch = "x86_64")]
    fn avx2() -> Option<Kernel> {
        use kernel_avx2 as k;
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Kernel {
            mr: k::MR,
            nr: k::NR,
            kc: 512,
            nc: 512,
            tile: k::tile,
            pack_a: pack::pack_a::<{ k::MR }>,
            pack_b: k::pack_b_panel,
        })
    }

    fn scalar() -> Kernel {
        use kernel_scalar as k;
        Kernel {
            mr: k::MR,
            nr: k::NR,
            kc: 256,
            nc: 512,
            tile: k::tile,
            pack_a: pack::pack_a::<{ k::MR }>,
            pack_b: pack::pack_b_panel::<{ k::NR }>,
        }
    }
}

/// The best kernel this CPU runs, detected once (the crate is built for baseline x86-64, so
/// AVX-512 is reachable only through this runtime dispatch).
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = Kernel::avx512().or_else(Kernel::avx2) {
            return k;
        }
        Kernel::scalar()
    })
}

/// Runs a full-tile kernel (`full(t, ldt, load_c)` writes an MR × `nr` tile at `t`) on a scratch
/// tile and copies the `rows × cols` corner in from and back to C: the edge path of the kernels
/// that have no masked stores.
///
/// # Safety
/// `c` addresses `rows` rows of `cols` writable floats at stride `ldc`; MR · `nr` ≤ 128.
unsafe fn via_scratch(
    full: impl FnOnce(*mut f32, usize, bool),
    nr: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    load_c: bool,
) {
    #[repr(C, align(64))]
    struct Scratch([f32; 128]);
    let mut t = Scratch([0.0; 128]);
    if load_c {
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(c.add(r * ldc), t.0.as_mut_ptr().add(r * nr), cols);
        }
    }
    full(t.0.as_mut_ptr(), nr, load_c);
    for r in 0..rows {
        std::ptr::copy_nonoverlapping(t.0.as_ptr().add(r * nr), c.add(r * ldc), cols);
    }
}

/// 64-byte aligned storage for packed panels (aligned vector loads, one panel row per line).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Line {
    /// Lines as the floats they hold.
    fn floats(lines: &[Line]) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over 16 f32s, so the lines are `16 * len` plain floats.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), 16 * lines.len()) }
    }

    fn floats_mut(lines: &mut [Line]) -> &mut [f32] {
        // SAFETY: as for `floats`.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), 16 * lines.len()) }
    }
}

thread_local! {
    static PACK_A: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static PACK_B: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Lends this thread's packing buffer, grown to at least `len` floats. The buffer is taken out of
/// its slot while in use, so a re-entrant call (rayon may run another job on this thread while
/// we wait in a join) just gets a fresh one instead of aliasing.
/// Gives this thread's packing buffers the largest size the f32 product asks of them, now: a
/// compute thread calls it when it starts, so products never grow them later, when memory may
/// have run out (their growth cannot fail softly: it aborts). Where the memory is not there
/// now either, they are left to grow as products need.
pub(crate) fn reserve_buffers() {
    let kern = kernel();
    for (key, floats) in [(&PACK_B, kern.kc * kern.nc), (&PACK_A, A_GROUP * kern.mr * kern.kc)] {
        let mut buf = key.take();
        let lines = floats.div_ceil(16);
        if buf.len() < lines {
            let mut grown = Vec::new();
            if grown.try_reserve_exact(lines).is_ok() {
                grown.resize(lines, Line([0.0; 16]));
                buf = grown;
            }
        }
        key.set(buf);
    }
}

fn with_buffer<R>(key: &'static LocalKey<Cell<Vec<Line>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = key.take();
    let lines = len.div_ceil(16);
    if buf.len() < lines {
        buf = vec![Line([0.0; 16]); lines];
    }
    let out = f(&mut Line::floats_mut(&mut buf)[..len]);
    key.set(buf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values uniform in [-0.5, 0.5) from a linear congruential stream.
    fn uniform_stream(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        }
    }

    /// Every kernel this CPU can run, with small blocks so short products cross KC and NC.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut ks = vec![("scalar", Kernel::scalar())];
        #[cfg(target_arch = "x86_64")]
        {
            ks.extend(Kernel::avx2().map(|k| ("avx2", k)));
            ks.extend(Kernel::avx512().map(|k| ("avx512", k)));
        }
        for (_, k) in &mut ks {
            k.kc = 24;
            k.nc = 2 * k.nr;
        }
        ks
    }

    /// bf16 products on every layout (strided ones included) and odd k, against f64 sums of
    /// the rounded operands, bitwise equal on 1 and 2 threads.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_products_match_reference() {
        let Some(kern) = bf16::kernel() else {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        };
        let kern = Kernel { kc: 12, nc: 2 * kern.nr, ..*kern };
        let mut next = uniform_stream(0x9e37_79b9_7f4a_7c15u64);
        // (rows, cols) stored with the given strides in a buffer twice as long (for stride 2).
        fn view(data: &[f32], rows: usize, cols: usize, layout: u8) -> MatRef<'_> {
            let (row_stride, col_stride) = match layout {
                0 => (cols, 1),
                1 => (1, rows),
                _ => (2 * cols, 2),
            };
            MatRef { data, rows, cols, row_stride, col_stride }
        }
        for &(m, k, n) in &[(4, 1, 1), (5, 31, 17), (6, 24, 16), (13, 51, 140), (70, 49, 129)] {
            for (la, lb) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                let ad: Vec<f32> = (0..2 * m * k).map(|_| next()).collect();
                let bd: Vec<f32> = (0..2 * k * n).map(|_| next()).collect();
                let (a, b) = (view(&ad, m, k, la), view(&bd, k, n, lb));
                for accumulate in [false, true] {
                    let run = |nt| {
                        let mut c = vec![if accumulate { 1.0 } else { f32::NAN }; m * n];
                        // SAFETY: c holds the m × n product and is initialised.
                        unsafe { bf16::multiply(&kern, a, Panels::Pack(b), CPtr(c.as_mut_ptr()), n, accumulate, nt) };
                        c
                    };
                    let (c1, c2) = (run(1), run(2));
                    assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()), "{m}x{k}x{n}: threads differ");
                    for i in 0..m {
                        for j in 0..n {
                            let at = |v: &MatRef, r: usize, c: usize| {
                                bf16::rounded(v.data[r * v.row_stride + c * v.col_stride]) as f64
                            };
                            let want = (0..k).map(|p| at(&a, i, p) * at(&b, p, j)).sum::<f64>()
                                + if accumulate { 1.0 } else { 0.0 };
                            let got = c1[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-5,
                                "{m}x{k}x{n} layouts {la},{lb}: C[{i},{j}]={got} want {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Decoding's products from a weight's bf16 copy: x stays f32, W is rounded; on 1, 2 and 3
    /// threads bitwise alike, across the in-cache (four columns at once) and streamed paths.
    #[test]
    fn bf16_weight_products_match_reference() {
        let mut next = uniform_stream(0x2545_f491_4f6c_dd1du64);
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 15, 7),
            (2, 49, 130),
            (5, 49, 130),
            (3, 301, 1100),
            (7, 301, 1100),
            (15, 301, 1100),
            (1, 384, 1536),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<u16> = (0..n * k).map(|_| to_bf16(next())).collect();
            for accumulate in [false, true] {
                let run = |threads| {
                    let mut c = vec![if accumulate { 1.0 } else { f32::NAN }; m * n];
                    let product = || multiply_bf16_weight(MatRef::new(&x, m, k), &w, n, &mut c, n, accumulate);
                    crate::with_threads(Some(threads), product).unwrap();
                    c
                };
                let c = run(1);
                for threads in [2, 3] {
                    assert!(run(threads).iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}x{k}x{n}");
                }
                for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let weight = |p: usize| f32::from_bits((w[j * k + p] as u32) << 16) as f64;
                    let want = (0..k).map(|p| x[i * k + p] as f64 * weight(p)).sum::<f64>()
                        + if accumulate { 1.0 } else { 0.0 };
                    let got = c[i * n + j] as f64;
                    assert!((got - want).abs() < 1e-5, "{m}x{k}x{n}: C[{i},{j}]={got} want {want}");
                }
            }
        }
    }

    /// The in-place path gives each row what it would get alone: a product of up to 15 rows
    /// (the most it takes) by a weight (f32, or its bf16 copy), in cache or streamed, equals
    /// its rows' one-row products.
    #[test]
    fn small_products_do_not_depend_on_the_rows_beside_them() {
        let mut next = uniform_stream(0x51ed_270b_2734_cf11);
        for &(k, n) in &[(49, 130), (301, 1100)] {
            let x: Vec<f32> = (0..(small_m::MAX_ROWS - 1) * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let w16: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            let product = |rows: &[f32], bf16: bool| {
                let (m, mut c) = (rows.len() / k, vec![0.0; rows.len() / k * n]);
                let a = MatRef::new(rows, m, k);
                if bf16 {
                    multiply_bf16_weight(a, &w16, n, &mut c, n, false);
                } else {
                    gemm(a, MatRef::new(&w, n, k).t(), &mut c, n, false, Threads::Pool);
                }
                c
            };
            for bf16 in [false, true] {
                let together = product(&x, bf16);
                let alone: Vec<f32> = x.chunks(k).flat_map(|row| product(row, bf16)).collect();
                assert!(together.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{k}x{n} bf16 {bf16}");
            }
        }
    }

    /// Each kernel, on every layout of A and B and sizes around its tile, against f64 sums.
    #[test]
    fn every_kernel_matches_reference() {
        let mut next = uniform_stream(0x9e37_79b9_7f4a_7c15u64);
        for (name, kern) in kernels() {
            for &(m, k, n) in &[(1, 1, 1), (5, 30, 17), (6, 24, 16), (13, 50, 140), (7, 49, 129), (9, 37, 33)] {
                for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                    let ad: Vec<f32> = (0..m * k).map(|_| next()).collect();
                    let bd: Vec<f32> = (0..k * n).map(|_| next()).collect();
                    let a = if ta { MatRef::new(&ad, k, m).t() } else { MatRef::new(&ad, m, k) };
                    let b = if tb { MatRef::new(&bd, n, k).t() } else { MatRef::new(&bd, k, n) };
                    let ldc = n + 3;
                    for accumulate in [false, true] {
                        let mut c = vec![if accumulate { 1.0 } else { f32::NAN }; m * ldc];
                        // SAFETY: c holds the m × n product at stride ldc and is initialised.
                        unsafe { multiply(&kern, a, Panels::Pack(b), CPtr(c.as_mut_ptr()), ldc, accumulate, 2) };
                        for i in 0..m {
                            for j in 0..n {
                                let mut want = if accumulate { 1.0 } else { 0.0 };
                                for p in 0..k {
                                    want += ad[if ta { p * m + i } else { i * k + p }] as f64
                                        * bd[if tb { j * k + p } else { p * n + j }] as f64;
                                }
                                let got = c[i * ldc + j];
                                assert!(
                                    (got as f64 - want).abs() < 1e-4,
                                    "{name} {m}x{k}x{n} ta={ta} tb={tb} acc={accumulate}: C[{i},{j}]={got} want {want}"
                                );
                            }
                            let pad = if accumulate { 1.0 } else { f32::NAN };
                            assert!(
                                c[i * ldc + n..(i + 1) * ldc].iter().all(|x| x.to_bits() == pad.to_bits()),
                                "{name}: padding touched"
                            );
                        }
                    }
                }
            }
        }
    }
}
