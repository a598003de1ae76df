//! AdamW (decoupled weight decay, bias correction), SGD with momentum, and global
//! gradient-norm clipping; each updates every parameter in one parallel call.

use std::sync::atomic::{AtomicU32, Ordering};

use rayon::prelude::*;

use crate::ops::GRAIN;
use crate::simd::vectorized;
use crate::tensor::zeroed;
use crate::{ensure, Result, Tensor};

/// One parameter with its weight decay and Adam moments.
struct Slot {
    tensor: Tensor,
    weight_decay: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    steps: u64,
}

/// AdamW as in Loshchilov & Hutter (and `torch.optim.AdamW`): the decay shrinks weights
/// directly (`p -= lr·wd·p`) instead of entering the gradient.
pub struct AdamW {
    slots: Vec<Slot>,
    lr: LearningRate,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

/// What an optimiser keeps for one parameter between steps, for checkpoints: buffers the size
/// of the parameter, named as torch names them (AdamW's `exp_avg` and `exp_avg_sq`, SGD's
/// `momentum_buffer`), and how many updates the parameter has had.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState {
    pub buffers: Vec<(String, Vec<f32>)>,
    pub steps: u64,
}

/// An optimiser's learning rate: finite and ≥ 0, checked whenever it is set. A schedule sets it
/// between steps (atomic, so a shared optimiser needs no `&mut` for it).
#[derive(Debug)]
pub struct LearningRate(AtomicU32);

impl LearningRate {
    pub fn new(lr: f32) -> Result<LearningRate> {
        Ok(LearningRate(AtomicU32::new(Self::checked(lr)?.to_bits())))
    }

    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, lr: f32) -> Result<()> {
        self.0.store(Self::checked(lr)?.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    fn checked(lr: f32) -> Result<f32> {
        ensure!(lr >= 0.0 && lr.is_finite(), Argument, "learning rate must be finite and >= 0, got {lr}");
        Ok(lr)
    }
}

/// What a training loop asks of an optimiser (AdamW, SGD).
pub trait Optimizer: Send + Sync {
    /// The rate the next step uses.
    fn learning_rate(&self) -> &LearningRate;

    /// One update of every parameter that has a gradient (the others are left untouched).
    fn step(&mut self);

    /// The parameters, each once, in the order given.
    fn parameters(&self) -> Vec<Tensor>;

    /// Clears the gradients of all parameters.
    fn zero_grad(&self) {
        self.parameters().iter().for_each(Tensor::zero_grad);
    }

    /// What each parameter's updates depend on, in parameter order, to checkpoint.
    fn state(&self) -> Vec<ParamState>;

    /// Restores a [`Optimizer::state`] saved for the same parameters; a state with other
    /// buffers, sizes, or non-finite values is refused and nothing changes.
    fn load_state(&mut self, state: Vec<ParamState>) -> Result<()>;
}

/// Checks that `state` has one entry per parameter, each with exactly the buffers `names`, of
/// the parameter's size and finite (a run that kept training saved finite values; anything
/// else would make every later update NaN).
fn check_state(state: &[ParamState], sizes: &[usize], names: &[&str]) -> Result<()> {
    ensure!(
        state.len() == sizes.len(),
        Shape,
        "optimizer state has {} entries for {} parameters",
        state.len(),
        sizes.len()
    );
    for (i, (s, &size)) in state.iter().zip(sizes).enumerate() {
        let given: Vec<&str> = s.buffers.iter().map(|(name, _)| name.as_str()).collect();
        ensure!(given == names, Argument, "optimizer state entry {i} holds {given:?}, this optimizer keeps {names:?}");
        for (name, values) in &s.buffers {
            ensure!(
                values.len() == size,
                Shape,
                "optimizer state entry {i}: {name} has {} values, the parameter has {size}",
                values.len()
            );
            ensure!(
                values.iter().all(|x| x.is_finite()),
                Argument,
                "optimizer state entry {i}: {name} holds non-finite values (a damaged file?)"
            );
        }
    }
    Ok(())
}

impl AdamW {
    /// `params` pairs each parameter with its weight decay (0 for biases and norms, usually).
    /// A tensor listed twice (tied weights) is updated once.
    pub fn new(params: Vec<(Tensor, f32)>, lr: f32, betas: (f32, f32), eps: f32) -> Result<AdamW> {
        let lr = LearningRate::new(lr)?;
        ensure!(
            (0.0..1.0).contains(&betas.0) && (0.0..1.0).contains(&betas.1),
            Argument,
            "AdamW: betas must be in [0, 1), got {betas:?}"
        );
        ensure!(eps > 0.0, Argument, "AdamW: eps must be > 0, got {eps}");
        let slots = unique_leaves(params, "AdamW")?
            .into_iter()
            .map(|(tensor, weight_decay)| {
                let n = tensor.numel();
                Ok(Slot { tensor, weight_decay, m: zeroed(n)?, v: zeroed(n)?, steps: 0 })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { slots, lr, beta1: betas.0, beta2: betas.1, eps })
    }
}

/// The settings and how many parameters it updates (their moments are `state`).
impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("lr", &self.lr.get())
            .field("betas", &(self.beta1, self.beta2))
            .field("eps", &self.eps)
            .field("parameters", &self.slots.len())
            .finish()
    }
}

