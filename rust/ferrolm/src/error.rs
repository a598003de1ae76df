//! One error type for the whole crate. Every fallible public function returns [`Result`].

/// What went wrong. The binding crate maps each variant to a Python exception class.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Tensors whose shapes do not fit the operation.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An argument outside what the function accepts (a negative probability, an unknown name...).
    #[error("invalid argument: {0}")]
    Argument(String),
    /// An index (token id, gather index, axis) outside its range.
    #[error("index out of range: {0}")]
    Index(String),
    /// Misuse of backpropagation: backward on a non-scalar, twice through a freed graph...
    #[error("autograd: {0}")]
    Grad(String),
    /// A file or buffer that is not what it claims to be (truncated, corrupt, wrong schema).
    #[error("bad format: {0}")]
    Format(String),
    /// A buffer too large to allocate (a size that overflows, or more memory than the system
    /// grants): reported instead of aborting the process.
    #[error("out of memory: {0}")]
    Memory(String),
    /// Stopped on request (a training's `stop` flag, set on Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// The operating system refused a file operation.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path or action that caused it.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The same kind of error with `context` (say the file it came from) before its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        let with = |m: String| format!("{context}: {m}");
        match self {
            Error::Shape(m) => Error::Shape(with(m)),
            Error::Argument(m) => Error::Argument(with(m)),
            Error::Index(m) => Error::Index(with(m)),
            Error::Grad(m) => Error::Grad(with(m)),
            Error::Format(m) => Error::Format(with(m)),
            Error::Memory(m) => Error::Memory(with(m)),
            Error::Interrupted => Error::Interrupted,
            Error::Io { context: c, source } => Error::Io { context: with(c), source },
        }
    }
}

/// Returns early with an [`Error`] variant built from a format string:
/// `bail!(Shape, "expected {} got {}", a, b)` (the crate's own: not part of its API).
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::$kind(format!($($arg)*)))
    };
}

/// Checks a condition, returning the given error when it does not hold (the crate's own).
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($arg:tt)*) => {
        #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must fail the check, so no rewrite
        if !$cond {
            $crate::error::bail!($kind, $($arg)*);
        }
    };
}

pub(crate) use {bail, ensure};
