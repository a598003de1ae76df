//! Indexing ops: index_select (rows by id, e.g. embedding lookup) and gather (one entry per
//! position, e.g. the log-prob of each chosen token). Their backward passes scatter-add.

use rayon::prelude::*;

use super::{filled, split_at_axis, GRAIN};
use crate::tensor::{checked_numel, filled_with, resolve_axis, zeroed, zeros_for, Tensor};
use crate::{ensure, Result};

/// Checks every id against `0..n` and converts it to usize.
fn checked_ids(ids: &[i64], n: usize, what: &str) -> Result<Vec<usize>> {
    let mut checked = filled_with(ids.len(), 0)?;
    for (c, &i) in checked.iter_mut().zip(ids) {
        ensure!(i >= 0 && (i as u64) < n as u64, Index, "{what}: index {i} is out of range for size {n}");
        *c = i as usize;
    }
    Ok(checked)
}

/// Picks entries `ids` along `axis`: the output has `ids.len()` entries on that axis.
pub fn index_select(x: &Tensor, axis: isize, ids: &[i64]) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let ids = checked_ids(ids, n, "index_select")?;
    let k = ids.len();
    let data = x.read();
    let mut shape = x.shape().to_vec();
    shape[axis] = k;
    let mut y = zeros_for(&shape)?;
    if inner > 0 {
        y.par_chunks_mut(inner).enumerate().for_each(|(r, row)| {
            let (o, j) = (r / k, r % k);
            row.copy_from_slice(&data[(o * n + ids[j]) * inner..][..inner]);
        });
    }
    drop(data);
    Ok(Tensor::from_op(y, shape, "index_select", &[x], move |ctx| {
        // Repeated ids add up, so accumulate serially per outer block, in parallel across blocks.
        let mut g = zeroed(outer * n * inner)?;
        if n * inner > 0 {
            g.par_chunks_mut(n * inner).enumerate().for_each(|(o, block)| {
                for (j, &id) in ids.iter().enumerate() {
                    let src = &ctx.grad[(o * k + j) * inner..][..inner];
                    block[id * inner..][..inner].iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
            });
        }
        Ok(vec![Some(g)])
    }))
}

/// Embedding lookup: rows of `weight` [V, C] for `ids` of shape `ids_shape`, giving
/// `ids_shape + [C]`.
pub fn embedding(weight: &Tensor, ids: &[i64], ids_shape: &[usize]) -> Result<Tensor> {
    ensure!(weight.rank() == 2, Shape, "embedding: weight must be [vocab, dim], got {:?}", weight.shape());
    ensure!(
        checked_numel(ids_shape).ok() == Some(ids.len()),
        Shape,
        "embedding: {} ids do not fill shape {ids_shape:?}",
        ids.len()
    );
    let rows = index_select(weight, 0, ids)?;
    let mut shape: Vec<isize> = ids_shape.iter().map(|&d| d as isize).collect();
    shape.push(weight.shape()[1] as isize);
    super::reshape(&rows, &shape)
}

/// `out[.., j, ..] = x[.., idx[.., j, ..], ..]` along `axis` (torch.gather): `idx` has x's
/// rank and shape except along `axis`, where it may have any length.
pub fn gather(x: &Tensor, axis: isize, idx: &[i64], idx_shape: &[usize]) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    ensure!(
        checked_numel(idx_shape).ok() == Some(idx.len()),
        Shape,
        "gather: {} indices do not fill shape {idx_shape:?}",
        idx.len()
    );
    ensure!(
        idx_shape.len() == x.rank() && (0..x.rank()).all(|d| d == axis || idx_shape[d] == x.shape()[d]),
        Shape,
        "gather: index shape {idx_shape:?} must match input shape {:?} except along axis {axis}",
        x.shape()
    );
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let k = idx_shape[axis];
    let idx = checked_ids(idx, n, "gather")?;
    let data = x.read();
    // Position p of the output is (o, j, i); it reads x at (o, idx[p], i).
    let source = move |p: usize| {
        let (o, rest) = (p / (k * inner), p % (k * inner));
        (o * n + idx[p]) * inner + rest % inner
    };
    // SAFETY: every element of each chunk is written.
    let y = unsafe {
        filled(idx_shape.iter().product(), GRAIN, |c, out| {
            out.iter_mut().enumerate().for_each(|(i, y)| _ = y.write(data[source(c * GRAIN + i)]));
        })
    }?;
    drop(data);
    Ok(Tensor::from_op(y, idx_shape.to_vec(), "gather", &[x], move |ctx| {
        let mut g = zeroed(outer * n * inner)?;
        for (p, &gp) in ctx.grad.iter().enumerate() {
            g[source(p)] += gp;
        }
        Ok(vec![Some(g)])
    }))
}
