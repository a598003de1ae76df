//! Python bindings: thin wrappers around the `ferrolm` core, built by maturin as `ferrolm._core`.
//! Nothing here computes; every function converts arguments, releases the GIL around the core
//! call, and maps core errors to Python exceptions.

use pyo3::prelude::*;

mod errors;
mod functional;
mod model;
mod nn;
mod tensor;
mod tokenizer;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<tensor::PyTensor>()?;
    functional::register(m)?;
    nn::register(m)?;
    model::register(m)?;
    tokenizer::register(m)?;
    Ok(())
}
