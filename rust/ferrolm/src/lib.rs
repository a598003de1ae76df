//! # ferrolm
//!
//! Train and run small language models on CPUs: f32 tensors with reverse-mode backprop,
//! fused transformer kernels, and an AdamW optimiser, multithreaded with rayon. This crate
//! has no Python dependency; `ferrolm-py` wraps it for Python.
//!
//! ```
//! use ferrolm::{ops, Tensor};
//! let w = Tensor::randn(&[3, 2], 0.0, 1.0, 42).with_grad();
//! let x = Tensor::ones(&[4, 3]);
//! let loss = ops::mean_all(&ops::matmul(&x, &w).unwrap());
//! loss.backward().unwrap();
//! assert_eq!(w.grad().unwrap().shape(), &[3, 2]);
//! ```

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
pub mod tokenizer;

pub use autograd::{is_grad_enabled, no_grad, set_grad_enabled};
pub use error::{Error, Result};
pub use optim::{clip_grad_norm, AdamW};
pub use tensor::Tensor;

/// Starts the compute pool (rayon's global pool) with the calling thread as one of its threads,
/// and returns whether it did. Parallel ops called from this thread then start on it, instead of
/// being handed to a pool thread while it sleeps until they finish: that hand-over costs
/// 10-20 µs an op, about a tenth of a small model's training step and a third of the time of
/// token-by-token decoding. Call it once, before anything runs in parallel, from the thread that
/// will drive the computation (the Python module does so when imported). Other threads may still
/// call in; their work runs on the pool's other threads.
///
/// A pool of one thread is left to rayon: its only thread would be this one, so work handed in by
/// other threads would wait until this thread next calls in.
pub fn init_thread_pool() -> bool {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    threads > 1 && rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build_global().is_ok()
}

/// Threads in the compute pool (rayon's; set with the `RAYON_NUM_THREADS` environment variable).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}
