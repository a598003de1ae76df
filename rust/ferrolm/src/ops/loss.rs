//! Fused, numerically stable cross-entropy over logits: forward needs only each row's
//! log-sum-exp, and backward recomputes the softmax row by row, so no [N, V] buffer is kept.

use rayon::prelude::*;

use super::softmax::{max_and_ln_sum, softmax_in_place};
use crate::simd::vectorized;
use crate::tensor::{copied, zeroed, Tensor};
use crate::{ensure, Result};

/// How per-position losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over positions whose target is not ignored (0 when every target is ignored).
    Mean,
    /// Sum over positions whose target is not ignored.
    Sum,
    /// One loss per position, shaped like the targets (0 at ignored positions).
    None,
}

/// Cross-entropy of `logits` [..., V] against integer `targets` (one per row of logits).
/// Rows whose target equals `ignore_index` contribute neither loss nor gradient.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &[i64],
    ignore_index: Option<i64>,
    reduction: Reduction,
) -> Result<Tensor> {
    let v = *logits.shape().last().unwrap_or(&0);
    ensure!(
        logits.rank() >= 1 && v > 0,
        Shape,
        "cross_entropy: logits need a non-empty class axis, got {:?}",
        logits.shape()
    );
    let rows = logits.numel() / v;
    ensure!(
        targets.len() == rows,
        Shape,
        "cross_entropy: {} targets for {rows} rows of logits {:?}",
        targets.len(),
        logits.shape()
    );
    let ignored = move |t: i64| Some(t) == ignore_index;
    for &t in targets {
        ensure!(ignored(t) || (t >= 0 && (t as u64) < v as u64), Index, "cross_entropy: target {t} is outside 0..{v}");
    }
    let targets = copied(targets)?; // kept for backward
    let count = targets.iter().filter(|&&t| !ignored(t)).count();
    let mut losses = zeroed(rows)?;
    losses.par_iter_mut().zip(logits.read().par_chunks(v).zip(targets.par_iter())).for_each(|(loss, (row, &t))| {
        if !ignored(t) {
            let (max, ln_sum) = vectorized(
                #[inline(always)]
                || max_and_ln_sum(row),
            );
            *loss = (max - row[t as usize]) + ln_sum;
        }
    });
    let scale = match reduction {
        Reduction::Mean if count > 0 => 1.0 / count as f32,
        Reduction::Mean => 0.0,
        _ => 1.0,
    };
    let (y, shape) = match reduction {
        Reduction::None => (losses, logits.shape()[..logits.rank() - 1].to_vec()),
        _ => (vec![(losses.iter().map(|&l| l as f64).sum::<f64>() * scale as f64) as f32], vec![]),
    };
    let per_row = reduction == Reduction::None;
    Ok(Tensor::from_op(y, shape, "cross_entropy", &[logits], move |ctx| {
        // d logits = (softmax − onehot(target)) · upstream gradient of that row's loss
        let x = ctx.inputs[0].read();
        let mut g = zeroed(x.len())?;
        g.par_chunks_mut(v).zip(x.par_chunks(v)).enumerate().for_each(|(r, (g, row))| {
            let t = targets[r];
            if ignored(t) {
                return;
            }
            g.copy_from_slice(row);
            vectorized(
                #[inline(always)]
                || softmax_in_place(g),
            );
            g[t as usize] -= 1.0;
            let up = if per_row { ctx.grad[r] } else { ctx.grad[0] * scale };
            g.iter_mut().for_each(|gi| *gi *= up);
        });
        Ok(vec![Some(g)])
    }))
}
