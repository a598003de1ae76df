//! Python bindings: thin wrappers around the `ferrolm` core, built by maturin as `ferrolm._core`.
//! Nothing here computes; every function converts arguments, releases the GIL around the core
//! call, and maps core errors to Python exceptions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use pyo3::prelude::*;

mod errors;
mod functional;
mod model;
mod nn;
mod tensor;
mod tokenizer;

use errors::IntoPy;

/// Keeps freed tensor buffers in the heap instead of returning them to the OS. A training step
/// frees and reallocates the same buffers hundreds of times; with glibc's defaults each comes
/// back as fresh pages, and page faults cost ~30% of a small model's step. No block is a
/// mapping of its own (glibc would map those above 32 MB, the most its threshold can be): a
/// 50k-token vocabulary's logits and their gradient (200 MB each for GPT-2 small at context
/// 256) cost ~10% of its step in page faults and unmapping. The heap's top is trimmed only
/// past 1 GiB free: GPT-2 small's step frees 0.8 GB of activations at its end, which a 256 MB
/// threshold gave back and the next step faulted in again (10–12% of its step); a process
/// keeps at most that much it does not use. [`release_memory`] hands the kept memory back when
/// training ends, and when a training run or a generation would not fit otherwise.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Returns the free memory the allocator keeps (see `tune_allocator`) to the OS: the training
/// loop calls it when a run ends, so a notebook does not hold a run's peak afterwards.
#[pyfunction]
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs a core call without the GIL, where its parallel ops get every compute thread
/// (`ferrolm::compute`): how every binding that does real work calls the core.
pub(crate) fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| ferrolm::compute(f))
}

/// Runs a long core call (a tokenizer training step, scoring a long text) on another thread
/// while this one watches for Ctrl-C, which sets `stop` (polled by the call) and raises
/// KeyboardInterrupt once the call has ended.
pub(crate) fn interruptible<T: Send>(
    py: Python<'_>,
    stop: &AtomicBool,
    f: impl FnOnce() -> ferrolm::Result<T> + Send,
) -> PyResult<T> {
    std::thread::scope(|scope| {
        let (done, mut result) = mpsc::channel();
        let working = std::thread::Builder::new()
            .spawn_scoped(scope, move || done.send(ferrolm::compute(f)))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?;
        loop {
            // The receiver goes along and comes back: it cannot be shared with the detached closure.
            let waited;
            (result, waited) = py.detach(move || {
                let waited = result.recv_timeout(Duration::from_millis(50));
                (result, waited)
            });
            match waited {
                Ok(outcome) => return outcome.py(),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = py.check_signals() {
                        stop.store(true, Ordering::Relaxed);
                        let _ = py.detach(move || result.recv());
                        return Err(interrupt);
                    }
                }
                // The call panicked: raised here, as a panic in any other call is.
                Err(RecvTimeoutError::Disconnected) => match working.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(_) => unreachable!("the working thread ends after sending its outcome"),
                },
            }
        }
    })
}

/// Waits for the state of an object that Python threads may share (an optimizer, a generation):
/// calls from two threads take turns instead of failing. A panic in an earlier call was raised
/// to Python; the state it left is still usable.
fn lock<S>(state: &Mutex<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A quick `f` on shared state. Uncontended (every step of a training loop), it keeps the GIL;
/// otherwise the turn is waited for without it, so a quick call waiting on a long one does not
/// stop every Python thread.
pub(crate) fn locked<S: Send, T: Send>(py: Python<'_>, state: &Mutex<S>, f: impl FnOnce(&mut S) -> T + Send) -> T {
    match state.try_lock() {
        Ok(mut guard) => f(&mut guard),
        Err(TryLockError::Poisoned(poisoned)) => f(&mut poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => py.detach(|| f(&mut lock(state))),
    }
}

/// [`compute`] on shared state: without the GIL, and with the lock taken outside the compute
/// pool (a pool thread waiting for it could be the one that the holder's work needs).
pub(crate) fn compute_locked<S: Send, T: Send>(
    py: Python<'_>,
    state: &Mutex<S>,
    f: impl FnOnce(&mut S) -> T + Send,
) -> T {
    py.detach(|| {
        let mut guard = lock(state);
        let state = &mut *guard;
        ferrolm::compute(|| f(state))
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The importing thread (normally Python's main) makes most calls.
    ferrolm::init_thread_pool().map_err(|e| pyo3::exceptions::PyImportError::new_err(format!("ferrolm: {e}")))?;
    tune_allocator();
    // numpy's C API is imported on first use, by running Python code: at the end of a long call,
    // a Ctrl-C pending by then made that import fail and rust-numpy panic. Imported here instead.
    numpy::PyArray1::<f32>::zeros(m.py(), 0, false);
    errors::register(m)?;
    m.add_class::<tensor::PyTensor>()?;
    functional::register(m)?;
    nn::register(m)?;
    model::register(m)?;
    tokenizer::register(m)?;
    m.add_function(wrap_pyfunction!(release_memory, m)?)?;
    Ok(())
}
