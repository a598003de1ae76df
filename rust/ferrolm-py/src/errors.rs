//! Core errors → typed Python exceptions. Shape and argument problems are `ValueError`s,
//! bad indices `IndexError`s, so `except ValueError` works as users expect.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIndexError, PyKeyboardInterrupt, PyMemoryError, PyOSError, PyPermissionError,
    PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;

use ferrolm::Error;

create_exception!(ferrolm, ShapeError, PyValueError, "Tensor shapes do not fit the operation.");
create_exception!(ferrolm, FormatError, PyValueError, "A file or buffer is truncated, corrupt or of the wrong schema.");
create_exception!(
    ferrolm,
    GradError,
    PyRuntimeError,
    "Backpropagation was misused (non-scalar output, freed graph...)."
);

/// Converts a core error into the matching Python exception, whose class says what kind of
/// error it is (so its message does not begin "invalid argument:" again).
pub fn to_py(err: Error) -> PyErr {
    let msg = match &err {
        Error::Shape(m)
        | Error::Argument(m)
        | Error::Index(m)
        | Error::Grad(m)
        | Error::Format(m)
        | Error::Memory(m) => m.clone(),
        Error::Interrupted | Error::Io { .. } => err.to_string(),
    };
    match err {
        Error::Shape(_) => ShapeError::new_err(msg),
        Error::Argument(_) => PyValueError::new_err(msg),
        Error::Index(_) => PyIndexError::new_err(msg),
        Error::Grad(_) => GradError::new_err(msg),
        Error::Format(_) => FormatError::new_err(msg),
        Error::Memory(_) => PyMemoryError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
    }
}

/// `.py()` turns a core `Result` into a `PyResult` (the orphan rule forbids `From`).
pub trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for ferrolm::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("GradError", py.get_type::<GradError>())?;
    Ok(())
}
