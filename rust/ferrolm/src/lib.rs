//! # ferrolm
//!
//! Train and run small language models on CPUs: f32 tensors with reverse-mode backprop,
//! fused transformer kernels, and an AdamW optimiser, multithreaded with rayon. This crate
//! has no Python dependency; `ferrolm-py` wraps it for Python.
//!
//! ```
//! use ferrolm::{ops, Tensor};
//! let w = Tensor::randn(&[3, 2], 0.0, 1.0, 42)?.with_grad();
//! let x = Tensor::ones(&[4, 3])?;
//! let loss = ops::mean_all(&ops::matmul(&x, &w)?);
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().shape(), &[3, 2]);
//! # Ok::<(), ferrolm::Error>(())
//! ```
//!
//! Training steps on a tiny GPT, next-token prediction as Python's loop takes them (that loop
//! adds the schedule, clipping, evaluation and checkpoints):
//!
//! ```
//! use ferrolm::model::{Batch, Gpt, GptConfig};
//! use ferrolm::nn::Module;
//! use ferrolm::ops::{cross_entropy, Reduction};
//! use ferrolm::{AdamW, Optimizer};
//!
//! // GPT-2's architecture (its defaults), tiny, without dropout or end-of-text ids.
//! let config = GptConfig { vocab_size: 16, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, dropout: 0.0,
//!     attn_dropout: 0.0, bos_token_id: None, eos_token_id: None, ..GptConfig::default() };
//! let model = Gpt::new(config, 0)?;
//! // AdamW's weight decay on matrices only, as nanoGPT's.
//! let params = model.named_parameters().into_iter().map(|(_, p)| { let wd = if p.rank() == 2 { 0.1 } else { 0.0 }; (p, wd) });
//! let mut opt = AdamW::new(params.collect(), 1e-2, (0.9, 0.99), 1e-8)?;
//! let text: Vec<i64> = (0..9).map(|i| i % 4).collect(); // 0 1 2 3 0 1 2 3 0: the next token is predictable
//! let (inputs, targets) = (&text[..8], &text[1..]);
//! let mut losses = Vec::new();
//! for _ in 0..30 {
//!     let logits = model.forward(&Batch::new(inputs, 1, 8), None, None)?; // [1, 8, 16]
//!     let loss = cross_entropy(&logits, targets, None, Reduction::Mean)?;
//!     losses.push(loss.item()?);
//!     loss.backward()?;
//!     opt.step();
//!     opt.zero_grad();
//! }
//! assert!(losses[29] < losses[0] / 4.0, "{losses:?}");
//! # Ok::<(), ferrolm::Error>(())
//! ```
//!
//! ## Where each concept lives
//!
//! | concept | module |
//! |---|---|
//! | tensors, and the graph each op records | [`tensor`], [`autograd`] |
//! | ops, each forward beside its backward (matmul, layernorm, softmax, cross-entropy, GELU, fused attention and its KV cache) | [`ops`] |
//! | matrix products (packed AVX-512/AVX2 kernels, bf16) | [`gemm`], [`simd`] for elementwise math |
//! | layers (Linear, Embedding, LayerNorm) | [`nn`] |
//! | GPT-2 and BERT | [`model`] ([`model::gpt`], [`model::bert`]) |
//! | AdamW, SGD, gradient clipping (the learning-rate schedule is Python's `TrainConfig.lr_at`) | [`optim`] |
//! | sampling with a KV cache, stop strings, streaming text; the chat template of `ferrolm sft` models | [`generate`], [`chat`] |
//! | tokenizers: BPE (training: [`tokenizer::Trainer`]), WordPiece, characters, Hugging Face and tiktoken files | [`tokenizer`] |
//! | model directories (safetensors + config.json), atomic writes | [`checkpoint`] |
//! | seeded random numbers, the thread pool | [`rng`], [`threads`] |

pub mod autograd;
pub mod chat;
pub mod checkpoint;
pub mod error;
pub mod gemm;
pub mod generate;
pub mod model;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod simd;
pub mod tensor;
pub mod threads;
pub mod tokenizer;

// The crates whose types the public API names (ndarray arrays, serde_json config values, the
// tokenizer's id sets), re-exported so that an embedder uses the versions ferrolm was built with.
pub use {ndarray, rustc_hash, serde_json};

pub use autograd::{is_grad_enabled, no_grad, set_grad_enabled, with_grad_enabled};
pub(crate) use error::{bail, ensure};
pub use error::{Error, Result};
pub use optim::{clip_grad_norm, AdamW, Optimizer, ParamState, Sgd};
pub use tensor::{ElementsMut, Tensor};
pub use threads::{compute, init_thread_pool, num_threads, set_num_threads, with_threads};

/// The crate README's example, compiled by `cargo test` so that it keeps to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;
