//! Fast elementwise math: runtime CPU dispatch and vectorisable approximations of exp/tanh.
//!
//! The crate is compiled for baseline x86-64 so wheels run on any machine. [`vectorized`] runs
//! a closure inside a function compiled with AVX2+FMA when the CPU has them; loops inlined
//! into it vectorise 8 floats wide. `exp` and `tanh` here are branch-free polynomials (libm's
//! are scalar calls), accurate to a few ulp — tested against f64 below.

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Runs `f` compiled for AVX2+FMA when available (else as is). Call it inside each parallel
/// task, around the innermost loops.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx2_fma() {
            // SAFETY: the CPU supports the features `with_avx2` is compiled for.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

/// e^x for f32, relative error < 3e-7; inf above 88.7, exactly 0 below −87.3 (so masked
/// −inf scores give zero probability), NaN propagates.
#[inline(always)]
pub fn exp(x_in: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x_in.clamp(-87.33, 88.73);
    // x = n·ln2 + r with |r| ≤ ln2/2, e^x = 2^n · e^r
    let n = (x * LOG2E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Degree-6 Taylor–Horner polynomial for e^r on [−ln2/2, ln2/2].
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = if x_in > 88.73 { f32::INFINITY } else { p * scale };
    if x_in < -87.33 {
        0.0
    } else {
        y
    }
}

/// tanh for f32 via e^(2|x|), absolute error < 3e-7; saturates to ±1.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // For small |x| the identity 1 − 2/(e^{2a}+1) cancels; the odd Taylor series is exact there.
    let small = x * (1.0 + a * a * (-1.0 / 3.0 + a * a * (2.0 / 15.0 - a * a * 17.0 / 315.0)));
    let e = exp(2.0 * a.min(9.0));
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.125 {
        small
    } else {
        big
    }
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
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 4e-7, "tanh absolute error {worst_tanh}");
        assert_eq!(super::exp(-1000.0), 0.0);
        assert!(super::exp(1000.0).is_infinite());
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
    }
}
