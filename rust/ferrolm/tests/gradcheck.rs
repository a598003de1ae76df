//! Every op's backward against central finite differences.
//!
//! Tolerance: the loss Σ w·y is evaluated in f32 and summed in f64, with step h = 1e-2. Its
//! rounding error is about ε·|L|/h ≈ 6e-8·10/1e-2 ≈ 6e-5 and the truncation error h²·|f'''|/6
//! ≈ 2e-5 for the smooth functions here, so |analytic − numeric| ≤ 1e-3 + 1e-2·|numeric|
//! holds for a correct gradient with margin, while a wrong one (a missing term, a sign, a
//! transposed index) is off by O(1).

use ferrolm::{no_grad, ops, Tensor};

const H: f32 = 1e-2;

/// Checks the gradients of `f` with respect to every tensor in `inputs`.
fn gradcheck(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let ins: Vec<Tensor> = inputs.iter().map(|t| t.deep_clone().with_grad()).collect();
    let y = f(&ins);
    let w = Tensor::randn(y.shape(), 0.0, 1.0, 7).unwrap();
    let loss = ops::sum_all(&ops::mul(&y, &w).unwrap());
    loss.backward().unwrap();
    let w = w.to_vec();
    let eval = |ins: &[Tensor]| -> f64 {
        let y = no_grad(|| f(ins));
        let y = y.read();
        y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    for (k, t) in ins.iter().enumerate() {
        let analytic = t.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; t.numel()]);
        let base = t.to_vec();
        for i in 0..t.numel() {
            let mut v = base.clone();
            v[i] = base[i] + H;
            t.assign(&v).unwrap();
            let plus = eval(&ins);
            v[i] = base[i] - H;
            t.assign(&v).unwrap();
            let minus = eval(&ins);
            t.assign(&base).unwrap();
            let numeric = (plus - minus) / (2.0 * H as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() <= 1e-3 + 1e-2 * numeric.abs(),
                "{name}: input {k}, element {i}: analytic {a}, numeric {numeric}"
            );
        }
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, seed).unwrap()
}

/// Values at least `gap` away from zero (for ops with a kink at 0).
fn away_from_zero(shape: &[usize], seed: u64, gap: f32) -> Tensor {
    let t = randn(shape, seed);
    let v: Vec<f32> = t.to_vec().iter().map(|&x| if x.abs() < gap { x.signum() * gap + x } else { x }).collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Distinct values spaced ≥ 0.1 apart (for max/min/clamp, whose gradient jumps at ties).
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = ferrolm::rng::Rng::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    Tensor::from_vec(order.iter().map(|&i| i as f32 * 0.1 - n as f32 * 0.05 + 0.025).collect(), shape).unwrap()
}

#[test]
fn unary_ops() {
    let x = randn(&[3, 4], 1);
    let pos = Tensor::rand(&[3, 4], 0.5, 2.0, 2).unwrap();
    gradcheck("neg", std::slice::from_ref(&x), |t| ops::neg(&t[0]).unwrap());
    gradcheck("exp", std::slice::from_ref(&x), |t| ops::exp(&t[0]).unwrap());
    gradcheck("log", std::slice::from_ref(&pos), |t| ops::log(&t[0]).unwrap());
    gradcheck("sqrt", std::slice::from_ref(&pos), |t| ops::sqrt(&t[0]).unwrap());
    gradcheck("rsqrt", std::slice::from_ref(&pos), |t| ops::rsqrt(&t[0]).unwrap());
    gradcheck("tanh", std::slice::from_ref(&x), |t| ops::tanh(&t[0]).unwrap());
    gradcheck("sigmoid", std::slice::from_ref(&x), |t| ops::sigmoid(&t[0]).unwrap());
    gradcheck("log_sigmoid", &[ops::mul_scalar(&x, 4.0).unwrap()], |t| ops::log_sigmoid(&t[0]).unwrap());
    gradcheck("relu", &[away_from_zero(&[3, 4], 3, 0.05)], |t| ops::relu(&t[0]).unwrap());
    gradcheck("gelu", &[ops::mul_scalar(&x, 2.0).unwrap()], |t| ops::gelu(&t[0]).unwrap());
    gradcheck("gelu_erf", &[ops::mul_scalar(&x, 2.0).unwrap()], |t| ops::gelu_erf(&t[0]).unwrap());
    gradcheck("copy", std::slice::from_ref(&x), |t| ops::copy(&t[0]).unwrap());
    gradcheck("add_scalar", std::slice::from_ref(&x), |t| ops::add_scalar(&t[0], 3.0).unwrap());
    gradcheck("mul_scalar", std::slice::from_ref(&x), |t| ops::mul_scalar(&t[0], -2.5).unwrap());
    gradcheck("pow", std::slice::from_ref(&pos), |t| ops::pow(&t[0], 2.5).unwrap());
    gradcheck("clamp", &[distinct(&[3, 4], 4)], |t| ops::clamp(&t[0], Some(-0.3), Some(0.4)).unwrap());
    gradcheck("clamp_min_only", &[distinct(&[3, 4], 5)], |t| ops::clamp(&t[0], Some(0.07), None).unwrap());
}

