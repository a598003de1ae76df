//! Fused layer normalisation over the last axis, with hand-written backward.

use rayon::prelude::*;

use crate::simd::{sum_by, vectorized};
use crate::tensor::Tensor;
use crate::{ensure, Result};

/// Rows per parallel task; fixed so parameter-gradient sums do not depend on the thread count.
const ROWS: usize = 32;

/// `(x − mean) / sqrt(var + eps) * weight + bias` over the last axis of size C; `weight` and
/// `bias` are [C] and optional.
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
    let w = weight.map(|w| w.to_vec());
    let b = bias.map(|b| b.to_vec());
    let mut y = vec![0.0; x.numel()];
    let mut stats = vec![(0.0f32, 0.0f32); rows]; // (mean, 1/std) per row, kept for backward
    {
        let xd = x.read();
        y.par_chunks_mut(c).zip(xd.par_chunks(c)).zip(stats.par_iter_mut()).for_each(|((y, x), stat)| {
            vectorized(
                #[inline(always)]
                || {
                    let x = &x[..c];
                    let mean = sum_by(c, |j| x[j]) / c as f32;
                    let var = sum_by(c, |j| (x[j] - mean) * (x[j] - mean)) / c as f32;
                    let rstd = 1.0 / (var + eps).sqrt();
                    *stat = (mean, rstd);
                    for j in 0..c {
                        let xhat = (x[j] - mean) * rstd;
                        y[j] = xhat * w.as_ref().map_or(1.0, |w| w[j]) + b.as_ref().map_or(0.0, |b| b[j]);
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
        let mut dx = vec![0.0; xd.len()];
        // Each task returns its partial (dweight, dbias); partials are summed in task order.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(ROWS * c)
            .enumerate()
            .map(|(t, dx)| {
                vectorized(
                    #[inline(always)]
                    || {
                        let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
                        for (r, dx) in dx.chunks_mut(c).enumerate() {
                            let row = t * ROWS + r;
                            let (mean, rstd) = stats[row];
                            let (x, g) = (&xd[row * c..][..c], &ctx.grad[row * c..][..c]);
                            let d = |j: usize| g[j] * w.as_ref().map_or(1.0, |w| w[j]);
                            let sum_d = sum_by(c, d);
                            let sum_dx = sum_by(c, |j| d(j) * (x[j] - mean) * rstd);
                            for j in 0..c {
                                dw[j] += g[j] * (x[j] - mean) * rstd;
                                db[j] += g[j];
                            }
                            let (mean_d, mean_dx) = (sum_d / c as f32, sum_dx / c as f32);
                            for j in 0..c {
                                dx[j] = rstd * (d(j) - mean_d - (x[j] - mean) * rstd * mean_dx);
                            }
                        }
                        (dw, db)
                    },
                )
            })
            .collect();
        let sum_parts = |pick: fn(&(Vec<f32>, Vec<f32>)) -> &Vec<f32>| {
            partials.iter().fold(vec![0.0; c], |mut acc, p| {
                acc.iter_mut().zip(pick(p)).for_each(|(a, v)| *a += v);
                acc
            })
        };
        let mut grads = vec![Some(dx)];
        if has_w {
            grads.push(Some(sum_parts(|p| &p.0)));
        }
        if has_b {
            grads.push(Some(sum_parts(|p| &p.1)));
        }
        Ok(grads)
    }))
}
