//! Fused scaled-dot-product attention, `dropout(softmax(Q·Kᵀ/√D + mask))·V`, with causal and
//! key-padding masks, optional dropout of the probabilities, and a hand-written backward.
//!
//! Work is parallel over batches: a task owns its batch's chunk of the output (and of the
//! gradients) in either layout and loops over the heads, in blocks of queries whose products
//! are GEMMs. Like FlashAttention, forward keeps only the output and each query's
//! log-sum-exp; backward recomputes the probabilities (and regenerates the dropout mask, which
//! is counter-based), so no [B, H, T, T] tensor outlives the call.
//!
//! One kernel serves two layouts through [`Layout`]: separate [B, H, T, D] tensors, and GPT's
//! packed projection [B, T, 3C] whose heads sit side by side along the channel axis. The
//! packed output and its gradient are written in place; a head's packed inputs are gathered
//! once into contiguous rows (no split, transpose or copy of whole tensors).

use rayon::prelude::*;

use super::dropout::Dropout;
use super::softmax::softmax_in_place;
use crate::gemm::{gemm, MatRef, Threads};
use crate::simd::{self, vectorized};
use crate::tensor::{checked_numel, reserved, zeroed, Tensor};
use crate::{ensure, Error, Result};

/// Where one operand's heads live in a flat buffer: element `d` of token `t` of head `h` in
/// batch `b` is at `offset + b·batch + h·head + t·token + d`.
#[derive(Clone, Copy)]
struct Layout {
    offset: usize,
    batch: usize,
    head: usize,
    token: usize,
}

impl Layout {
    /// A contiguous [B, H, T, D] tensor.
    fn bhtd(h: usize, t: usize, d: usize) -> Self {
        Layout { offset: 0, batch: h * t * d, head: t * d, token: d }
    }

    /// Heads of size `d` side by side in [B, T, width], starting at channel `column`.
    fn packed(t: usize, width: usize, d: usize, column: usize) -> Self {
        Layout { offset: column, batch: t * width, head: d, token: width }
    }

    /// Where token `t` of head `h` starts inside one batch (its chunk of `batch` floats).
    fn at(&self, h: usize, t: usize) -> usize {
        self.offset + h * self.head + t * self.token
    }

    /// Tokens `0..tokens` of head `h` in batch `b` as a (tokens × d) matrix: read in place
    /// when its rows are adjacent, else first gathered into `buf` (the rows of a packed
    /// projection lie 3C apart, and every product and conversion would fetch them again).
    fn head<'a>(
        &self,
        data: &'a [f32],
        b: usize,
        h: usize,
        tokens: usize,
        d: usize,
        buf: &'a mut Vec<f32>,
    ) -> MatRef<'a> {
        let start = b * self.batch + self.at(h, 0);
        if self.token == d {
            return MatRef::new(&data[start..][..tokens * d], tokens, d);
        }
        buf.clear();
        for t in 0..tokens {
            buf.extend_from_slice(&data[start + t * self.token..][..d]);
        }
        MatRef::new(buf, tokens, d)
    }

    /// The inverse of `head`: writes `src`, one head's rows of `d` floats one after another, to
    /// head `h` of batch `b` in `dst`.
    fn put_head(&self, dst: &mut [f32], b: usize, h: usize, src: &[f32], d: usize) {
        for (t, row) in src.chunks(d).enumerate() {
            dst[b * self.batch + self.at(h, t)..][..d].copy_from_slice(row);
        }
    }
}

/// Rows `start..start + n` of `m`.
fn rows(m: MatRef, start: usize, n: usize) -> MatRef {
    MatRef { data: &m.data[start * m.row_stride..], rows: n, ..m }
}

/// Problem size and masking rules.
#[derive(Clone)]
struct Dims {
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    d: usize,
    causal: bool,
    /// [B, Tk], true where the key is a real token; `None` attends to every key.
    key_mask: Option<Vec<bool>>,
    /// Dropout of the probabilities: the mask `ops::dropout` would draw on them as a
    /// [B, H, Tq, Tk] tensor.
    dropout: Option<Dropout>,
}

