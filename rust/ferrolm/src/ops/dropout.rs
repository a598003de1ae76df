//! Inverted dropout with a counter-based mask: element i is kept when `uniform(seed, i) ≥ p`,
//! so the mask needs no storage (backward regenerates it) and no thread-order dependence.

use super::{filled, GRAIN};
use crate::rng::uniform_at;
use crate::tensor::Tensor;
use crate::{ensure, Result};

/// One dropout mask: which elements of a tensor are kept, and the 1/(1−p) that scales them.
/// Fused kernels (attention's probabilities) draw the mask [`dropout`] would draw on the same
/// tensor, element by element.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    p: f32,
    /// 1/(1−p), what kept elements are multiplied by.
    scale: f32,
    seed: u64,
}

impl Dropout {
    /// The mask for drop probability `p` in [0, 1) (an `Argument` error otherwise), or `None`
    /// when `p == 0` (nothing is dropped).
    pub fn new(p: f32, seed: u64) -> Result<Option<Dropout>> {
        ensure!((0.0..1.0).contains(&p), Argument, "dropout probability must be in [0, 1), got {p}");
        Ok((p > 0.0).then_some(Dropout { p, scale: 1.0 / (1.0 - p), seed }))
    }

    /// What element `index` is multiplied by: 0 when dropped, else 1/(1−p).
    #[inline(always)]
    pub fn factor(&self, index: usize) -> f32 {
        if uniform_at(self.seed, index as u64) >= self.p {
            self.scale
        } else {
            0.0
        }
    }
}

/// Zeroes each element with probability `p` and scales survivors by 1/(1−p); the identity
/// when `p == 0`. Callers pass a fresh `seed` per call (the trainer draws them from its RNG).
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let Some(mask) = Dropout::new(p, seed)? else {
        return Ok(x.clone());
    };
    let apply = move |src: &[f32]| -> Result<Vec<f32>> {
        // SAFETY: the loop writes every element of the chunk (src is as long as the result).
        unsafe {
            filled(src.len(), GRAIN, |c, o| {
                for (i, o) in o.iter_mut().enumerate() {
                    let at = c * GRAIN + i;
                    o.write(src[at] * mask.factor(at));
                }
            })
        }
    };
    let y = apply(&x.read())?;
    Ok(Tensor::from_op(y, x.shape().to_vec(), "dropout", &[x], move |ctx| Ok(vec![Some(apply(ctx.grad)?)])))
}
