//! Language models built from the core ops: GPT (causal) and BERT (bidirectional).

pub mod bert;
pub mod gpt;

pub use bert::{Bert, BertConfig, EncoderLayer, MlmHead};
pub use gpt::{Activation, Block, Gpt, GptConfig};

use crate::nn::Module;
use crate::ops::{self, Dropout};
use crate::rng::mix;
use crate::{Result, Tensor};

/// How a new model's weight matrices are filled, given (shape, std, seed): drawn from
/// N(0, std) for training, or zeros for a model whose weights are about to be overwritten
/// (loading, copying), which skips the drawing and leaves the pages untouched until written.
type Init = fn(&[usize], f32, u64) -> Result<Tensor>;

fn normal(shape: &[usize], std: f32, seed: u64) -> Result<Tensor> {
    Tensor::randn(shape, 0.0, std, seed)
}

fn zeros(shape: &[usize], _: f32, _: u64) -> Result<Tensor> {
    Tensor::zeros(shape)
}

/// A deep clone's second half: every parameter of `src` into `dst`'s (the same architecture,
/// built with zeros): its values, its gradient, and whether it collects one (frozen stays frozen).
fn copy_parameters(dst: &impl Module, src: &impl Module) -> Result<()> {
    for ((_, d), (_, s)) in dst.named_parameters().iter().zip(src.named_parameters()) {
        d.assign(&s.read())?;
        d.set_grad(s.grad().as_ref())?;
        d.set_requires_grad(s.requires_grad())?;
    }
    Ok(())
}

/// Refuses a config size of 0, naming the field.
fn ensure_positive(model: &str, sizes: &[(&str, usize)]) -> Result<()> {
    for &(name, size) in sizes {
        crate::ensure!(size > 0, Argument, "{model} config: {name} must be positive, got 0");
    }
    Ok(())
}

/// A place where a transformer drops values while training (GPT and BERT have the same ones).
#[derive(Clone, Copy)]
enum Site {
    Embeddings,
    /// Layer l's attention probabilities, inside the fused kernel.
    Probabilities(usize),
    /// Layer l's attention output, before the residual add.
    AttentionOut(usize),
    /// Layer l's MLP output, before the residual add.
    MlpOut(usize),
}

impl Site {
    /// A distinct number per site, from which its mask's seed is hashed.
    fn number(self) -> u64 {
        match self {
            Site::Embeddings => 0,
            Site::Probabilities(l) => 3 * l as u64 + 1,
            Site::AttentionOut(l) => 3 * l as u64 + 2,
            Site::MlpOut(l) => 3 * l as u64 + 3,
        }
    }
}

/// Where one forward pass drops values: nowhere in evaluation (`None`), else every site draws
/// its own mask from the pass's seed.
#[derive(Clone, Copy)]
struct DropoutSites(Option<u64>);

impl DropoutSites {
    fn seed(self, site: Site) -> Option<u64> {
        self.0.map(|seed| mix(seed ^ mix(site.number())))
    }

    /// The mask of `site` at drop probability `p`; `None` when nothing is dropped there.
    fn mask(self, p: f32, site: Site) -> Result<Option<Dropout>> {
        self.seed(site).map_or(Ok(None), |seed| Dropout::new(p, seed))
    }

    /// `x` with the mask of `site` applied.
    fn apply(self, x: Tensor, p: f32, site: Site) -> Result<Tensor> {
        match self.seed(site) {
            Some(seed) => ops::dropout(&x, p, seed),
            None => Ok(x),
        }
    }
}

/// A batch of token ids [B, T] and how to read them.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub ids: &'a [i64],
    pub batch: usize,
    pub len: usize,
    /// Position of every token [B, T]; default 0..T (after what a KV cache already holds).
    pub positions: Option<&'a [i64]>,
    /// [B, keys] true for real tokens (keys = T, plus what a KV cache holds); padding is masked.
    pub key_mask: Option<&'a [bool]>,
    /// Segment of every token [B, T] (BERT's token types; default 0).
    pub token_types: Option<&'a [i64]>,
}

impl<'a> Batch<'a> {
    /// Ids [B, T] with default positions, no padding and one segment.
    pub fn new(ids: &'a [i64], batch: usize, len: usize) -> Self {
        Batch { ids, batch, len, positions: None, key_mask: None, token_types: None }
    }

    /// Checks that the ids (and the per-token positions and segments given) fill [B, T] and
    /// that every id is in a vocabulary of `vocab_size`.
    fn check(&self, model: &str, vocab_size: usize) -> Result<()> {
        let (b, t) = (self.batch, self.len);
        let n = b.checked_mul(t).filter(|&n| n == self.ids.len());
        crate::ensure!(n.is_some(), Shape, "{model}: {} ids do not fill a [{b}, {t}] batch", self.ids.len());
        for (what, given) in [("positions", self.positions), ("token types", self.token_types)] {
            if let Some(given) = given {
                crate::ensure!(
                    given.len() == self.ids.len(),
                    Shape,
                    "{model}: {} {what} for a [{b}, {t}] batch",
                    given.len()
                );
            }
        }
        if let Some(&id) = self.ids.iter().find(|&&id| id < 0 || id as usize >= vocab_size) {
            crate::bail!(Index, "{model}: token id {id} is outside the vocabulary of {vocab_size} tokens");
        }
        Ok(())
    }

    /// Every token's position: as given, or `start..start + T` in each row.
    fn positions_from(&self, start: usize) -> Vec<i64> {
        match self.positions {
            Some(p) => p.to_vec(),
            None => (0..self.batch).flat_map(|_| (start..start + self.len).map(|p| p as i64)).collect(),
        }
    }
}
