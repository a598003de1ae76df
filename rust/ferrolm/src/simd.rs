//! Fast elementwise math: runtime CPU dispatch and vectorisable approximations of exp/tanh.
//!
//! The crate is compiled for baseline x86-64 so wheels run on any machine. [`vectorized`] runs
//! a closure inside a function compiled for AVX-512 or AVX2+FMA when the CPU has them; loops
//! inlined into it vectorise 16 or 8 floats wide. `exp` and `tanh` here are branch-free polynomials (libm's
//! are scalar calls), accurate to a few ulp — tested against f64 below.

/// The widest vector extension this CPU has (detected once).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
        {
            Level::Avx512
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Level::Avx2
        } else {
            Level::Baseline
        }
    })
}

/// Whether this CPU has AVX-512 (F, DQ and VL), for code with its own AVX-512 path.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    level() == Level::Avx512
}

/// Runs `f` compiled for AVX-512 or AVX2+FMA when the CPU has them (else as is). Call it
/// inside each parallel task, around the innermost loops, with an `#[inline(always)]`
/// closure: only code inlined here is widened, and LLVM keeps large closures (erf, exp)
/// out of line — compiled for baseline SSE2 — unless told.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
        unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: each variant runs only on a CPU that has the features it is compiled for.
        match level() {
            Level::Avx512 => return unsafe { with_avx512(f) },
            Level::Avx2 => return unsafe { with_avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

/// e^x for f32, relative error < 3e-7; inf above 88.72283 (where e^x passes f32::MAX),
/// exactly 0 below −87.33 (so masked −inf scores give zero probability), NaN propagates.
#[inline(always)]
pub fn exp(x_in: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LOW: f32 = -87.33;
    const HIGH: f32 = 88.722_83;
    // Adding 1.5·2^23 rounds to an integer and leaves it in the low mantissa bits, so no
    // float→int conversion (which does not vectorise well) is needed.
    const ROUND: f32 = 12_582_912.0;
    let x = x_in.clamp(LOW, HIGH);
    // x = n·ln2 + r with |r| ≤ ln2/2, e^x = 2^n · e^r
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Degree-6 Taylor–Horner polynomial for e^r on [−ln2/2, ln2/2].
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    // 2^n overflows at n = 128 (x from 127.5·ln2 ≈ 88.38) though e^x does not: there, 2^127 · 2e^r.
    let y = if exponent == 255 { (p + p) * f32::from_bits(254 << 23) } else { p * f32::from_bits(exponent << 23) };
    let y = if x_in > HIGH { f32::INFINITY } else { y };
    if x_in < LOW {
        0.0
    } else {
        y
    }
}

/// tanh for f32 via e^(2|x|), absolute error < 3e-7; exactly ±1 from |x| ≈ 9.01, where
/// the true value rounds to it (so 1 − tanh², its gradient, is 0 there too).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // For small |x| the identity 1 − 2/(e^{2a}+1) cancels; the odd Taylor series is exact there.
    let small = x * (1.0 + a * a * (-1.0 / 3.0 + a * a * (2.0 / 15.0 - a * a * 17.0 / 315.0)));
    // e^20 leaves 2/(e+1) below half an ulp of 1 (e^18, at 9, did not: 0.99999994 for ever).
    let e = exp(2.0 * if a > 10.0 { 10.0 } else { a }); // not a.min(10.0), which turns NaN into 10
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.125 {
        small
    } else {
        big
    }
}

/// The error function for f32 (Abramowitz & Stegun 7.1.26 on |x|, odd symmetry), absolute
/// error < 1e-6 (the method's 1.5e-7 plus f32 rounding): branch-free, so it vectorises
/// (libm's erff is a scalar call).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_and_gauss(x).0
}

/// erf(x) and the e^(−x²) it is computed from (the Gaussian density's shape, which GELU's
/// gradient needs too): one exp for both.
#[inline(always)]
pub fn erf_and_gauss(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let gauss = exp(-a * a);
    ((1.0 - poly * gauss).copysign(x), gauss)
}

/// `Σ_j f([xs[0][j], xs[1][j], ...])` over equally long slices, in 16 independent partial sums
/// so the loop vectorises (one running sum is a serial chain of additions that the compiler
/// may not reorder). Each block of 16 is taken as a fixed-size array, so no per-element bounds
/// check stands in the way of the 16-wide adds.
#[inline(always)]
pub fn sum_zip<const K: usize>(xs: [&[f32]; K], f: impl Fn([f32; K]) -> f32) -> f32 {
    let n = xs.first().map_or(0, |x| x.len());
    assert!(xs.iter().all(|x| x.len() == n), "sum_zip: slices of different lengths");
    let full = n / 16 * 16;
    let mut lanes = [0.0f32; 16];
    for i in (0..full).step_by(16) {
        let blocks: [&[f32; 16]; K] = xs.map(|x| x[i..i + 16].try_into().expect("16 floats"));
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += f(blocks.map(|b| b[l]));
        }
    }
    lanes.iter().sum::<f32>() + (full..n).map(|j| f(xs.map(|x| x[j]))).sum::<f32>()
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut worst_exp: f64 = 0.0;
        let mut worst_tanh: f64 = 0.0;
        for i in -200_000..=200_000 {
            let x = i as f32 * 4.3e-4; // [-86, 86]
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((super::exp(x) as f64) - e).abs() / e);
            let t = (i as f32 * 1e-4) as f64; // [-20, 20]
            worst_tanh = worst_tanh.max((super::tanh(t as f32) as f64 - t.tanh()).abs());
        }
        // The ends: e^x down to the smallest normal float, and up to f32::MAX.
        for x in (0..=10_000).flat_map(|i| [-86.0 - i as f32 * 1.33e-4, 86.0 + i as f32 * 2.7228e-4]) {
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((super::exp(x) as f64) - e).abs() / e);
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        let worst_erf = (-60_000..=60_000)
            .map(|i| i as f64 * 1e-4) // [-6, 6]
            .map(|x| (super::erf(x as f32) as f64 - libm::erf(x)).abs())
            .fold(0.0, f64::max);
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
        assert!(worst_tanh < 4e-7, "tanh absolute error {worst_tanh}");
        for x in [9.02f32, 9.5, 10.0, 20.0, 1e30, f32::INFINITY] {
            assert_eq!((super::tanh(x), super::tanh(-x)), (1.0, -1.0), "tanh({x}) saturates as f32 rounding does");
        }
        assert!(super::tanh(f32::NAN).is_nan());
        assert_eq!(super::exp(-1000.0), 0.0);
        assert!(super::exp(1000.0).is_infinite());
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn sum_zip_covers_every_index_once() {
        for n in [0usize, 1, 15, 16, 17, 37, 256, 1000] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
            let exact: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert_eq!(super::sum_zip([&x, &y], |[a, b]| a * b) as f64, exact, "n = {n}");
        }
    }
}
