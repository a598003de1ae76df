use ferrolm::gemm::{gemm, product, MatRef, Threads};

/// Small deterministic generator (xorshift64*), values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
    }
}

/// How an operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major with `pad` extra floats per row.
    Rows(usize),
    /// Stored transposed (column-major) with `pad` extra floats per column, read through `.t()`.
    Cols(usize),
    /// Neither stride is 1: row-major with every other float skipped.
    Sparse,
}

/// Storage for a `rows × cols` operand in `layout`, and the view of it.
/// Builds the view of an operand over its storage.
type View = Box<dyn Fn(&[f32]) -> MatRef<'_>>;

fn operand(rng: &mut Rng, rows: usize, cols: usize, layout: Layout) -> (Vec<f32>, View) {
    match layout {
        Layout::Rows(pad) => {
            let ld = cols + pad;
            (rng.vec(rows * ld + 1), Box::new(move |d| MatRef::strided(d, rows, cols, ld)))
        }
        Layout::Cols(pad) => {
            let ld = rows + pad;
            (rng.vec(cols * ld + 1), Box::new(move |d| MatRef::strided(d, cols, rows, ld).t()))
        }
        Layout::Sparse => {
            let ld = 2 * cols + 3;
            (rng.vec(rows * ld + 1), Box::new(move |d| MatRef { data: d, rows, cols, row_stride: ld, col_stride: 2 }))
        }
    }
}

fn at(v: &MatRef, i: usize, j: usize) -> f64 {
    v.data[i * v.row_stride + j * v.col_stride] as f64
}

/// Checks `gemm` against an f64 reference for one shape and layout; C has padding columns that
/// must stay untouched, and when overwriting starts as NaN (which must not leak).
fn check(rng: &mut Rng, (m, k, n): (usize, usize, usize), la: Layout, lb: Layout, accumulate: bool, threads: Threads) {
    let (ad, av) = operand(rng, m, k, la);
    let (bd, bv) = operand(rng, k, n, lb);
    let (a, b) = (av(&ad), bv(&bd));
    let ldc = n + 5;
    let c0: Vec<f32> = if accumulate { rng.vec(m * ldc) } else { vec![f32::NAN; m * ldc] };
    let mut c = c0.clone();
    gemm(a, b, &mut c, ldc, accumulate, threads);
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert!(got.to_bits() == c0[i * ldc + j].to_bits(), "padding of C touched at ({i},{j})");
                continue;
            }
            let (mut want, mut mag) =
                (if accumulate { c0[i * ldc + j] as f64 } else { 0.0 }, want_abs(accumulate, c0[i * ldc + j]));
            for p in 0..k {
                want += at(&a, i, p) * at(&b, p, j);
                mag += (at(&a, i, p) * at(&b, p, j)).abs();
            }
            let tol = 4.0 * f32::EPSILON as f64 * (k as f64 + 2.0) * mag + 1e-30;
            assert!(
                (got as f64 - want).abs() <= tol,
                "m={m} k={k} n={n} {la:?}·{lb:?} acc={accumulate}: C[{i},{j}] = {got}, want {want}"
            );
        }
    }
}

fn want_abs(accumulate: bool, c: f32) -> f64 {
    if accumulate {
        c.abs() as f64
    } else {
        0.0
    }
}

const LAYOUTS: [Layout; 5] = [Layout::Rows(0), Layout::Rows(3), Layout::Cols(0), Layout::Cols(7), Layout::Sparse];

#[test]
fn edge_shapes_all_layouts() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let shapes = [
        (1, 1, 1),
        (1, 4, 1),
        (7, 5, 13),
        (6, 8, 64),
        (5, 3, 65),
        (13, 17, 63),
        (12, 1, 128),
        (1, 64, 300),
        (3, 37, 9),
        (31, 33, 17),
        (64, 64, 64),
        (65, 70, 129),
        (2, 300, 3),
        (100, 2, 100),
    ];
    for &(m, k, n) in &shapes {
        for la in LAYOUTS {
            for lb in LAYOUTS {
                for accumulate in [false, true] {
                    check(&mut rng, (m, k, n), la, lb, accumulate, Threads::Serial);
                }
            }
        }
    }
}

#[test]
fn long_and_thin() {
    let mut rng = Rng(77);
    for &(m, k, n) in &[
        (1, 64, 4096),
        (4096, 64, 1),
        (4096, 1, 7),
        (3, 2000, 5),
        (1, 1, 4096),
        (4096, 3, 1),
        (2, 301, 1100),
        (7, 301, 1100),
    ] {
        for (la, lb) in
            [(Layout::Rows(0), Layout::Rows(0)), (Layout::Rows(0), Layout::Cols(0)), (Layout::Cols(0), Layout::Rows(0))]
        {
            check(&mut rng, (m, k, n), la, lb, false, Threads::Pool);
            check(&mut rng, (m, k, n), la, lb, true, Threads::Pool);
        }
    }
}

