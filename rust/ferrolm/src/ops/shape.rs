//! Shape ops: reshape (shares storage), permute/transpose, narrow, concat and stack.

use ndarray::{ArrayViewD, IxDyn};

use super::split_at_axis;
use crate::autograd::Grad;
use crate::tensor::{checked_numel, reserved, resolve_axis, zeroed, Tensor};
use crate::{bail, ensure, Result};

/// Resolves a requested shape with at most one `-1` against an element count.
pub fn infer_shape(requested: &[isize], count: usize) -> Result<Vec<usize>> {
    let unknown = requested.iter().filter(|&&d| d == -1).count();
    ensure!(unknown <= 1, Shape, "reshape: at most one dimension can be -1, got {requested:?}");
    ensure!(requested.iter().all(|&d| d >= -1), Shape, "reshape: negative dimension in {requested:?}");
    // Products are checked: a shape that wraps around usize must not match a small count.
    let Some(known) = requested.iter().filter(|&&d| d != -1).try_fold(1usize, |n, &d| n.checked_mul(d as usize)) else {
        bail!(Shape, "reshape: {count} elements cannot take shape {requested:?}");
    };
    let shape: Vec<usize> = if unknown == 1 {
        ensure!(
            known != 0 && count.is_multiple_of(known),
            Shape,
            "reshape: cannot infer -1 in {requested:?} for {count} elements"
        );
        requested.iter().map(|&d| if d == -1 { count / known } else { d as usize }).collect()
    } else {
        requested.iter().map(|&d| d as usize).collect()
    };
    ensure!(
        checked_numel(&shape).ok() == Some(count),
        Shape,
        "reshape: {count} elements cannot take shape {requested:?}"
    );
    Ok(shape)
}

/// The same elements in a new shape (one dimension may be -1). No copy: storage is shared.
pub fn reshape(x: &Tensor, shape: &[isize]) -> Result<Tensor> {
    let shape = infer_shape(shape, x.numel())?;
    Ok(Tensor::with_storage(x.storage().clone(), shape, "reshape", &[x], Box::new(|_| Ok(vec![Some(Grad::Output)]))))
}

/// Reorders dimensions: output dimension i is input dimension `dims[i]`.
pub fn permute(x: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let rank = x.rank();
    let mut seen = vec![false; rank];
    ensure!(dims.len() == rank, Shape, "permute: {} dims given for a tensor of rank {rank}", dims.len());
    for &d in dims {
        ensure!(d < rank && !seen[d], Argument, "permute: {dims:?} is not a permutation of 0..{rank}");
        seen[d] = true;
    }
    let y = permuted(&x.read(), x.shape(), dims);
    let shape: Vec<usize> = dims.iter().map(|&d| x.shape()[d]).collect();
    let mut inverse = vec![0; rank];
    dims.iter().enumerate().for_each(|(i, &d)| inverse[d] = i);
    let out_shape = shape.clone();
    Ok(Tensor::from_op(y, shape, "permute", &[x], move |ctx| Ok(vec![Some(permuted(ctx.grad, &out_shape, &inverse))])))
}

fn permuted(data: &[f32], shape: &[usize], dims: &[usize]) -> Vec<f32> {
    let view = ArrayViewD::from_shape(IxDyn(shape), data).expect("data matches shape");
    let p = view.permuted_axes(IxDyn(dims));
    p.as_standard_layout().into_owned().into_raw_vec_and_offset().0
}

/// Swaps two dimensions (negative axes count from the end).
pub fn transpose(x: &Tensor, a: isize, b: isize) -> Result<Tensor> {
    let (a, b) = (resolve_axis(a, x.rank())?, resolve_axis(b, x.rank())?);
    let mut dims: Vec<usize> = (0..x.rank()).collect();
    dims.swap(a, b);
    permute(x, &dims)
}

