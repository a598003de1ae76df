//! Single-precision matrix multiplication, the operation training time goes to.
//!
//! Every matrix is a strided view, so transposed operands cost nothing: `A^T` is `A` with its
//! row and column strides swapped.

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

    fn max_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// Whether `gemm` may use the rayon pool or must stay on the calling thread (callers that are
/// already parallel, e.g. over attention heads, pass `Serial`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Pool,
    Serial,
}

/// `C = A·B` (or `C += A·B` when `accumulate`), with C row-major `m × n` at row stride `ldc`.
pub fn gemm(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert!(ldc >= n, "gemm: ldc smaller than n");
    assert!(a.data.len() > a.max_index() || m * k == 0, "gemm: A view out of bounds");
    assert!(b.data.len() > b.max_index() || k * n == 0, "gemm: B view out of bounds");
    assert!(m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n, "gemm: C too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let work = m * n * k;
    let parallelism = if threads == Threads::Pool && work >= 48 * 48 * 48 && rayon::current_num_threads() > 1 {
        gemm_crate::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm_crate::Parallelism::None
    };
    // SAFETY: the asserts above keep every strided access of A, B and C inside its slice.
    unsafe {
        gemm_crate::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