impl Dims {
    /// How many of the first `keys` keys query `i` may attend to before the causal mask hides
    /// the rest. Causal queries are the last `tq` positions of the `tk` keys (so a KV-cache
    /// step attends to the whole prefix).
    fn unmasked_prefix(&self, i: usize, keys: usize) -> usize {
        if self.causal {
            (i + self.tk + 1).saturating_sub(self.tq).min(keys)
        } else {
            keys
        }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    /// The dropout factor (0 or 1/(1−p)) of query `i` of head `h` in batch `b` as a function of
    /// the key; `None` without dropout.
    fn dropout_row(&self, b: usize, h: usize, i: usize) -> Option<impl Fn(usize) -> f32 + '_> {
        let start = ((b * self.h + h) * self.tq + i) * self.tk;
        self.dropout.as_ref().map(move |mask| move |key: usize| mask.factor(start + key))
    }

    /// Keys a block of queries ending before `end` can see: with a causal mask the later keys
    /// are masked for every query of the block, so they are never computed.
    fn keys_for(&self, end: usize) -> usize {
        if self.causal {
            (end + self.tk - self.tq).min(self.tk)
        } else {
            self.tk
        }
    }

    /// Scores Q·Kᵀ·scale of queries `i0..` of one head (`qm`, rows × D) against its first
    /// keys (`km`, keys × D), masked entries at -inf, into `s` (rows × keys).
    /// Inlined, so its loops are widened inside the caller's `vectorized`.
    #[inline(always)]
    fn scores(&self, qm: MatRef, km: MatRef, b: usize, i0: usize, s: &mut [f32]) {
        let (rows, keys) = (qm.rows, km.rows);
        gemm(qm, km.t(), s, keys, false, Threads::Serial);
        let scale = self.scale();
        let key_mask = self.key_mask.as_ref().map(|m| &m[b * self.tk..][..keys]);
        for (r, row) in s.chunks_mut(keys.max(1)).take(rows).enumerate() {
            let (seen, hidden) = row.split_at_mut(self.unmasked_prefix(i0 + r, keys));
            seen.iter_mut().for_each(|v| *v *= scale);
            hidden.fill(f32::NEG_INFINITY);
            if let Some(mask) = key_mask {
                seen.iter_mut().zip(mask).filter(|(_, &keep)| !keep).for_each(|(v, _)| *v = f32::NEG_INFINITY);
            }
        }
    }
}

/// Queries processed together: small enough that causal blocks skip most masked keys, large
/// enough for efficient products.
const QUERY_BLOCK: usize = 64;

/// How many batch tasks one thread should take at least: all of them (no threads at
/// all) when the whole problem is too small to repay waking the pool, as in decoding.
fn tasks_per_thread(tasks: usize, work_per_task: usize) -> usize {
    const MIN_PARALLEL_WORK: usize = 1 << 17;
    if tasks * work_per_task < MIN_PARALLEL_WORK {
        tasks.max(1)
    } else {
        1
    }
}

