//! The compute threads: rayon's global pool, joined by the thread that drives the computation.
//!
//! A parallel op called from outside a pool is handed to a sleeping pool thread, and the caller
//! sleeps until it is done: on 2 cores these hand-overs measured about a tenth of the baby GPT's
//! training step and a third of the 6-layer model's token-by-token decoding.
//! [`init_thread_pool`] makes the driving thread one of the pool's threads, so its ops start
//! where they are called. Calls from any other thread go through
//! [`compute`], which runs them in a second pool of the same size, so they too get every thread.
//! [`with_threads`] runs work on a pool of a chosen size; [`set_num_threads`] with a size other
//! than the pool's makes every [`compute`] call do so, the driving thread's included (each call
//! is then handed over, a few microseconds: 1.5% of the baby GPT's training step, 12% of its
//! token-by-token decoding).
//!
//! Callers from outside a pool take turns on it, one call at a time. A pool thread waiting for
//! its own call's parallel work runs whatever work the pool has, including the start of another
//! caller's call; if that call then waited for a tensor the first one holds (an optimizer step
//! writing the weights a forward pass is reading), both would wait forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use rayon::ThreadPool;

use crate::autograd::{is_grad_enabled, with_grad_enabled};
use crate::{bail, Error, Result};

/// Starts the compute pool (rayon's global pool, `RAYON_NUM_THREADS` threads or one per CPU)
/// with the calling thread as one of its threads; returns whether it did (not if the pool was
/// already running, or the calling thread is one of another rayon pool's). Call it once,
/// before anything runs in parallel, from the thread that will drive the computation; the
/// Python module does so when imported. An error when the threads
/// cannot be started (a process limit; rayon's pool can then never start in this process) or
/// `RAYON_NUM_THREADS` asks for more than [`MAX_THREADS`].
///
/// That thread takes pool work only while it is itself computing, so afterwards other threads'
/// parallel work must go through [`compute`]: called directly, it would run on the remaining
/// pool threads only, and with a one-thread pool never (a hang). The models' and tokenizers'
/// methods, the optimizers' steps, `backward` and generation do so themselves; a tensor op
/// (`ops::…`) called from another thread is the caller's to wrap (a whole training step in one
/// [`compute`] call, best). Embedders that skip this function call through [`compute`] from
/// every thread.
pub fn init_thread_pool() -> Result<bool> {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads > MAX_THREADS {
        bail!(Argument, "RAYON_NUM_THREADS={threads} asks for more than {MAX_THREADS} compute threads");
    }
    let builder =
        rayon::ThreadPoolBuilder::new().num_threads(threads).start_handler(|_| crate::gemm::reserve_buffers());
    match builder.use_current_thread().build_global() {
        Ok(()) => {
            crate::gemm::reserve_buffers();
            let _ = DRIVING_THREAD.set(std::thread::current().id());
            Ok(true)
        }
        // Started before (by this function or an embedder), or called from a thread of another
        // rayon pool (whose `compute` calls then run in that pool): nothing to do.
        Err(e) if std::error::Error::source(&e).is_none() => Ok(false),
        Err(e) => Err(Error::io(
            format!(
                "cannot start {threads} compute threads (a limit on processes, ulimit -u, is reached: raise it, or \
                 set RAYON_NUM_THREADS lower; 1 starts none)"
            ),
            std::io::Error::other(e.to_string()),
        )),
    }
}

/// The thread that [`init_thread_pool`] made one of the compute pool's threads.
static DRIVING_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Runs `f`, a computation with parallel ops, where they get every compute thread (or as many
/// as [`set_num_threads`] chose): here, on a pool thread of that many (the one that called
/// [`init_thread_pool`], or any running a call already, which keeps its own); otherwise in a
/// pool of that size kept for other threads (see `kept_pool`), taking turns with other
/// callers. The global pool's threads are only the driving thread's: it takes pool work only
/// while computing, and in a one-thread pool it would be the only one that could run the work.
pub fn compute<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let in_pool = rayon::current_thread_index().is_some();
    if in_pool && DRIVING_THREAD.get() != Some(&std::thread::current().id()) {
        return f(); // part of a call already running: it stays in that call's pool
    }
    let threads = num_threads();
    if in_pool && threads == rayon::current_num_threads() {
        return f();
    }
    match kept_pool(threads) {
        Ok(pool) => pool.run(f),
        Err(_) => f(),
    }
}