#[test]
fn broadcasting_binary_ops() {
    let shapes: [(&[usize], &[usize]); 5] =
        [(&[2, 3], &[2, 3]), (&[2, 3], &[3]), (&[2, 1, 4], &[3, 1]), (&[4], &[2, 3, 4]), (&[2, 3], &[])];
    for (i, (sa, sb)) in shapes.iter().enumerate() {
        let (a, b) = (randn(sa, 10 + i as u64), randn(sb, 20 + i as u64));
        let b_pos = Tensor::rand(sb, 0.5, 2.0, 30 + i as u64).unwrap();
        gradcheck("add", &[a.clone(), b.clone()], |t| ops::add(&t[0], &t[1]).unwrap());
        gradcheck("sub", &[a.clone(), b.clone()], |t| ops::sub(&t[0], &t[1]).unwrap());
        gradcheck("mul", &[a.clone(), b.clone()], |t| ops::mul(&t[0], &t[1]).unwrap());
        gradcheck("div", &[a.clone(), b_pos.clone()], |t| ops::div(&t[0], &t[1]).unwrap());
    }
    // b's values sit halfway between a's, so no pair is within h of a tie.
    let (a, b) = (distinct(&[3, 4], 40), ops::add_scalar(&distinct(&[4], 41), 0.05).unwrap());
    gradcheck("maximum", &[a.clone(), b.clone()], |t| ops::maximum(&t[0], &t[1]).unwrap());
    gradcheck("minimum", &[a, b], |t| ops::minimum(&t[0], &t[1]).unwrap());
    // A positive base (ln a is defined), broadcast against a row of exponents of both signs.
    let (base, exponent) = (Tensor::rand(&[3, 4], 0.5, 2.0, 42).unwrap(), randn(&[4], 43));
    gradcheck("power", &[base, exponent], |t| ops::power(&t[0], &t[1]).unwrap());
}

#[test]
fn where_and_masked_fill() {
    let cond = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[4]).unwrap();
    let (a, b) = (randn(&[3, 4], 50), randn(&[3, 1], 51));
    gradcheck("where", &[a.clone(), b], |t| ops::where_(&cond, &t[0], &t[1]).unwrap());
    let mask = Tensor::from_vec(vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[3, 4]).unwrap();
    // Filling with -inf before a softmax is the attention-mask pattern: gradients stay finite.
    gradcheck("masked_fill_softmax", &[a], |t| {
        ops::softmax(&ops::masked_fill(&t[0], &mask, f32::NEG_INFINITY).unwrap(), -1).unwrap()
    });
}

#[test]
fn reductions() {
    let x = randn(&[2, 3, 4], 60);
    for axis in [0isize, 1, -1] {
        for keepdim in [false, true] {
            gradcheck("sum", std::slice::from_ref(&x), |t| ops::sum(&t[0], axis, keepdim).unwrap());
            gradcheck("mean", std::slice::from_ref(&x), |t| ops::mean(&t[0], axis, keepdim).unwrap());
            gradcheck("max", &[distinct(&[2, 3, 4], 61)], |t| ops::max(&t[0], axis, keepdim).unwrap());
        }
    }
    gradcheck("sum_all", std::slice::from_ref(&x), |t| ops::sum_all(&t[0]));
    gradcheck("mean_all", &[x], |t| ops::mean_all(&t[0]));
}

