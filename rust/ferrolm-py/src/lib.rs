//! Python bindings: thin wrappers around the `ferrolm` core, built by maturin as `ferrolm._core`.
//! Nothing here computes; every function converts arguments, releases the GIL around the core
//! call, and maps core errors to Python exceptions.

use pyo3::prelude::*;

mod errors;
mod tokenizer;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    tokenizer::register(m)?;
    Ok(())
}