/// Writes every head's output into `out` (as its layout says) and returns the log-sum-exp
/// of every query's scores, [B, H, Tq]. Batches are the parallel tasks: a batch's outputs are
/// one chunk of `out` in either layout (its heads interleave in the packed one). With fewer
/// batches than threads (one prompt's prefill) heads are the tasks instead, each into its own
/// rows, copied into place afterwards.
fn forward(
    q: (&[f32], Layout),
    k: (&[f32], Layout),
    v: (&[f32], Layout),
    out: (&mut [f32], Layout),
    dims: &Dims,
) -> Result<Vec<f32>> {
    let Dims { b: nb, h: nh, tq, tk, d, .. } = *dims;
    let (out, lo) = out;
    // Fallible: with heads of size 0 this can outgrow the (empty) inputs.
    let mut lse = zeroed(checked_numel(&[nb, nh, tq])?)?;
    if nb * nh * tq * d == 0 {
        return Ok(lse);
    }
    let head = |b: usize, h: usize, out: &mut [f32], ldo: usize, lse: &mut [f32], scratch: &mut Scratch| {
        vectorized(
            #[inline(always)]
            || {
                let [qb, kb, vb] = &mut scratch.heads;
                let (qh, kh, vh) =
                    (q.1.head(q.0, b, h, tq, d, qb), k.1.head(k.0, b, h, tk, d, kb), v.1.head(v.0, b, h, tk, d, vb));
                for i0 in (0..tq).step_by(QUERY_BLOCK) {
                    let n = QUERY_BLOCK.min(tq - i0);
                    let keys = dims.keys_for(i0 + n);
                    let p = &mut scratch.p[..n * keys];
                    dims.scores(rows(qh, i0, n), rows(kh, 0, keys), b, i0, p);
                    if keys > 0 {
                        for (r, (row, l)) in p.chunks_mut(keys).zip(lse[i0..].iter_mut()).enumerate() {
                            let (max, ln_sum) = softmax_in_place(row);
                            *l = max + ln_sum;
                            if let Some(factor) = dims.dropout_row(b, h, i0 + r) {
                                row.iter_mut().enumerate().for_each(|(j, p)| *p *= factor(j));
                            }
                        }
                    }
                    let pv = (MatRef::new(p, n, keys), rows(vh, 0, keys));
                    gemm(pv.0, pv.1, &mut out[i0 * ldo..], ldo, false, Threads::Serial);
                }
            },
        )
    };
    let scratch = || {
        let p = working(QUERY_BLOCK.min(tq) * tk)?;
        Some(Scratch { p, heads: [room(q.1, tq, d)?, room(k.1, tk, d)?, room(v.1, tk, d)?] })
    };
    if nb >= rayon::current_num_threads() || nh == 1 {
        let min_len = tasks_per_thread(nb, nh * tq * tk * d);
        let tasks = out.par_chunks_mut(lo.batch).zip(lse.par_chunks_mut(nh * tq)).with_min_len(min_len);
        tasks.enumerate().try_for_each_init(scratch, |s, (b, (out, lse))| {
            let s = s.as_mut().ok_or_else(no_working_memory)?;
            for (h, lse) in lse.chunks_mut(tq).enumerate() {
                head(b, h, &mut out[lo.at(h, 0)..], lo.token, lse, s);
            }
            Ok::<(), Error>(())
        })?;
    } else {
        let mut heads = zeroed(nb * nh * tq * d)?;
        let tasks = heads
            .par_chunks_mut(tq * d)
            .zip(lse.par_chunks_mut(tq))
            .with_min_len(tasks_per_thread(nb * nh, tq * tk * d));
        tasks.enumerate().try_for_each_init(scratch, |s, (bh, (o, lse))| {
            head(bh / nh, bh % nh, o, d, lse, s.as_mut().ok_or_else(no_working_memory)?);
            Ok::<(), Error>(())
        })?;
        for (bh, rows) in heads.chunks(tq * d).enumerate() {
            lo.put_head(out, bh / nh, bh % nh, rows, d);
        }
    }
    Ok(lse)
}

/// `n` floats of a task's working memory, or None when they are refused (then
/// `no_working_memory`: running out of memory is an error, not an abort).
fn working(n: usize) -> Option<Vec<f32>> {
    zeroed(n).ok()
}

/// Room to gather a head of `tokens` rows from `layout` (none where `Layout::head` reads the
/// rows in place), so that gathering never allocates.
fn room(layout: Layout, tokens: usize, d: usize) -> Option<Vec<f32>> {
    reserved(if layout.token == d { 0 } else { tokens * d }).ok()
}

fn no_working_memory() -> Error {
    Error::Memory("attention: cannot allocate a task's working memory".into())
}

/// A forward task's working memory: a block of probabilities and one head's gathered Q, K, V.
struct Scratch {
    p: Vec<f32>,
    heads: [Vec<f32>; 3],
}

