//! Inverted dropout with a counter-based mask: element i is kept when `uniform(seed, i) ≥ p`,
//! so the mask needs no storage (backward regenerates it) and no thread-order dependence.

use rayon::prelude::*;

use super::GRAIN;
use crate::rng::uniform_at;
use crate::tensor::Tensor;
use crate::{ensure, Result};

/// Zeroes each element with probability `p` and scales survivors by 1/(1−p); the identity
/// when `p == 0`. Callers pass a fresh `seed` per call (the trainer draws them from its RNG).
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    ensure!((0.0..1.0).contains(&p), Argument, "dropout probability must be in [0, 1), got {p}");
    if p == 0.0 {
        return Ok(x.clone());
    }
    let scale = 1.0 / (1.0 - p);
    let apply = move |src: &[f32]| {
        let mut out = vec![0.0; src.len()];
        out.par_chunks_mut(GRAIN).enumerate().for_each(|(c, o)| {
            for (i, o) in o.iter_mut().enumerate() {
                let at = c * GRAIN + i;
                *o = if uniform_at(seed, at as u64) >= p { src[at] * scale } else { 0.0 };
            }
        });
        out
    };
    let y = apply(&x.read());
    Ok(Tensor::from_op(y, x.shape().to_vec(), "dropout", &[x], move |ctx| Ok(vec![Some(apply(ctx.grad))])))
}