#[test]
fn shape_ops() {
    let x = randn(&[2, 3, 4], 70);
    gradcheck("reshape", std::slice::from_ref(&x), |t| ops::reshape(&ops::exp(&t[0]).unwrap(), &[4, -1]).unwrap());
    gradcheck("permute", std::slice::from_ref(&x), |t| ops::permute(&t[0], &[2, 0, 1]).unwrap());
    gradcheck("transpose", std::slice::from_ref(&x), |t| ops::transpose(&t[0], 0, -1).unwrap());
    gradcheck("narrow", std::slice::from_ref(&x), |t| ops::narrow(&t[0], 1, 1, 2).unwrap());
    let y = randn(&[2, 2, 4], 71);
    gradcheck("concat", &[x.clone(), y], |t| ops::concat(&[t[0].clone(), t[1].clone()], 1).unwrap());
    let z = randn(&[2, 3, 4], 72);
    gradcheck("stack", &[x, z], |t| ops::stack(&[t[0].clone(), t[1].clone()], 2).unwrap());
}

#[test]
fn indexing_ops() {
    let w = randn(&[5, 3], 80);
    let ids = [4i64, 0, 4, 2, 1, 4];
    gradcheck("embedding_repeated_ids", std::slice::from_ref(&w), |t| ops::embedding(&t[0], &ids, &[2, 3]).unwrap());
    let x = randn(&[3, 5, 2], 81);
    gradcheck("index_select", std::slice::from_ref(&x), |t| ops::index_select(&t[0], 1, &[3, 3, 0]).unwrap());
    let idx = [1i64, 4, 4, 0, 2, 2, 3, 1, 0, 1, 2, 3];
    gradcheck("gather", &[x], |t| ops::gather(&t[0], 1, &idx, &[3, 2, 2]).unwrap());
}

#[test]
fn softmax_family() {
    let x = ops::mul_scalar(&randn(&[3, 5], 90), 2.0).unwrap();
    for axis in [0isize, -1] {
        gradcheck("softmax", std::slice::from_ref(&x), |t| ops::softmax(&t[0], axis).unwrap());
        gradcheck("log_softmax", std::slice::from_ref(&x), |t| ops::log_softmax(&t[0], axis).unwrap());
    }
    // Rows longer than the 16-lane sums, with a remainder.
    let x = randn(&[3, 37], 91);
    gradcheck("softmax_long_rows", std::slice::from_ref(&x), |t| ops::softmax(&t[0], -1).unwrap());
    gradcheck("log_softmax_long_rows", &[x], |t| ops::log_softmax(&t[0], -1).unwrap());
}

#[test]
fn layer_norm() {
    let x = randn(&[4, 6], 100);
    let (w, b) = (randn(&[6], 101), randn(&[6], 102));
    gradcheck("layer_norm", &[x.clone(), w.clone(), b.clone()], |t| {
        ops::layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5).unwrap()
    });
    gradcheck("layer_norm_no_affine", &[x], |t| ops::layer_norm(&t[0], None, None, 1e-5).unwrap());
    // More rows than one parallel task takes (32), and rows longer than the 16-lane sums.
    let x = randn(&[70, 40], 103);
    let (w, b) = (randn(&[40], 104), randn(&[40], 105));
    gradcheck("layer_norm_many_rows", &[x.clone(), w, b], |t| {
        ops::layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5).unwrap()
    });
    gradcheck("layer_norm_many_rows_no_affine", &[x], |t| ops::layer_norm(&t[0], None, None, 1e-5).unwrap());
}