/// Writes the gradients of Q, K and V, given the output and its gradient: `grads` holds the
/// buffers and, for each of the three, the buffer and layout it goes to (one buffer for a
/// packed projection, three for separate heads). Each batch is one parallel task owning its
/// chunk of every buffer (a layout's batch stride), and writes every value of it.
#[allow(clippy::too_many_arguments)]
fn backward(
    q: (&[f32], Layout),
    k: (&[f32], Layout),
    v: (&[f32], Layout),
    out: (&[f32], Layout),
    dout: (&[f32], Layout),
    lse: &[f32],
    grads: (Vec<&mut [f32]>, [(usize, Layout); 3]),
    dims: &Dims,
) -> Result<()> {
    let Dims { b: nb, h: nh, tq, tk, d, .. } = *dims;
    let (buffers, [(iq, lq), (ik, lk), (iv, lv)]) = grads;
    if nb * nh * tq * tk * d == 0 {
        buffers.into_iter().for_each(|g| g.fill(0.0));
        return Ok(());
    }
    let targets = [(iq, lq), (ik, lk), (iv, lv)];
    let scale = dims.scale();
    // One head of batch b: its gradients go to `g[i]` at `layouts` (buffer i, layout).
    let head = |b: usize, h: usize, g: &mut [&mut [f32]], layouts: [(usize, Layout); 3], s: &mut BackwardScratch| {
        vectorized(
            #[inline(always)]
            || {
                let [(iq, lq), (ik, lk), (iv, lv)] = layouts;
                let [qb, kb, vb, ob, gb] = &mut s.heads;
                let (qh, kh, vh) =
                    (q.1.head(q.0, b, h, tq, d, qb), k.1.head(k.0, b, h, tk, d, kb), v.1.head(v.0, b, h, tk, d, vb));
                let (oh, dyh) = (out.1.head(out.0, b, h, tq, d, ob), dout.1.head(dout.0, b, h, tq, d, gb));
                // The last query block sees every key (the causal mask only hides keys from
                // earlier blocks), so walking the blocks backwards lets it set dK and dV and
                // the others add to them.
                for (nth, i0) in (0..tq).step_by(QUERY_BLOCK).rev().enumerate() {
                    let add = nth > 0;
                    let n = QUERY_BLOCK.min(tq - i0);
                    let keys = dims.keys_for(i0 + n);
                    let (p, ds) = (&mut s.p[..n * keys], &mut s.ds[..n * keys]);
                    let (qm, km, vm) = (rows(qh, i0, n), rows(kh, 0, keys), rows(vh, 0, keys));
                    let (o, dy) = (rows(oh, i0, n), rows(dyh, i0, n));
                    // P = exp(S − lse), recomputed from the scores.
                    dims.scores(qm, km, b, i0, p);
                    for (r, row) in p.chunks_mut(keys.max(1)).take(n).enumerate() {
                        let l = lse[(b * nh + h) * tq + i0 + r];
                        row.iter_mut().for_each(|s| *s = if l == f32::NEG_INFINITY { 0.0 } else { simd::exp(*s - l) });
                    }
                    // With dropout mask M, O = P'·V with P' = P ⊙ M: dP' = dO·Vᵀ, dP = dP' ⊙ M,
                    // then dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale (rowsum(P ⊙ dP) = rowsum(dO ⊙ O)
                    // with or without M), and P becomes P' for dV.
                    gemm(dy, vm.t(), ds, keys, false, Threads::Serial);
                    for r in 0..n {
                        let (gr, or) = (&dy.data[r * dy.row_stride..][..d], &o.data[r * o.row_stride..][..d]);
                        let delta = simd::sum_zip([gr, or], |[g, o]| g * o);
                        let (ds, p) = (&mut ds[r * keys..][..keys], &mut p[r * keys..][..keys]);
                        match dims.dropout_row(b, h, i0 + r) {
                            None => ds.iter_mut().zip(&*p).for_each(|(s, &p)| *s = p * (*s - delta) * scale),
                            Some(factor) => {
                                for (j, (s, p)) in ds.iter_mut().zip(p.iter_mut()).enumerate() {
                                    let m = factor(j);
                                    *s = *p * (*s * m - delta) * scale;
                                    *p *= m;
                                }
                            }
                        }
                    }
                    // dV (+)= P'ᵀ·dO
                    let pt = MatRef::new(p, n, keys).t();
                    gemm(pt, dy, &mut g[iv][lv.at(h, 0)..], lv.token, add, Threads::Serial);
                    // dQ = dS·K, dK (+)= dSᵀ·Q
                    let dsm = MatRef::new(ds, n, keys);
                    gemm(dsm, km, &mut g[iq][lq.at(h, i0)..], lq.token, false, Threads::Serial);
                    gemm(dsm.t(), qm, &mut g[ik][lk.at(h, 0)..], lk.token, add, Threads::Serial);
                }
            },
        )
    };
    let block = QUERY_BLOCK.min(tq) * tk;
    let scratch = || {
        let (p, ds) = (working(block)?, working(block)?);
        let heads =
            [room(q.1, tq, d)?, room(k.1, tk, d)?, room(v.1, tk, d)?, room(out.1, tq, d)?, room(dout.1, tq, d)?];
        Some(BackwardScratch { p, ds, heads })
    };
    if nb >= rayon::current_num_threads() || nh == 1 {
        let mut tasks: Vec<Vec<&mut [f32]>> = (0..nb).map(|_| Vec::new()).collect();
        for (i, buffer) in buffers.into_iter().enumerate() {
            let strides = targets.iter().filter(|(j, _)| *j == i).map(|(_, l)| l.batch);
            let stride = strides.clone().next().expect("every gradient buffer has a layout");
            debug_assert!(strides.clone().all(|s| s == stride) && buffer.len() == nb * stride);
            tasks.iter_mut().zip(buffer.chunks_mut(stride)).for_each(|(task, chunk)| task.push(chunk));
        }
        let min_len = tasks_per_thread(nb, nh * tq * tk * d);
        tasks.into_par_iter().with_min_len(min_len).enumerate().try_for_each_init(scratch, |s, (b, mut g)| {
            let s = s.as_mut().ok_or_else(no_working_memory)?;
            (0..nh).for_each(|h| head(b, h, &mut g, targets, s));
            Ok::<(), Error>(())
        })?;
    } else {
        // Fewer batches than threads: one task per head, writing its dQ, dK and dV rows
        // side by side, copied into place afterwards.
        let per = (tq + 2 * tk) * d;
        let part = |offset| (0, Layout { offset, batch: per, head: 0, token: d });
        let local = [part(0), part(tq * d), part((tq + tk) * d)];
        let mut heads = zeroed(nb * nh * per)?;
        let min_len = tasks_per_thread(nb * nh, tq * tk * d);
        heads.par_chunks_mut(per).with_min_len(min_len).enumerate().try_for_each_init(scratch, |s, (bh, chunk)| {
            head(bh / nh, bh % nh, &mut [chunk], local, s.as_mut().ok_or_else(no_working_memory)?);
            Ok::<(), Error>(())
        })?;
        let mut buffers = buffers;
        for (bh, chunk) in heads.chunks(per).enumerate() {
            for (&(i, to), (&(_, from), t)) in targets.iter().zip(local.iter().zip([tq, tk, tk])) {
                to.put_head(buffers[i], bh / nh, bh % nh, &chunk[from.offset..][..t * d], d);
            }
        }
    }
    Ok(())
}

