//! The crate error: one variant per subsystem, each wrapping that subsystem's own `thiserror`
//! enum. User mistakes (a bad config key, an unknown document) and internal failures (a broken
//! store file) stay distinguishable so the CLI can pick an exit code and wording for each.

use crate::config::ConfigError;
use crate::embed::EmbedError;
use crate::ingest::IngestError;
use crate::search::SearchError;
use crate::store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The request itself is wrong: an unknown document, a malformed question file.
    #[error("{0}")]
    Usage(String),
}

impl From<crate::access::InvalidGroup> for Error {
    fn from(e: crate::access::InvalidGroup) -> Self {
        Error::Search(e.into())
    }
}

impl Error {
    /// True when the person at the keyboard can fix this by changing what they typed or
    /// supplied, as opposed to a fault in the data directory or the program.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Config(_) | Error::Usage(_) => true,
            Error::Store(e) => e.is_user_error(),
            Error::Ingest(_) => true,
            Error::Search(e) => e.is_user_error(),
            Error::Embed(e) => e.is_user_error(),
        }
    }
}