#[test]
fn dropout() {
    let x = randn(&[4, 8], 110);
    gradcheck("dropout", std::slice::from_ref(&x), |t| ops::dropout(&t[0], 0.3, 1234).unwrap());
    // The mask is a pure function of (seed, position): survivors are scaled by 1/(1−p).
    let y = ops::dropout(&x, 0.5, 99).unwrap().to_vec();
    let xs = x.to_vec();
    let kept = y.iter().filter(|v| **v != 0.0).count();
    assert!((8..=24).contains(&kept), "kept {kept} of 32 at p=0.5");
    for (a, b) in y.iter().zip(&xs) {
        assert!(*a == 0.0 || (a - 2.0 * b).abs() < 1e-6);
    }
}

#[test]
fn cross_entropy() {
    let logits = ops::mul_scalar(&randn(&[2, 3, 5], 120), 2.0).unwrap();
    let targets = [0i64, 4, -100, 2, 2, -100];
    for reduction in [ops::Reduction::Mean, ops::Reduction::Sum, ops::Reduction::None] {
        gradcheck("cross_entropy", std::slice::from_ref(&logits), |t| {
            ops::cross_entropy(&t[0], &targets, Some(-100), reduction).unwrap()
        });
    }
    // Against the definition: mean over non-ignored rows of −log softmax[target].
    let ce = ops::cross_entropy(&logits, &targets, Some(-100), ops::Reduction::Mean).unwrap().item().unwrap();
    let lsm = ops::log_softmax(&logits, -1).unwrap().to_vec();
    let picked: Vec<f32> =
        targets.iter().enumerate().filter(|(_, &t)| t != -100).map(|(r, &t)| -lsm[r * 5 + t as usize]).collect();
    let expected = picked.iter().sum::<f32>() / picked.len() as f32;
    assert!((ce - expected).abs() < 1e-5, "{ce} vs {expected}");
}

#[test]
fn matmul_and_linear() {
    let (a, b) = (randn(&[3, 4], 130), randn(&[4, 5], 131));
    gradcheck("matmul_2d", &[a, b.clone()], |t| ops::matmul(&t[0], &t[1]).unwrap());
    let a3 = randn(&[2, 3, 4], 132);
    gradcheck("matmul_shared_b", &[a3.clone(), b], |t| ops::matmul(&t[0], &t[1]).unwrap());
    gradcheck("matmul_batched", &[a3, randn(&[2, 4, 2], 133)], |t| ops::matmul(&t[0], &t[1]).unwrap());
    gradcheck("matmul_shared_a", &[randn(&[3, 4], 134), randn(&[2, 4, 2], 135)], |t| {
        ops::matmul(&t[0], &t[1]).unwrap()
    });
    // Vector operands: a row on the left, a column on the right.
    for (i, (sa, sb)) in
        [(&[4][..], &[4, 5][..]), (&[2, 3, 4], &[4]), (&[4], &[4]), (&[4], &[2, 4, 3])].iter().enumerate()
    {
        let (a, b) = (randn(sa, 140 + i as u64), randn(sb, 150 + i as u64));
        gradcheck("matmul_vector", &[a, b], |t| ops::matmul(&t[0], &t[1]).unwrap());
    }
    let (x, w, bias) = (randn(&[2, 3, 4], 136), randn(&[5, 4], 137), randn(&[5], 138));
    gradcheck("linear", &[x.clone(), w.clone(), bias], |t| ops::linear(&t[0], &t[1], Some(&t[2])).unwrap());
    gradcheck("linear_no_bias", &[x, w], |t| ops::linear(&t[0], &t[1], None).unwrap());
}

#[test]
fn attention_with_masks() {
    let (b, h, t, d) = (2, 2, 4, 3);
    let (q, k, v) = (randn(&[b, h, t, d], 140), randn(&[b, h, t, d], 141), randn(&[b, h, t, d], 142));
    let mask = [true, true, true, false, true, false, true, true];
    // Dropout's mask is a function of its seed, so the dropped attention is a smooth function too.
    let dropout = ops::Dropout::new(0.3, 9).unwrap();
    for causal in [false, true] {
        for key_mask in [None, Some(&mask[..])] {
            for drop in [None, dropout] {
                gradcheck("attention", &[q.clone(), k.clone(), v.clone()], |x| {
                    ops::attention(&x[0], &x[1], &x[2], causal, key_mask, drop).unwrap()
                });
            }
        }
    }
    // Fewer queries than keys (a KV-cache step): the queries are the last positions.
    let q2 = randn(&[b, h, 2, d], 143);
    gradcheck("attention_cached", &[q2, k, v], |x| {
        ops::attention(&x[0], &x[1], &x[2], true, Some(&mask), dropout).unwrap()
    });
    let qkv = randn(&[b, t, 3 * h * d], 144);
    gradcheck("attention_qkv", &[qkv], |x| ops::attention_qkv(&x[0], h, true, Some(&mask), dropout).unwrap());
}

