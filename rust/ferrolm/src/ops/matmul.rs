//! Matrix products: `matmul` (batched, numpy-style) and the fused `linear` layer
//! `x·Wᵀ + b`. Transposed operands in backward are strided views, never copies.

use rayon::prelude::*;

use super::elementwise::{broadcast_offset, broadcast_shape, broadcast_strides};
use super::packed_weights::packed_weight;
use super::reduce::sum_axis_raw;
use super::shape::reshape;
use super::{filled_in, GRAIN};
use crate::gemm::{gemm, gemm_packed, multiply_bf16_weight, product, reads_bf16_weight, MatRef, Threads};
use crate::tensor::{checked_numel, numel, reserved, zeroed, zeros_for, Tensor};
use crate::{ensure, Error, Result};

/// Matrix product over the last two axes: [..., M, K] · [..., K, N] → [..., M, N]. Leading
/// (batch) axes broadcast as numpy's do (an operand without them is shared by every batch).
/// As in numpy, a vector operand is a one-row matrix on the left, a one-column matrix on the
/// right, and that axis is dropped from the result (vector · vector is a scalar).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    ensure!(
        a.rank() >= 1 && b.rank() >= 1,
        Shape,
        "matmul needs operands of rank ≥ 1, got {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let (ra, rb) = (a.rank(), b.rank());
    let k = a.shape()[ra - 1];
    let b_rows = if rb == 1 { b.shape()[0] } else { b.shape()[rb - 2] };
    ensure!(b_rows == k, Shape, "matmul: inner dimensions differ in {:?} · {:?}", a.shape(), b.shape());
    if ra == 1 || rb == 1 {
        let as_matrix = |x: &Tensor, shape: [isize; 2]| if x.rank() == 1 { reshape(x, &shape) } else { Ok(x.clone()) };
        let y = matmul(&as_matrix(a, [1, k as isize])?, &as_matrix(b, [k as isize, 1])?)?;
        let mut shape: Vec<isize> = y.shape().iter().map(|&d| d as isize).collect();
        let rank = shape.len();
        if rb == 1 {
            shape.remove(rank - 1);
        }
        if ra == 1 {
            shape.remove(rank - 2);
        }
        return reshape(&y, &shape);
    }
    let (m, n) = (a.shape()[ra - 2], b.shape()[rb - 1]);
    let (batch_a, batch_b) = (&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
    if batch_b.is_empty() {
        // b is shared: fold a's batch axes into its rows and do one large product.
        let rows = numel(batch_a) * m;
        let mut shape = a.shape().to_vec();
        shape[ra - 1] = n;
        return product_2d(a, b, rows, k, n, shape);
    }
    let out_batch = broadcast_shape(batch_a, batch_b)
        .map_err(|_| Error::Shape(format!("matmul: batch dimensions {batch_a:?} and {batch_b:?} do not broadcast")))?;
    let mut shape = out_batch.clone();
    shape.extend([m, n]);
    let mut y = zeros_for(&shape)?;
    // Which matrix of each operand output batch i reads (a stretched or missing axis reads 0).
    let (from_a, from_b) = (batch_sources(batch_a, &out_batch)?, batch_sources(batch_b, &out_batch)?);
    {
        let (ad, bd) = (a.read(), b.read());
        let a_at = |i: usize| MatRef::new(&ad[from_a[i] * m * k..][..m * k], m, k);
        let b_at = |i: usize| MatRef::new(&bd[from_b[i] * k * n..][..k * n], k, n);
        for_each_batch(&mut y, m * n, |i, c, threads| gemm(a_at(i), b_at(i), c, n, false, threads));
    }
    let (count_a, count_b) = (numel(batch_a), numel(batch_b));
    Ok(Tensor::from_op(y, shape, "matmul", &[a, b], move |ctx| {
        let (ad, bd) = (ctx.inputs[0].read(), ctx.inputs[1].read());
        let g_at = |i: usize| MatRef::new(&ctx.grad[i * m * n..][..m * n], m, n);
        let a_at = |i: usize| MatRef::new(&ad[from_a[i] * m * k..][..m * k], m, k);
        let b_at = |i: usize| MatRef::new(&bd[from_b[i] * k * n..][..k * n], k, n);
        // dA_i = dY_i · B_iᵀ, dB_i = A_iᵀ · dY_i
        let ga = ctx.needs(0).then(|| batch_grads(&from_a, count_a, m, k, |i| (g_at(i), b_at(i).t()))).transpose()?;
        let gb = ctx.needs(1).then(|| batch_grads(&from_b, count_b, k, n, |i| (a_at(i).t(), g_at(i)))).transpose()?;
        Ok(vec![ga, gb])
    }))
}

/// One operand's gradient, `count` matrices of rows × cols: output batch i adds its product
/// `f(i)` to the matrix it read, `sources[i]`. Unstretched, each matrix is one batch's (in
/// parallel); stretched, the products accumulate in place, never in a buffer of the output's
/// batch size.
fn batch_grads<'a>(
    sources: &[usize],
    count: usize,
    rows: usize,
    cols: usize,
    f: impl Fn(usize) -> (MatRef<'a>, MatRef<'a>) + Sync,
) -> Result<Vec<f32>> {
    let mut g = zeroed(count * rows * cols)?;
    if count == sources.len() {
        for_each_batch(&mut g, rows * cols, |i, c, t| {
            let (x, y) = f(i);
            gemm(x, y, c, cols, false, t)
        });
        return Ok(g);
    }
    let mut written = vec![false; count];
    for (i, &at) in sources.iter().enumerate() {
        let (x, y) = f(i);
        gemm(x, y, &mut g[at * rows * cols..][..rows * cols], cols, written[at], Threads::Pool);
        written[at] = true;
    }
    Ok(g)
}