/// A backward task's working memory: blocks of probabilities and of their gradients, and one
/// head's gathered Q, K, V, output and output gradient.
struct BackwardScratch {
    p: Vec<f32>,
    ds: Vec<f32>,
    heads: [Vec<f32>; 5],
}

fn check_mask(key_mask: Option<&[bool]>, b: usize, tk: usize) -> Result<Option<Vec<bool>>> {
    if let Some(m) = key_mask {
        ensure!(
            m.len() == b * tk,
            Shape,
            "attention: key mask has {} entries, expected batch × keys = {}",
            m.len(),
            b * tk
        );
    }
    Ok(key_mask.map(<[bool]>::to_vec))
}

/// Attention over separate heads: q [B, H, Tq, D], k and v [B, H, Tk, D] → [B, H, Tq, D].
/// `causal` lets query i see keys up to i + Tk − Tq; `key_mask` [B, Tk] is true for real
/// tokens (padding keys get no attention). A query that can see no key outputs zeros.
/// `dropout` drops attention probabilities (training), with the mask [`dropout`](super::dropout)
/// would draw on them as a [B, H, Tq, Tk] tensor.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    key_mask: Option<&[bool]>,
    dropout: Option<Dropout>,
) -> Result<Tensor> {
    ensure!(
        q.rank() == 4 && k.rank() == 4 && v.rank() == 4,
        Shape,
        "attention expects [B, H, T, D] tensors, got q {:?}, k {:?}, v {:?}",
        q.shape(),
        k.shape(),
        v.shape()
    );
    let (nb, nh, tq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let tk = k.shape()[2];
    ensure!(
        k.shape() == [nb, nh, tk, d] && v.shape() == k.shape(),
        Shape,
        "attention: k {:?} and v {:?} must be [{nb}, {nh}, Tk, {d}]",
        k.shape(),
        v.shape()
    );
    ensure!(!causal || tq <= tk, Shape, "causal attention needs no more queries ({tq}) than keys ({tk})");
    let dims = Dims { b: nb, h: nh, tq, tk, d, causal, key_mask: check_mask(key_mask, nb, tk)?, dropout };
    let (lq, lk) = (Layout::bhtd(nh, tq, d), Layout::bhtd(nh, tk, d));
    let mut y = zeroed(nb * nh * tq * d)?;
    let lse = forward((&q.read(), lq), (&k.read(), lk), (&v.read(), lk), (&mut y, lq), &dims)?;
    Ok(Tensor::from_op(y, vec![nb, nh, tq, d], "attention", &[q, k, v], move |ctx| {
        let (qd, kd, vd) = (ctx.inputs[0].read(), ctx.inputs[1].read(), ctx.inputs[2].read());
        let (mut dq, mut dk, mut dv) = (zeroed(qd.len())?, zeroed(kd.len())?, zeroed(vd.len())?);
        let grads = (vec![&mut dq[..], &mut dk[..], &mut dv[..]], [(0, lq), (1, lk), (2, lk)]);
        backward((&qd, lq), (&kd, lk), (&vd, lk), (ctx.out, lq), (ctx.grad, lq), &lse, grads, &dims)?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    }))
}

/// Multi-head self-attention straight from a packed projection: `qkv` [B, T, 3C] holding
/// queries, keys and values (each C = n_head × D wide) → [B, T, C] with heads concatenated.
/// Masks and dropout as in [`attention`] (the same seed drops the same probabilities).
pub fn attention_qkv(
    qkv: &Tensor,
    n_head: usize,
    causal: bool,
    key_mask: Option<&[bool]>,
    dropout: Option<Dropout>,
) -> Result<Tensor> {
    ensure!(qkv.rank() == 3, Shape, "attention_qkv expects [B, T, 3C], got {:?}", qkv.shape());
    let (nb, t, width) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
    ensure!(
        n_head > 0 && width > 0 && n_head.checked_mul(3).is_some_and(|heads| width % heads == 0),
        Shape,
        "attention_qkv: width {width} is not 3 × n_head ({n_head}) × a head size of at least 1"
    );
    let c = width / 3;
    let d = c / n_head;
    let dims = Dims { b: nb, h: n_head, tq: t, tk: t, d, causal, key_mask: check_mask(key_mask, nb, t)?, dropout };
    let [lq, lk, lv] = [0, c, 2 * c].map(|col| Layout::packed(t, width, d, col));
    let lout = Layout::packed(t, c, d, 0);
    let mut y = zeroed(nb * t * c)?;
    let lse = {
        let x = qkv.read();
        forward((&x, lq), (&x, lk), (&x, lv), (&mut y, lout), &dims)?
    };
    Ok(Tensor::from_op(y, vec![nb, t, c], "attention_qkv", &[qkv], move |ctx| {
        let x = ctx.inputs[0].read();
        let mut g = zeroed(x.len())?;
        let grads = (vec![&mut g[..]], [(0, lq), (0, lk), (0, lv)]);
        backward((&x, lq), (&x, lk), (&x, lv), (ctx.out, lout), (ctx.grad, lout), &lse, grads, &dims)?;
        Ok(vec![Some(g)])
    }))
}

/// Keys and values of every layer for incremental decoding: per layer two [B, H, capacity, D]
/// buffers, of which the first `len` positions are filled. A step computes only its new
/// token's keys and values; past the context, `generate` rebuilds rows (`overwrite_rows`).
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    batch: usize,
    heads: usize,
    capacity: usize,
    head_size: usize,
    len: usize,
}