/// The fused kernel equals attention composed from basic ops.
#[test]
fn attention_matches_composition() {
    let (b, h, t, d) = (2, 3, 5, 4);
    let (q, k, v) = (randn(&[b, h, t, d], 150), randn(&[b, h, t, d], 151), randn(&[b, h, t, d], 152));
    let fused = ops::attention(&q, &k, &v, true, None, None).unwrap().to_vec();
    let scores =
        ops::mul_scalar(&ops::matmul(&q, &ops::transpose(&k, -1, -2).unwrap()).unwrap(), 1.0 / (d as f32).sqrt())
            .unwrap();
    let future: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { 1.0 } else { 0.0 }).collect();
    let future = Tensor::from_vec(future, &[t, t]).unwrap();
    let p = ops::softmax(&ops::masked_fill(&scores, &future, f32::NEG_INFINITY).unwrap(), -1).unwrap();
    let composed = ops::matmul(&p, &v).unwrap().to_vec();
    for (a, c) in fused.iter().zip(&composed) {
        assert!((a - c).abs() < 1e-5, "{a} vs {c}");
    }
    // The packed layout gives the same numbers as separate heads.
    let to_packed = |x: &Tensor| {
        ops::reshape(&ops::permute(x, &[0, 2, 1, 3]).unwrap(), &[b as isize, t as isize, (h * d) as isize]).unwrap()
    };
    let qkv = ops::concat(&[to_packed(&q), to_packed(&k), to_packed(&v)], -1).unwrap();
    let packed = ops::attention_qkv(&qkv, h, true, None, None).unwrap();
    let expected = to_packed(&Tensor::from_vec(fused, &[b, h, t, d]).unwrap()).to_vec();
    for (a, c) in packed.to_vec().iter().zip(&expected) {
        assert!((a - c).abs() < 1e-6);
    }
}