impl Optimizer for AdamW {
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }

    /// Parameters without a gradient keep their moments too.
    fn step(&mut self) {
        let (lr, b1, b2, eps) = (self.lr.get(), self.beta1, self.beta2, self.eps);
        let slots = &mut self.slots;
        crate::compute(move || {
            slots.par_iter_mut().for_each(|slot| {
                let grad = slot.tensor.grad_slot();
                let Some(g) = grad.as_ref() else { return };
                slot.steps = slot.steps.saturating_add(1);
                // powf, not powi: an i32 exponent would wrap past 2^31 steps (to a correction of 0).
                let t = slot.steps as f32;
                let (c1, c2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
                let step_size = lr / c1;
                let decay = 1.0 - lr * slot.weight_decay;
                let mut p = slot.tensor.write();
                p.par_chunks_mut(GRAIN)
                    .zip(slot.m.par_chunks_mut(GRAIN))
                    .zip(slot.v.par_chunks_mut(GRAIN))
                    .zip(g.par_chunks(GRAIN))
                    .for_each(|(((p, m), v), g)| {
                        vectorized(
                            #[inline(always)]
                            || {
                                for i in 0..p.len() {
                                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                                    p[i] = p[i] * decay - step_size * m[i] / ((v[i] / c2).sqrt() + eps);
                                }
                            },
                        )
                    });
            })
        });
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.tensor.clone()).collect()
    }

    fn state(&self) -> Vec<ParamState> {
        let buffers = |s: &Slot| vec![("exp_avg".to_string(), s.m.clone()), ("exp_avg_sq".to_string(), s.v.clone())];
        self.slots.iter().map(|s| ParamState { buffers: buffers(s), steps: s.steps }).collect()
    }

    fn load_state(&mut self, state: Vec<ParamState>) -> Result<()> {
        let sizes: Vec<usize> = self.slots.iter().map(|s| s.tensor.numel()).collect();
        check_state(&state, &sizes, &["exp_avg", "exp_avg_sq"])?;
        for (i, s) in state.iter().enumerate() {
            ensure!(
                s.buffers[1].1.iter().all(|&x| x >= 0.0),
                Argument,
                "optimizer state entry {i}: exp_avg_sq is negative"
            );
        }
        for (slot, s) in self.slots.iter_mut().zip(state) {
            let [(_, m), (_, v)]: [(String, Vec<f32>); 2] = s.buffers.try_into().expect("checked: two buffers");
            (slot.m, slot.v, slot.steps) = (m, v, s.steps);
        }
        Ok(())
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (NaN or inf when a gradient is not finite; gradients are then left as is;
/// inf too for finite gradients whose norm is past float32's range, which are scaled). A
/// tensor listed twice (tied weights) counts once.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f32) -> Result<f32> {
    ensure!(max_norm > 0.0, Argument, "clip_grad_norm: max_norm must be > 0, got {max_norm}");
    crate::compute(|| clip(params, max_norm))
}

/// `clip_grad_norm`'s work, run on the compute threads (its sums and scaling are parallel).
fn clip(params: &[Tensor], max_norm: f32) -> Result<f32> {
    let params = once_each(params.iter(), |p| p); // tied: counted and scaled once
    let squares: Vec<f64> = params
        .par_iter()
        .map(|p| p.grad_slot().as_ref().map_or(0.0, |g| g.iter().map(|&x| x as f64 * x as f64).sum()))
        .collect();
    let norm = squares.iter().fold(0.0, |a, b| a + b).sqrt(); // +0.0 when empty (a sum starts at -0.0)
                                                              // In f64: a norm past float32's range (gradients near its largest values) is still finite.
    if norm.is_finite() && norm > f64::from(max_norm) {
        let scale = (f64::from(max_norm) / (norm + 1e-6)) as f32;
        params.par_iter().for_each(|p| {
            if let Some(g) = p.grad_slot().as_mut() {
                vectorized(
                    #[inline(always)]
                    || g.iter_mut().for_each(|x| *x *= scale),
                );
            }
        });
    }
    Ok(norm as f32)
}

/// The (parameter, weight decay) pairs an optimiser updates: leaf tensors with a decay ≥ 0, a
/// tensor listed twice (tied weights) kept once.
fn unique_leaves(params: Vec<(Tensor, f32)>, who: &str) -> Result<Vec<(Tensor, f32)>> {
    for (tensor, weight_decay) in &params {
        ensure!(*weight_decay >= 0.0, Argument, "{who}: weight decay must be ≥ 0, got {weight_decay}");
        ensure!(
            tensor.is_leaf(),
            Argument,
            "{who}: parameters must be leaf tensors (got a computed tensor of shape {:?})",
            tensor.shape()
        );
    }
    Ok(once_each(params.into_iter(), |(tensor, _)| tensor))
}

/// `items` with each tensor kept at its first listing (a tied weight is listed under two names).
fn once_each<T>(items: impl Iterator<Item = T>, tensor: impl Fn(&T) -> &Tensor) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|item| seen.insert(tensor(item).id())).collect()
}

