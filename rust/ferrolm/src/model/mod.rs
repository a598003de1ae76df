//! Language models built from the core ops: GPT (causal) and BERT (bidirectional).

mod bert;
mod gpt;

pub use bert::{Bert, BertConfig, EncoderLayer, MlmHead};
pub use gpt::{Block, Gpt, GptConfig};

/// A batch of token ids [B, T] and how to read them.
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
}