/// Sequences longer than the kernel's query block (three blocks, the last partial), causal with
/// padding and with fewer queries than keys, with and without dropout: outputs and gradients
/// equal attention composed from basic ops (each gradient-checked above), the fused dropout
/// dropping exactly what `ops::dropout` drops from the [B, H, Tq, Tk] probabilities.
#[test]
fn blocked_attention_matches_composition_with_gradients() {
    let (b, h, tk, d) = (2, 2, 150, 8);
    for (tq, p) in [(150, 0.0), (70, 0.0), (150, 0.25), (70, 0.5)] {
        let seed = 164;
        let (q, k, v) = (randn(&[b, h, tq, d], 160), randn(&[b, h, tk, d], 161), randn(&[b, h, tk, d], 162));
        let mask: Vec<bool> = (0..b * tk).map(|i| i % tk < tk - 9 * (i / tk)).collect();
        let run = |fused: bool| {
            let (q, k, v) = (q.deep_clone().with_grad(), k.deep_clone().with_grad(), v.deep_clone().with_grad());
            let y = if fused {
                ops::attention(&q, &k, &v, true, Some(&mask), ops::Dropout::new(p, seed).unwrap()).unwrap()
            } else {
                let s = ops::mul_scalar(
                    &ops::matmul(&q, &ops::transpose(&k, -1, -2).unwrap()).unwrap(),
                    1.0 / (d as f32).sqrt(),
                )
                .unwrap();
                let hidden: Vec<f32> = (0..b * tq * tk)
                    .map(|n| {
                        let (bi, i, j) = (n / (tq * tk), (n / tk) % tq, n % tk);
                        if j + tq > i + tk || !mask[bi * tk + j] {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let hidden = Tensor::from_vec(hidden, &[b, 1, tq, tk]).unwrap();
                let probs = ops::softmax(&ops::masked_fill(&s, &hidden, f32::NEG_INFINITY).unwrap(), -1).unwrap();
                ops::matmul(&ops::dropout(&probs, p, seed).unwrap(), &v).unwrap()
            };
            let w = Tensor::randn(y.shape(), 0.0, 1.0, 163).unwrap();
            ops::sum_all(&ops::mul(&y, &w).unwrap()).backward().unwrap();
            [y.to_vec(), q.grad().unwrap().to_vec(), k.grad().unwrap().to_vec(), v.grad().unwrap().to_vec()]
        };
        let (fused, composed) = (run(true), run(false));
        for (what, (a, c)) in ["out", "dq", "dk", "dv"].iter().zip(fused.iter().zip(&composed)) {
            for (x, y) in a.iter().zip(c) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "tq={tq} p={p} {what}: {x} vs {y}");
            }
        }
    }
}

/// The packed projection over several query blocks (each batch's heads interleaved in one
/// chunk) gives the outputs and gradients of separate heads, dropping the same probabilities.
#[test]
fn packed_attention_matches_separate_heads_over_blocks() {
    let (b, h, t, d) = (3, 2, 150, 8);
    let mask: Vec<bool> = (0..b * t).map(|i| i % t < t - 7 * (i / t)).collect();
    let qkv = randn(&[b, t, 3 * h * d], 170).with_grad();
    let dropout = ops::Dropout::new(0.2, 172).unwrap();
    let y = ops::attention_qkv(&qkv, h, true, Some(&mask), dropout).unwrap();
    let w = Tensor::randn(y.shape(), 0.0, 1.0, 171).unwrap();
    ops::sum_all(&ops::mul(&y, &w).unwrap()).backward().unwrap();

    // The same numbers through [B, H, T, D] heads: split, attend, merge.
    let heads = |x: &Tensor| {
        ops::permute(&ops::reshape(x, &[b as isize, t as isize, h as isize, d as isize]).unwrap(), &[0, 2, 1, 3])
            .unwrap()
    };
    let merged = |x: &Tensor| {
        ops::reshape(&ops::permute(x, &[0, 2, 1, 3]).unwrap(), &[b as isize, t as isize, (h * d) as isize]).unwrap()
    };
    let qkv2 = qkv.deep_clone().with_grad();
    let part = |i: usize| heads(&ops::narrow(&qkv2, -1, i * h * d, h * d).unwrap());
    let y2 = merged(&ops::attention(&part(0), &part(1), &part(2), true, Some(&mask), dropout).unwrap());
    ops::sum_all(&ops::mul(&y2, &w).unwrap()).backward().unwrap();
    for (what, a, c) in
        [("out", y.to_vec(), y2.to_vec()), ("grad", qkv.grad().unwrap().to_vec(), qkv2.grad().unwrap().to_vec())]
    {
        for (x, y) in a.iter().zip(&c) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{what}: {x} vs {y}");
        }
    }
}

/// Adds and reshapes pass their output gradient on shared, not copied: a tensor used twice by
/// one add, residual chains, and a reshape feeding several consumers still get exact sums.
#[test]
fn shared_pass_through_gradients() {
    let (x, w) = (randn(&[3, 4], 180), randn(&[3, 4], 181));
    gradcheck("shared", &[x, w], |t| {
        let twice = ops::add(&t[0], &t[0]).unwrap();
        let r = ops::add(&t[0], &ops::tanh(&twice).unwrap()).unwrap();
        let flat = ops::reshape(&ops::add_scalar(&r, 0.5).unwrap(), &[-1]).unwrap();
        let back = ops::reshape(&ops::mul(&flat, &flat).unwrap(), &[3, 4]).unwrap();
        ops::add(&ops::add(&r, &back).unwrap(), &ops::mul(&t[1], &r).unwrap()).unwrap()
    });
}
