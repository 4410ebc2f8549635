/// What can go wrong reading a shard.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Not an archive aisle reads.
    #[error("not a tar, tgz, tar.lz4 or zip archive")]
    UnknownFormat,
    /// Truncated or malformed.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// Decompression out of proportion to the input.
    #[error("decompression bomb: {0}")]
    Bomb(String),
    /// No member of that name.
    #[error("no member {0:?} in the archive")]
    NoSuchMember(String),
    /// A member name that would escape a directory if extracted.
    #[error("member name {0:?} is absolute or escapes with '..'")]
    UnsafeName(String),
    /// A selection expression that cannot be used.
    #[error("bad selection: {0}")]
    BadSelector(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ShardError {
    /// HTTP status for a client.
    pub fn status(&self) -> u16 {
        match self {
            ShardError::NoSuchMember(_) => 404,
            ShardError::Io(_) => 500,
            _ => 400,
        }
    }

    /// Error code for a client.
    pub fn code(&self) -> &'static str {
        match self {
            ShardError::UnknownFormat => "InvalidArchive",
            ShardError::Corrupt(_) => "CorruptArchive",
            ShardError::Bomb(_) => "ArchiveTooLarge",
            ShardError::NoSuchMember(_) => "NoSuchArchiveMember",
            ShardError::UnsafeName(_) => "UnsafeArchiveMember",
            ShardError::BadSelector(_) => "InvalidArgument",
            ShardError::Io(_) => "InternalError",
        }
    }
}
