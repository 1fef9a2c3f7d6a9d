//! Search over the knowledge base: the full-text leg (tantivy, [`lexical`]) resolved against the
//! store into hits that carry everything a citation needs. Access groups are applied inside
//! the index query; deleted documents are gone from the index at the same commit that records
//! their removal.

pub mod analysis;
pub mod eval;
pub mod lexical;

use std::path::PathBuf;

use serde::Serialize;

use crate::store::{DocumentId, Language, Store};
pub use lexical::{LexicalIndex, OpenOutcome, Snippet};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("full-text index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("full-text index does not match: {0}")]
    IndexMismatch(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the question is empty")]
    EmptyQuery,
    #[error("invalid access group {0:?}: use letters, digits, '-' and '_'")]
    InvalidGroup(String),
}

impl SearchError {
    pub fn is_user_error(&self) -> bool {
        matches!(self, SearchError::EmptyQuery | SearchError::InvalidGroup(_))
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SearchError::Io { path: path.to_owned(), source }
    }
}

impl From<tantivy::directory::error::OpenReadError> for SearchError {
    fn from(e: tantivy::directory::error::OpenReadError) -> Self {
        SearchError::Index(e.into())
    }
}

/// Checks and normalises an access group name (lowercase; letters, digits, `-`, `_`).
pub fn normalize_group(group: &str) -> Result<String, SearchError> {
    let trimmed = group.trim();
    let valid = !trimmed.is_empty()
        && trimmed.chars().count() <= 64
        && trimmed.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(SearchError::InvalidGroup(group.to_owned()));
    }
    Ok(trimmed.to_lowercase())
}

/// A question to the knowledge base.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub k: usize,
    /// Access groups the asker belongs to; documents without groups are always visible.
    pub groups: Vec<String>,
}

/// One ranked chunk with its citation.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub rank: usize,
    pub score: f32,
    pub document_id: DocumentId,
    pub title: String,
    pub heading_path: Vec<String>,
    /// Path relative to the directory it was imported from.
    pub source: String,
    pub language: Language,
    pub chunk: u32,
    pub snippet: Snippet,
}

/// Runs `request` against the index and resolves hits through the store.
pub fn search(
    store: &Store,
    index: &LexicalIndex,
    request: &SearchRequest,
    snippet_chars: usize,
) -> Result<Vec<SearchHit>, crate::Error> {
    if request.query.trim().is_empty() {
        return Err(SearchError::EmptyQuery.into());
    }
    let raw = index.search(&request.query, &request.groups, request.k)?;
    let keys: Vec<_> = raw.iter().map(|h| (h.document, h.ordinal)).collect();
    let resolved = store.chunks_with_documents(&keys)?;
    // The index is committed after the store, so a chunk can only be missing here if the store
    // changed underneath a long-lived reader; skip it rather than cite nothing.
    let found: Vec<_> = raw.iter().zip(resolved).filter_map(|(hit, found)| found.map(|f| (hit, f))).collect();
    let texts: Vec<&str> = found.iter().map(|(_, (_, chunk))| chunk.text.as_str()).collect();
    let snippets = index.snippets(&request.query, &texts, snippet_chars)?;
    let hits = found
        .into_iter()
        .zip(snippets)
        .enumerate()
        .map(|(i, ((hit, (document, chunk)), snippet))| SearchHit {
            rank: i + 1,
            score: hit.score,
            document_id: document.id,
            title: document.title,
            heading_path: chunk.heading_path,
            source: document.source,
            language: document.language,
            chunk: chunk.ordinal,
            snippet,
        })
        .collect();
    Ok(hits)
}
