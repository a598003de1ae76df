//! Language models built from the core ops.

mod gpt;

pub use gpt::{Batch, Block, Gpt, GptConfig};