/// Shapes that cross the cache blocks (k > KC, n > NC) and run on the pool.
#[test]
fn random_shapes_blocked_and_threaded() {
    let mut rng = Rng(0xfeed_beef);
    for round in 0..24 {
        let (m, k, n) =
            if round < 4 { (97, 900, 801) } else { (1 + rng.below(300), 1 + rng.below(700), 1 + rng.below(600)) };
        let la = LAYOUTS[rng.below(LAYOUTS.len())];
        let lb = LAYOUTS[rng.below(LAYOUTS.len())];
        let threads = if round % 3 == 0 { Threads::Serial } else { Threads::Pool };
        check(&mut rng, (m, k, n), la, lb, round % 2 == 1, threads);
    }
}

#[test]
fn zero_sizes() {
    let a = vec![1.0f32; 12];
    let mut c = vec![f32::NAN; 12];
    // k = 0 overwrites with zeros ...
    gemm(MatRef::new(&a[..0], 3, 0), MatRef::new(&a[..0], 0, 4), &mut c, 4, false, Threads::Pool);
    assert!(c.iter().all(|&x| x == 0.0));
    // ... and leaves C alone when accumulating.
    c.fill(2.0);
    gemm(MatRef::new(&a[..0], 3, 0), MatRef::new(&a[..0], 0, 4), &mut c, 4, true, Threads::Pool);
    assert!(c.iter().all(|&x| x == 2.0));
    // m = 0 or n = 0 touch nothing (C may be empty).
    gemm(MatRef::new(&a, 0, 3), MatRef::new(&a, 3, 4), &mut [], 4, false, Threads::Pool);
    gemm(MatRef::new(&a, 3, 4), MatRef::new(&a, 4, 0), &mut [], 0, false, Threads::Pool);
}

/// `product` (a fresh C, never zeroed) equals `gemm` into a zeroed C, bitwise, on every layout,
/// including the few-row and empty shapes that take other paths.
#[test]
fn product_equals_gemm() {
    let mut rng = Rng(0x51ce);
    for &(m, k, n) in
        &[(1, 9, 5), (3, 40, 70), (6, 8, 64), (13, 17, 63), (65, 70, 129), (97, 600, 801), (8, 0, 5), (0, 3, 4)]
    {
        for la in LAYOUTS {
            for lb in LAYOUTS {
                let (ad, av) = operand(&mut rng, m, k, la);
                let (bd, bv) = operand(&mut rng, k, n, lb);
                let (a, b) = (av(&ad), bv(&bd));
                let mut want = vec![0.0; m * n];
                gemm(a, b, &mut want, n, false, Threads::Pool);
                let got = product(a, b, Threads::Pool).unwrap();
                assert_eq!(got.len(), m * n);
                assert!(
                    got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{k}x{n} {la:?}·{lb:?}: product differs from gemm"
                );
            }
        }
    }
}

/// The same product on 1, 2 and 3 threads and serially is bitwise identical.
#[test]
fn thread_count_invariance() {
    let mut rng = Rng(99);
    for &(m, k, n, ta, tb) in &[
        (768, 128, 384, false, false),
        (300, 1000, 500, false, true),
        (129, 777, 900, true, false),
        (5, 500, 1000, false, false),
        (2000, 64, 7, true, true),
    ] {
        let ad = rng.vec(m * k);
        let bd = rng.vec(k * n);
        let a = if ta { MatRef::new(&ad, k, m).t() } else { MatRef::new(&ad, m, k) };
        let b = if tb { MatRef::new(&bd, n, k).t() } else { MatRef::new(&bd, k, n) };
        let run = |nt: usize, threads: Threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(nt).build().unwrap();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| gemm(a, b, &mut c, n, false, threads));
            c
        };
        let one = run(1, Threads::Pool);
        for other in [run(2, Threads::Pool), run(3, Threads::Pool), run(2, Threads::Serial)] {
            assert!(
                one.iter().zip(&other).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{k}x{n}: results depend on threads"
            );
        }
    }
}

#[test]
#[should_panic(expected = "gemm: A view out of bounds")]
fn rejects_short_a() {
    let a = vec![0.0f32; 11];
    let b = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 9];
    gemm(MatRef::new(&a, 3, 4), MatRef::new(&b, 4, 3), &mut c, 3, false, Threads::Serial);
}

#[test]
#[should_panic(expected = "gemm: B view out of bounds")]
fn rejects_overflowing_stride() {
    let a = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 9];
    let b = MatRef { data: &a, rows: 4, cols: 3, row_stride: usize::MAX / 2, col_stride: 1 };
    gemm(MatRef::new(&a, 3, 4), b, &mut c, 3, false, Threads::Serial);
}

#[test]
#[should_panic(expected = "gemm: C too small")]
fn rejects_short_c() {
    let a = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 8];
    gemm(MatRef::new(&a, 3, 4), MatRef::new(&a, 4, 3), &mut c, 3, false, Threads::Serial);
}

#[test]
fn product_returns_an_error_for_operands_that_do_not_fit() {
    let a = vec![0.0f32; 6];
    let e = product(MatRef::new(&a, 2, 3), MatRef::new(&a, 2, 3), Threads::Serial).unwrap_err();
    assert!(matches!(e, ferrolm::Error::Shape(_)) && e.to_string().contains("inner dimensions differ"), "{e}");
    let e = product(MatRef::new(&a[..5], 2, 3), MatRef::new(&a, 3, 2), Threads::Serial).unwrap_err();
    assert!(e.to_string().contains("A view out of bounds"), "{e}");
}