/// `len` entries of `axis` starting at `start` (a copy).
pub fn narrow(x: &Tensor, axis: isize, start: usize, len: usize) -> Result<Tensor> {
    let axis = resolve_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    ensure!(
        start.checked_add(len).is_some_and(|end| end <= n),
        Index,
        "narrow: {len} entries from {start} do not fit axis {axis} of size {n}"
    );
    let data = x.read();
    let mut y = reserved(outer * len * inner)?;
    // Rows are visited only when they hold data: an empty [2⁴⁰, 0] input has 2⁴⁰ empty rows.
    let rows = if len * inner > 0 { outer } else { 0 };
    for o in 0..rows {
        y.extend_from_slice(&data[(o * n + start) * inner..(o * n + start + len) * inner]);
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    Ok(Tensor::from_op(y, shape, "narrow", &[x], move |ctx| {
        let mut g = zeroed(outer * n * inner)?;
        for o in 0..rows {
            g[(o * n + start) * inner..(o * n + start + len) * inner]
                .copy_from_slice(&ctx.grad[o * len * inner..(o + 1) * len * inner]);
        }
        Ok(vec![Some(g)])
    }))
}

/// Joins tensors along an existing axis; all other dimensions must agree.
pub fn concat(xs: &[Tensor], axis: isize) -> Result<Tensor> {
    let Some(first) = xs.first() else { bail!(Argument, "concat: no tensors given") };
    let axis = resolve_axis(axis, first.rank())?;
    for x in xs {
        let same_rank = x.rank() == first.rank();
        ensure!(
            same_rank && (0..x.rank()).all(|d| d == axis || x.shape()[d] == first.shape()[d]),
            Shape,
            "concat along axis {axis}: shape {:?} does not match {:?}",
            x.shape(),
            first.shape()
        );
    }
    let (outer, _, inner) = split_at_axis(first.shape(), axis);
    let sizes: Vec<usize> = xs.iter().map(|x| x.shape()[axis]).collect();
    let total = sizes.iter().try_fold(0usize, |t, &n| t.checked_add(n));
    let total = total
        .ok_or_else(|| crate::Error::Memory(format!("concat: the joined axis of {} tensors is too long", xs.len())))?;
    let mut shape = first.shape().to_vec();
    shape[axis] = total;
    let mut y = reserved(checked_numel(&shape)?)?;
    // Rows are visited only when they hold data: an empty [2⁴⁰, 0] input has 2⁴⁰ empty rows.
    let rows = if total * inner > 0 { outer } else { 0 };
    let reads: Vec<_> = xs.iter().map(|x| x.read()).collect();
    for o in 0..rows {
        for (data, &n) in reads.iter().zip(&sizes) {
            y.extend_from_slice(&data[o * n * inner..(o + 1) * n * inner]);
        }
    }
    drop(reads);
    let inputs: Vec<&Tensor> = xs.iter().collect();
    Ok(Tensor::from_op(y, shape, "concat", &inputs, move |ctx| {
        let mut grads: Vec<Vec<f32>> = sizes.iter().map(|n| reserved(outer * n * inner)).collect::<Result<_>>()?;
        let mut at = 0;
        for _ in 0..rows {
            for (g, &n) in grads.iter_mut().zip(&sizes) {
                g.extend_from_slice(&ctx.grad[at..at + n * inner]);
                at += n * inner;
            }
        }
        Ok(grads.into_iter().map(Some).collect())
    }))
}

/// Joins equally shaped tensors along a new axis.
pub fn stack(xs: &[Tensor], axis: isize) -> Result<Tensor> {
    let Some(first) = xs.first() else { bail!(Argument, "stack: no tensors given") };
    let axis = resolve_axis(axis, first.rank() + 1)?;
    let mut expanded = Vec::with_capacity(xs.len());
    for x in xs {
        ensure!(x.shape() == first.shape(), Shape, "stack: shape {:?} differs from {:?}", x.shape(), first.shape());
        let mut shape: Vec<isize> = x.shape().iter().map(|&d| d as isize).collect();
        shape.insert(axis, 1);
        expanded.push(reshape(x, &shape)?);
    }
    concat(&expanded, axis as isize)
}
