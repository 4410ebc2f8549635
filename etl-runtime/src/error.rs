//! ETL failures and the HTTP status each maps to (SPEC §4).

/// A transform failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtlError {
    /// No transform has that name (400 InvalidEtl).
    #[error("unknown transform {0:?}")]
    Unknown(String),
    /// The selection itself is malformed: too many stages, bad names, args too long (400).
    #[error("{0}")]
    BadPipeline(String),
    /// Arguments a stage cannot use (400).
    #[error("bad arguments for {stage}: {message}")]
    BadArgs {
        /// Stage name.
        stage: String,
        /// Detail.
        message: String,
    },
    /// The stage cannot transform this input (422).
    #[error("{stage} rejected its input: {message}")]
    Rejected {
        /// Stage name.
        stage: String,
        /// Detail.
        message: String,
    },
    /// The stage failed (500).
    #[error("{stage} failed: {message}")]
    Failed {
        /// Stage name.
        stage: String,
        /// Detail.
        message: String,
    },
    /// The stage took longer than its per-object timeout (504).
    #[error("{stage} timed out after {secs} s")]
    Timeout {
        /// Stage name.
        stage: String,
        /// The limit.
        secs: u64,
    },
    /// The stage is not ready yet (503, retry).
    #[error("{stage} is not ready: {message}")]
    NotReady {
        /// Stage name.
        stage: String,
        /// Detail.
        message: String,
    },
    /// Reading the source failed.
    #[error("reading the source: {0}")]
    Source(String),
}

impl EtlError {
    /// HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            EtlError::Unknown(_) | EtlError::BadPipeline(_) | EtlError::BadArgs { .. } => 400,
            EtlError::Rejected { .. } => 422,
            EtlError::Failed { .. } | EtlError::Source(_) => 500,
            EtlError::Timeout { .. } => 504,
            EtlError::NotReady { .. } => 503,
        }
    }

    /// Error code for the client's XML body.
    pub fn code(&self) -> &'static str {
        match self {
            EtlError::Unknown(_) | EtlError::BadPipeline(_) => "InvalidEtl",
            EtlError::BadArgs { .. } => "InvalidEtlArgs",
            EtlError::Rejected { .. } => "EtlInputRejected",
            EtlError::Failed { .. } | EtlError::Source(_) => "EtlFailed",
            EtlError::Timeout { .. } => "EtlTimeout",
            EtlError::NotReady { .. } => "SlowDown",
        }
    }
}
