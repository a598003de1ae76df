//! Fused layer normalisation over the last axis, with hand-written backward.

use rayon::prelude::*;

use crate::simd::{sum_zip, vectorized};
use crate::tensor::{filled_with, zeroed, Tensor};
use crate::{ensure, Result};

/// Rows per parallel task; fixed so parameter-gradient sums do not depend on the thread count.
const ROWS: usize = 32;

/// (mean, 1/sqrt(var + eps)) of a row whose float32 sum or squared deviations overflow (values
/// past ~1.8e19 apart, or a sum past ~3.4e38), in f64: its variance was inf, and every output a
/// silent 0 (or NaN). A row holding inf or NaN gets NaN, as before.
#[cold]
fn wide_row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = x.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + f64::from(eps)).sqrt()) as f32)
}

/// `(x − mean) / sqrt(var + eps) * weight + bias` over the last axis of size C; `weight` and
/// `bias` are `[C]` and optional.
pub fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = *x.shape().last().unwrap_or(&0);
    ensure!(x.rank() >= 1 && c > 0, Shape, "layer_norm needs a non-empty last axis, got shape {:?}", x.shape());
    for (p, name) in [(weight, "weight"), (bias, "bias")] {
        if let Some(p) = p {
            p.expect_shape(&[c], &format!("layer_norm {name}"))?;
        }
    }
    ensure!(eps >= 0.0, Argument, "layer_norm: eps must be non-negative, got {eps}");
    let rows = x.numel() / c;
    // Absent parameters become ones and zeros, so the inner loops have no branches.
    let w = weight.map_or_else(|| filled_with(c, 1.0), |w| Ok(w.to_vec()))?;
    let b = bias.map_or_else(|| filled_with(c, 0.0), |b| Ok(b.to_vec()))?;
    let mut y = zeroed(x.numel())?;
    let mut stats = filled_with(rows, (0.0f32, 0.0f32))?; // (mean, 1/std) per row, kept for backward
    {
        let xd = x.read();
        let tasks = y.par_chunks_mut(ROWS * c).zip(xd.par_chunks(ROWS * c)).zip(stats.par_chunks_mut(ROWS));
        tasks.for_each(|((y, x), stats)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((y, x), stat) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(stats) {
                        let rough = sum_zip([x], |[x]| x) / c as f32;
                        // The sum's rounding moves the mean off a constant row's value, and the
                        // deviations' ulp² then beats a small eps (BERT's 1e-12): outputs of ±1
                        // where they are 0. One correction pass makes it exact for such rows.
                        let mean = rough + sum_zip([x], |[x]| x - rough) / c as f32;
                        let var = sum_zip([x], |[x]| (x - mean) * (x - mean)) / c as f32;
                        let (mean, rstd) =
                            if var.is_finite() { (mean, 1.0 / (var + eps).sqrt()) } else { wide_row_stats(x, eps) };
                        *stat = (mean, rstd);
                        for (y, (x, (w, b))) in y.iter_mut().zip(x.iter().zip(w.iter().zip(&b))) {
                            *y = (x - mean) * rstd * w + b;
                        }
                    }
                },
            )
        });
    }
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    Ok(Tensor::from_op(y, x.shape().to_vec(), "layer_norm", &inputs, move |ctx| {
        let xd = ctx.inputs[0].read();
        let mut dx = zeroed(xd.len())?;
        // Each task returns its partial (dweight, dbias); partials are summed in task order.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(ROWS * c)
            .enumerate()
            .map(|(t, dx)| {
                vectorized(
                    #[inline(always)]
                    || {
                        let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
                        for (r, dx) in dx.chunks_exact_mut(c).enumerate() {
                            let row = t * ROWS + r;
                            let (mean, rstd) = stats[row];
                            let (x, g) = (&xd[row * c..][..c], &ctx.grad[row * c..][..c]);
                            // With x̂ = (x − mean)·rstd and d = g ⊙ w:
                            // dx = rstd · (d − mean(d) − x̂ · mean(d ⊙ x̂)).
                            let mean_d = sum_zip([g, &w], |[g, w]| g * w) / c as f32;
                            let mean_dxhat = sum_zip([g, &w, x], |[g, w, x]| g * w * (x - mean) * rstd) / c as f32;
                            let params = w.iter().zip(dw.iter_mut().zip(db.iter_mut()));
                            for ((dx, (&g, &x)), (w, (dw, db))) in dx.iter_mut().zip(g.iter().zip(x)).zip(params) {
                                let xhat = (x - mean) * rstd;
                                *dw += g * xhat;
                                *db += g;
                                *dx = rstd * (g * w - mean_d - xhat * mean_dxhat);
                            }
                        }
                        (dw, db)
                    },
                )
            })
            .collect();
        // The tasks' partial dw and db, summed in task order.
        let (dw, db) = partials.iter().fold((vec![0.0; c], vec![0.0; c]), |(mut dw, mut db), (pw, pb)| {
            super::add_assign(&mut dw, pw);
            super::add_assign(&mut db, pb);
            (dw, db)
        });
        let mut grads = vec![Some(dx)];
        if has_w {
            grads.push(Some(dw));
        }
        if has_b {
            grads.push(Some(db));
        }
        Ok(grads)
    }))
}
