//! The basic layers: Linear, Embedding, LayerNorm. Initialisation follows PyTorch's defaults
//! and is seeded, so the same seed builds the same layer.

use super::{join, Module};
use crate::{ensure, ops, Result, Tensor};

/// `y = x·Wᵀ + b` with W [out, in] (PyTorch's layout).
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weights and bias uniform in ±1/√in, as `torch.nn.Linear`.
    pub fn new(in_features: usize, out_features: usize, bias: bool, seed: u64) -> Result<Linear> {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        Ok(Linear {
            weight: Tensor::rand(&[out_features, in_features], -bound, bound, seed)?.with_grad(),
            bias: bias
                .then(|| Tensor::rand(&[out_features], -bound, bound, seed ^ 0xB1A5))
                .transpose()?
                .map(Tensor::with_grad),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }
}

impl Module for Linear {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(join(prefix, "bias"), b);
        }
    }
}

/// A lookup table of `num` vectors of size `dim`.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// Standard normal entries scaled by `std` (PyTorch uses 1, GPT-2 0.02).
    pub fn new(num: usize, dim: usize, std: f32, seed: u64) -> Result<Embedding> {
        Ok(Embedding { weight: Tensor::randn(&[num, dim], 0.0, std, seed)?.with_grad() })
    }

    /// Rows for `ids` of shape `shape`, giving `shape + [dim]`.
    pub fn forward(&self, ids: &[i64], shape: &[usize]) -> Result<Tensor> {
        ops::embedding(&self.weight, ids, shape)
    }
}

impl Module for Embedding {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
    }
}

/// Layer normalisation over the last axis with a learned scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub eps: f32,
}

impl LayerNorm {
    /// Refuses an `eps` below 0 or NaN here, as `ops::layer_norm` would at the first call.
    pub fn new(dim: usize, bias: bool, eps: f32) -> Result<LayerNorm> {
        ensure!(eps >= 0.0, Argument, "LayerNorm: eps must be non-negative, got {eps}");
        Ok(LayerNorm {
            weight: Tensor::ones(&[dim])?.with_grad(),
            bias: bias.then(|| Tensor::zeros(&[dim])).transpose()?.map(Tensor::with_grad),
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, Some(&self.weight), self.bias.as_ref(), self.eps)
    }
}

impl Module for LayerNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(join(prefix, "bias"), b);
        }
    }
}