/// Its sizes and fill (not the cached keys and values).
impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.layers.len())
            .field("batch", &self.batch)
            .field("heads", &self.heads)
            .field("head_size", &self.head_size)
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl KvCache {
    pub fn new(n_layer: usize, batch: usize, heads: usize, capacity: usize, head_size: usize) -> Result<KvCache> {
        ensure!(
            heads > 0 && capacity > 0 && head_size > 0,
            Argument,
            "KV cache: heads, capacity and head size must be at least 1, got {heads}, {capacity}, {head_size}"
        );
        let size = checked_numel(&[batch, heads, capacity, head_size])?;
        Ok(KvCache {
            layers: (0..n_layer).map(|_| Ok((zeroed(size)?, zeroed(size)?))).collect::<Result<_>>()?,
            batch,
            heads,
            capacity,
            head_size,
            len: 0,
        })
    }

    /// Positions already filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the positions from `len` on (kept as they are, to be written over): a forward
    /// pass that failed after filling them.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks `t` more positions as filled, once every layer has written them.
    pub fn advance(&mut self, t: usize) -> Result<()> {
        ensure!(
            self.len.checked_add(t).is_some_and(|end| end <= self.capacity),
            Index,
            "KV cache overflow: {} + {t} positions exceed its {} slots",
            self.len,
            self.capacity
        );
        self.len += t;
        Ok(())
    }

    /// Drops the oldest `n` positions of every sequence: the keys and values kept move to the
    /// front, making room without recomputing them.
    pub fn drop_oldest(&mut self, n: usize) -> Result<()> {
        ensure!(n <= self.len, Index, "KV cache: cannot drop {n} of {} positions", self.len);
        let (span, len) = (self.capacity * self.head_size, self.len * self.head_size);
        for buffer in self.layers.iter_mut().flat_map(|(k, v)| [k, v]) {
            for sequence in buffer.chunks_mut(span) {
                sequence.copy_within(n * self.head_size..len, 0);
            }
        }
        self.len -= n;
        Ok(())
    }

    /// Overwrites the last `from.len()` positions of sequences `rows` with `from`'s sequences
    /// (row `rows[i]` gets `from`'s row i), as computed by the same model.
    pub fn overwrite_rows(&mut self, from: &KvCache, rows: &[usize]) -> Result<()> {
        ensure!(
            (from.layers.len(), from.heads, from.head_size, from.batch)
                == (self.layers.len(), self.heads, self.head_size, rows.len())
                && from.len <= self.len
                && rows.iter().all(|&r| r < self.batch),
            Shape,
            "KV cache: cannot write {} sequences of {} positions into rows {rows:?} of a cache of {} sequences of {}",
            from.batch,
            from.len,
            self.batch,
            self.len
        );
        let (source, target) = (from.layout(), self.layout());
        let n = from.len * self.head_size;
        for ((k, v), (from_k, from_v)) in self.layers.iter_mut().zip(&from.layers) {
            for (buffer, from_buffer) in [(k, from_k), (v, from_v)] {
                for (i, &r) in rows.iter().enumerate() {
                    for h in 0..self.heads {
                        let src = i * source.batch + source.at(h, 0);
                        let dst = r * target.batch + target.at(h, self.len - from.len);
                        buffer[dst..dst + n].copy_from_slice(&from_buffer[src..src + n]);
                    }
                }
            }
        }
        Ok(())
    }

    fn layout(&self) -> Layout {
        Layout::bhtd(self.heads, self.capacity, self.head_size)
    }
}

