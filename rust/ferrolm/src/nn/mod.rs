//! Layers that own parameters, and the [`Module`] trait that names them.

mod layers;

pub use layers::{Embedding, LayerNorm, Linear};

use crate::Tensor;

/// Something with named parameters ("h.0.attn.c_attn.weight"), so optimisers and checkpoints
/// can find them.
pub trait Module {
    /// Calls `f(name, parameter)` for every parameter, names prefixed by `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor));

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, t| out.push((name, t.clone())));
        out
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Number of parameter elements, over what `visit` yields (a tied weight, once).
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, t| n += t.numel());
        n
    }
}

/// `prefix.name`, or `name` at the top level.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