/// For each flat index of the broadcast batch shape `out`, the flat index of the matrix that
/// an operand with batch shape `batch` supplies. Small operands can broadcast to billions of
/// batches: an error, not an abort, when their indices do not fit in memory.
fn batch_sources(batch: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    let strides = broadcast_strides(batch, out);
    let mut sources = reserved(numel(out))?;
    sources.extend((0..numel(out)).map(|i| broadcast_offset(i, out, &strides)));
    Ok(sources)
}

/// Runs `f(batch_index, output_block, threads)` over equal output blocks: batches in parallel
/// when there are enough of them, otherwise one at a time with a multithreaded product.
fn for_each_batch(out: &mut [f32], block: usize, f: impl Fn(usize, &mut [f32], Threads) + Sync) {
    if block == 0 {
        return;
    }
    if out.len() / block >= 2 * rayon::current_num_threads() {
        out.par_chunks_mut(block).enumerate().for_each(|(i, c)| f(i, c, Threads::Serial));
    } else {
        out.chunks_mut(block).enumerate().for_each(|(i, c)| f(i, c, Threads::Pool));
    }
}

/// [rows, K] · [K, N] for `a` of any rank whose last axis is K.
fn product_2d(a: &Tensor, b: &Tensor, rows: usize, k: usize, n: usize, shape: Vec<usize>) -> Result<Tensor> {
    let y = product(MatRef::new(&a.read(), rows, k), MatRef::new(&b.read(), k, n), Threads::Pool)?;
    Ok(Tensor::from_op(y, shape, "matmul", &[a, b], move |ctx| {
        let (ad, bd) = (ctx.inputs[0].read(), ctx.inputs[1].read());
        let g = MatRef::new(ctx.grad, rows, n);
        let ga = ctx.needs(0).then(|| product(g, MatRef::new(&bd, k, n).t(), Threads::Pool)).transpose()?;
        let gb = ctx.needs(1).then(|| product(MatRef::new(&ad, rows, k).t(), g, Threads::Pool)).transpose()?;
        Ok(vec![ga, gb])
    }))
}

/// A fully connected layer: `x·Wᵀ + b` for x `[..., IN]`, W `[OUT, IN]` (PyTorch's layout) and
/// optional b `[OUT]`, giving `[..., OUT]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    ensure!(weight.rank() == 2, Shape, "linear: weight must be [out, in], got {:?}", weight.shape());
    let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
    ensure!(
        x.rank() >= 1 && x.shape()[x.rank() - 1] == in_f,
        Shape,
        "linear: input {:?} does not end in the weight's in_features {in_f}",
        x.shape()
    );
    if let Some(b) = bias {
        b.expect_shape(&[out_f], "linear bias")?;
    }
    let rows: usize = x.shape()[..x.rank() - 1].iter().product(); // not numel / in_f: in_f may be 0
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank ≥ 1") = out_f;
    let y = {
        // A batch's decoding steps read the weight packed once (see `packed_weights`); other
        // decoding under bf16 precision reads the weight's bf16 copy (half the bytes). Both are
        // taken before the read guard below: they read the weight themselves, and a second read
        // lock on one thread can deadlock with a writer waiting in between.
        let packed = packed_weight(weight, rows)?;
        let bf16 = (packed.is_none() && reads_bf16_weight(rows)).then(|| weight.bf16_copy()).transpose()?;
        let (xd, wd) = (x.read(), weight.read());
        let (xm, wt) = (MatRef::new(&xd, rows, in_f), MatRef::new(&wd, out_f, in_f).t());
        let multiply = |y: &mut [f32], accumulate: bool| match (&bf16, &packed) {
            (Some(w), _) => multiply_bf16_weight(xm, w, out_f, y, out_f, accumulate),
            (_, Some(w)) => gemm_packed(xm, w, y, out_f, accumulate, Threads::Pool),
            _ => gemm(xm, wt, y, out_f, accumulate, Threads::Pool),
        };
        match bias {
            None if bf16.is_none() && packed.is_none() => product(xm, wt, Threads::Pool)?,
            None => {
                let mut y = zeroed(rows * out_f)?;
                multiply(&mut y, false);
                y
            }
            // With a bias, y starts as the bias in every row and the product adds to it.
            Some(b) => {
                let (b, row) = (b.read(), out_f.max(1));
                // SAFETY: chunks are whole rows, and each row takes all out_f values of the bias
                // (its shape was checked above).
                let mut y = unsafe {
                    filled_in(reserved(checked_numel(&shape)?)?, rows * out_f, row * (GRAIN / row).max(1), |_, o| {
                        for o in o.chunks_mut(row) {
                            o.iter_mut().zip(b.iter()).for_each(|(o, &b)| {
                                o.write(b);
                            });
                        }
                    })
                };
                multiply(&mut y, true);
                y
            }
        }
    };
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    Ok(Tensor::from_op(y, shape, "linear", &inputs, move |ctx| {
        let (xd, wd) = (ctx.inputs[0].read(), ctx.inputs[1].read());
        let g = MatRef::new(ctx.grad, rows, out_f);
        let gx = ctx.needs(0).then(|| product(g, MatRef::new(&wd, out_f, in_f), Threads::Pool)).transpose()?;
        let gw = ctx.needs(1).then(|| product(g.t(), MatRef::new(&xd, rows, in_f), Threads::Pool)).transpose()?;
        let mut grads = vec![gx, gw];
        if ctx.inputs.len() == 3 {
            grads.push(ctx.needs(2).then(|| sum_axis_raw(ctx.grad, 1, rows, out_f)).transpose()?);
        }
        Ok(grads)
    }))
}