/// Self-attention for `T` new tokens whose packed projection is `qkv` [B, T, 3C]: their keys
/// and values are written into `layer` of the cache after the `cache.len()` cached positions,
/// and each new query attends causally to the cached prefix and the new tokens. `key_mask`
/// covers all `len + T` keys. Inference only: no gradient is recorded.
pub fn attention_cached(
    qkv: &Tensor,
    n_head: usize,
    cache: &mut KvCache,
    layer: usize,
    key_mask: Option<&[bool]>,
) -> Result<Tensor> {
    ensure!(qkv.rank() == 3, Shape, "attention_cached expects [B, T, 3C], got {:?}", qkv.shape());
    let (nb, t, width) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
    let (c, d) = (width / 3, cache.head_size);
    ensure!(
        nb == cache.batch && n_head == cache.heads && width == 3 * n_head * d && layer < cache.layers.len(),
        Shape,
        "attention_cached: qkv {:?} with {n_head} heads does not fit a cache of batch {}, {} heads of size {}, {} layers",
        qkv.shape(),
        cache.batch,
        cache.heads,
        d,
        cache.layers.len()
    );
    let start = cache.len;
    ensure!(
        start + t <= cache.capacity,
        Index,
        "attention_cached: {} cached + {t} new positions exceed the context of {}",
        start,
        cache.capacity
    );
    let tk = start + t;
    let key_mask = check_mask(key_mask, nb, tk)?;
    let dims = Dims { b: nb, h: n_head, tq: t, tk, d, causal: true, key_mask, dropout: None };
    let layout = cache.layout();
    let x = qkv.read();
    let (k_cache, v_cache) = &mut cache.layers[layer];
    for (part, dst) in [(c, &mut *k_cache), (2 * c, &mut *v_cache)] {
        for b in 0..nb {
            for h in 0..n_head {
                for i in 0..t {
                    let from = (b * t + i) * width + part + h * d;
                    let to = b * layout.batch + h * layout.head + (start + i) * layout.token;
                    dst[to..to + d].copy_from_slice(&x[from..from + d]);
                }
            }
        }
    }
    let mut y = zeroed(nb * t * c)?;
    let lq = Layout::packed(t, width, d, 0);
    forward((&x, lq), (k_cache, layout), (v_cache, layout), (&mut y, Layout::packed(t, c, d, 0)), &dims)?;
    Tensor::from_vec(y, &[nb, t, c])
}
