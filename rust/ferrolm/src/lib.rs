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
//! ## Where each concept lives
//!
//! | concept | module |
//! |---|---|
//! | tensors, and the graph each op records | [`tensor`], [`autograd`] |
//! | ops, each forward beside its backward (matmul, layernorm, softmax, cross-entropy, GELU, fused attention and its KV cache) | [`ops`] |
//! | matrix products (packed AVX-512/AVX2 kernels, bf16) | [`gemm`], [`simd`] for elementwise math |
//! | layers (Linear, Embedding, LayerNorm) | [`nn`] |
//! | GPT-2 and BERT | [`model`] (`model::gpt`, `model::bert`) |
//! | AdamW, SGD, gradient clipping (the learning-rate schedule is Python's `TrainConfig.lr_at`) | [`optim`] |
//! | sampling with a KV cache, stop strings, streaming text | [`generate`] |
//! | tokenizers: BPE (training in `tokenizer::bpe_train`), WordPiece, characters, Hugging Face and tiktoken files | [`tokenizer`] |
//! | model directories (safetensors + config.json), atomic writes | [`checkpoint`] |
//! | seeded random numbers, the thread pool | [`rng`], [`threads`] |

pub mod autograd;
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

pub use autograd::{is_grad_enabled, no_grad, set_grad_enabled, with_grad_enabled};
pub use error::{Error, Result};
pub use optim::{clip_grad_norm, AdamW, Optimizer, ParamState, Sgd};
pub use tensor::{ElementsMut, Tensor};
pub use threads::{compute, init_thread_pool, num_threads, set_num_threads, with_threads};

/// The crate README's example, compiled by `cargo test` so that it keeps to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;