/// Stochastic gradient descent as `torch.optim.SGD` (no dampening): the weight decay enters the
/// gradient (`g + wd·p`, L2 regularisation, unlike AdamW's), then with momentum μ the buffer
/// `b = μ·b + g` (b = g at the first step: it starts at zero) replaces it, or with Nesterov
/// `g + μ·b` does.
pub struct Sgd {
    slots: Vec<SgdSlot>,
    lr: LearningRate,
    momentum: f32,
    nesterov: bool,
}

/// One parameter with its weight decay and momentum buffer (empty without momentum).
struct SgdSlot {
    tensor: Tensor,
    weight_decay: f32,
    buffer: Vec<f32>,
    steps: u64,
}

impl Sgd {
    pub fn new(params: Vec<(Tensor, f32)>, lr: f32, momentum: f32, nesterov: bool) -> Result<Sgd> {
        let lr = LearningRate::new(lr)?;
        ensure!((0.0..1.0).contains(&momentum), Argument, "SGD: momentum must be in [0, 1), got {momentum}");
        ensure!(!nesterov || momentum > 0.0, Argument, "SGD: Nesterov momentum needs momentum > 0");
        let slots = unique_leaves(params, "SGD")?
            .into_iter()
            .map(|(tensor, weight_decay)| {
                // The buffer starts at zero, so its first value is the first gradient (with decay).
                let buffer = if momentum > 0.0 { zeroed(tensor.numel())? } else { Vec::new() };
                Ok(SgdSlot { tensor, weight_decay, buffer, steps: 0 })
            })
            .collect::<Result<_>>()?;
        Ok(Sgd { slots, lr, momentum, nesterov })
    }
}

/// The settings and how many parameters it updates (their buffers are `state`).
impl std::fmt::Debug for Sgd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sgd")
            .field("lr", &self.lr.get())
            .field("momentum", &self.momentum)
            .field("nesterov", &self.nesterov)
            .field("parameters", &self.slots.len())
            .finish()
    }
}

impl Optimizer for Sgd {
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }

    fn step(&mut self) {
        let (lr, mu, nesterov) = (self.lr.get(), self.momentum, self.nesterov);
        let slots = &mut self.slots;
        crate::compute(move || {
            slots.par_iter_mut().for_each(|slot| {
                let grad = slot.tensor.grad_slot();
                let Some(g) = grad.as_ref() else { return };
                slot.steps = slot.steps.saturating_add(1);
                let wd = slot.weight_decay;
                let mut p = slot.tensor.write();
                if mu == 0.0 {
                    p.par_chunks_mut(GRAIN).zip(g.par_chunks(GRAIN)).for_each(|(p, g)| {
                        vectorized(
                            #[inline(always)]
                            || p.iter_mut().zip(g).for_each(|(p, &g)| *p -= lr * (g + wd * *p)),
                        )
                    });
                    return;
                }
                p.par_chunks_mut(GRAIN).zip(slot.buffer.par_chunks_mut(GRAIN)).zip(g.par_chunks(GRAIN)).for_each(
                    |((p, b), g)| {
                        vectorized(
                            #[inline(always)]
                            || {
                                for i in 0..p.len() {
                                    let d = g[i] + wd * p[i];
                                    b[i] = mu * b[i] + d;
                                    p[i] -= lr * if nesterov { d + mu * b[i] } else { b[i] };
                                }
                            },
                        )
                    },
                );
            })
        });
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.tensor.clone()).collect()
    }

    /// With momentum, each parameter's `momentum_buffer`; without, no buffers.
    fn state(&self) -> Vec<ParamState> {
        let buffers = |s: &SgdSlot| {
            if self.momentum > 0.0 {
                vec![("momentum_buffer".to_string(), s.buffer.clone())]
            } else {
                Vec::new()
            }
        };
        self.slots.iter().map(|s| ParamState { buffers: buffers(s), steps: s.steps }).collect()
    }

    fn load_state(&mut self, state: Vec<ParamState>) -> Result<()> {
        let sizes: Vec<usize> = self.slots.iter().map(|s| s.tensor.numel()).collect();
        check_state(&state, &sizes, if self.momentum > 0.0 { &["momentum_buffer"] } else { &[] })?;
        for (slot, s) in self.slots.iter_mut().zip(state) {
            if let Some((_, buffer)) = s.buffers.into_iter().next() {
                slot.buffer = buffer;
            }
            slot.steps = s.steps;
        }
        Ok(())
    }
}