/// The thread count [`set_num_threads`] chose; 0 while none is chosen.
static CHOSEN_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Makes every later [`compute`] call run on `threads` threads (`None`: the compute pool's own
/// size again), as PyTorch's `set_num_threads` does, where `RAYON_NUM_THREADS` can only be set
/// before the process starts. A count other than the compute pool's runs in a kept pool of that
/// size, so each call is handed over to it (a few microseconds).
pub fn set_num_threads(threads: Option<usize>) -> Result<()> {
    let n = threads.map(checked_count).transpose()?.unwrap_or(0);
    if n > 0 {
        kept_pool(n)?; // started now: threads that cannot start are this call's error, not a later one's
    }
    CHOSEN_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// The most threads [`with_threads`] starts: a mistaken count (a million) must not start that
/// many.
pub const MAX_THREADS: usize = 1024;

/// Runs `f` on a pool of `threads` threads (`None`: as [`compute`] runs it). Pools of the most
/// recently used sizes are kept, so callers can pick a thread count per call cheaply. Calls may
/// nest, but not back into a size an outer call is using (n inside m inside n): the inner call
/// would wait for the turn its own outer call holds.
pub fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let Some(n) = threads else { return Ok(compute(f)) };
    Ok(kept_pool(checked_count(n)?)?.run(f))
}

/// `n` if it is a thread count to start pools of.
fn checked_count(n: usize) -> Result<usize> {
    if n == 0 || n > MAX_THREADS {
        bail!(Argument, "the number of threads must be between 1 and {MAX_THREADS}, got {n}");
    }
    Ok(n)
}

/// A pool whose callers from outside take turns (see the module's documentation).
struct KeptPool {
    threads: ThreadPool,
    turn: Mutex<()>,
}

impl KeptPool {
    /// `f` on one of the pool's threads, once no other caller's call is running there, with the
    /// calling thread's grad mode (a thread-local setting: without it, `no_grad(|| compute(..))`
    /// would record a graph over there). Called from one of its own threads, `f` just runs.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.threads.current_thread_index().is_some() {
            return f();
        }
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let grad = is_grad_enabled();
        self.threads.install(|| with_grad_enabled(grad, f))
    }
}

/// Pools kept at once: a caller sweeping thread counts must not keep every size it tried
/// (40 sizes had kept 820 threads).
const KEPT_POOLS: usize = 4;

/// The kept pool of `n` threads, built on first use in this process; the least recently used
/// of [`KEPT_POOLS`] gives way to a new size (its threads end once no call is using it). A
/// forked child starts afresh: fork copies no threads, so a parent's pool would never run
/// anything there.
fn kept_pool(n: usize) -> Result<Arc<KeptPool>> {
    /// The process that built them, and the pools by size, least recently used first.
    type Kept = (u32, Vec<(usize, Arc<KeptPool>)>);
    static POOLS: Mutex<Kept> = Mutex::new((0, Vec::new()));
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if pools.0 != pid {
        // Forgotten, not dropped: a pool's drop signals threads that are not in this process.
        std::mem::forget(std::mem::take(&mut pools.1));
        pools.0 = pid;
    }
    if let Some(i) = pools.1.iter().position(|(size, _)| *size == n) {
        let entry = pools.1.remove(i);
        let pool = entry.1.clone();
        pools.1.push(entry);
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ferrolm-{i}"))
        .start_handler(|_| crate::gemm::reserve_buffers())
        .build()
        .map_err(|e| Error::Argument(format!("cannot start {n} threads: {e}")))?;
    let pool = Arc::new(KeptPool { threads: pool, turn: Mutex::new(()) });
    if pools.1.len() == KEPT_POOLS {
        pools.1.remove(0);
    }
    pools.1.push((n, pool.clone()));
    Ok(pool)
}

/// The threads [`compute`] calls run on: as [`set_num_threads`] chose, or the compute pool's
/// (rayon's global pool; its size is set with the `RAYON_NUM_THREADS` environment variable).
pub fn num_threads() -> usize {
    match CHOSEN_THREADS.load(Ordering::Relaxed) {
        0 => rayon::current_num_threads(),
        n => n,
    }
}
