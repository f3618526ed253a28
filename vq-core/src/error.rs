//! The one error type of the workspace.

use std::path::PathBuf;

/// Every fallible operation in the vq workspace returns this error.
///
/// The enum is `#[non_exhaustive]`: match the variants you care about and keep a
/// wildcard arm. Library code never panics on caller input; it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector set, query or buffer has the wrong dimension.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The dimension the index or transform works in.
        expected: usize,
        /// The dimension that was passed.
        got: usize,
    },
    /// A flat buffer's length is not a whole number of vectors.
    #[error("{len} values do not make whole vectors of dimension {dim}")]
    RaggedData {
        /// Number of `f32` values passed.
        len: usize,
        /// Dimension the buffer was read with.
        dim: usize,
    },
    /// A vector holds NaN or an infinity where finite values are required.
    #[error("vector {row} has a non-finite value ({value}) at component {col}")]
    NonFinite {
        /// Row of the offending vector.
        row: usize,
        /// Component within the vector.
        col: usize,
        /// The value found.
        value: f32,
    },
    /// Two buffers that must agree in length do not (ids and vectors, codes and vectors...).
    #[error("{what}: expected length {expected}, got {got}")]
    LengthMismatch {
        /// What was being compared, e.g. `"ids"`.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length passed.
        got: usize,
    },
    /// A parameter is out of range or unknown.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Parameter name as the user wrote it (`k`, `nprobe`, `efSearch`...).
        name: String,
        /// Why the value was refused.
        reason: String,
    },
    /// The index or codec must be trained first.
    #[error("{what} is not trained")]
    NotTrained {
        /// The object that needs training.
        what: String,
    },
    /// The index holds no vectors, so the operation has nothing to work on.
    #[error("the index is empty")]
    EmptyIndex,
    /// The operation is not implemented by this index, transform or codec.
    #[error("`{op}` is not supported by {what}")]
    NotSupported {
        /// The operation, e.g. `"reconstruct"`.
        op: &'static str,
        /// The object, e.g. `"IndexIDMap"`.
        what: String,
    },
    /// Training needs more vectors than were given.
    #[error("not enough training data: need at least {needed} vectors, got {got}")]
    InsufficientTrainingData {
        /// Minimum number of vectors.
        needed: usize,
        /// Number passed.
        got: usize,
    },
    /// An id was looked up and is not in the index.
    #[error("id {id} is not in the index")]
    IdNotFound {
        /// The id.
        id: i64,
    },
    /// An id was added twice to an index that needs unique ids.
    #[error("id {id} is already in the index")]
    DuplicateId {
        /// The id.
        id: i64,
    },
    /// An I/O error with the path it happened on.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are malformed (truncated, inconsistent, hostile).
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A serialized object could not be encoded or decoded.
    #[error("serialization: {0}")]
    Serialization(String),
    /// A file was written by a newer format version than this build reads.
    #[error("unsupported format version {found} (this build reads up to {supported})")]
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// No usable GPU: no driver, no device, or the `cuda` feature is off.
    #[error("GPU unavailable: {reason}")]
    GpuUnavailable {
        /// What is missing.
        reason: String,
    },
    /// A GPU call failed.
    #[error("GPU error: {0}")]
    Gpu(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A factory string could not be parsed or built.
    #[error("{0}")]
    Factory(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A long operation was cancelled through its flag.
    #[error("operation cancelled")]
    Cancelled,
}

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid_param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::NotSupported`].
    pub fn not_supported(op: &'static str, what: impl Into<String>) -> Self {
        Error::NotSupported {
            op,
            what: what.into(),
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
