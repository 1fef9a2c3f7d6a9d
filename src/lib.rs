//! Sputnik: an on-prem employee companion in one binary. This crate holds everything; `main.rs`
//! only parses the command line and calls into [`App`].
//!
//! [`App`] is built from validated [`Settings`] and owns the store (the source of truth) and the
//! indexes derived from it. The CLI, the tests and the benches all go through it.

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod ingest;
pub mod search;
pub mod store;

use std::path::Path;

use serde::Serialize;

pub use config::Settings;
pub use error::{Error, Result};
use ingest::{ImportObserver, ImportReport, ImportRequest};
use search::eval::{EvalQuestion, EvalReport};
use search::{LexicalIndex, OpenOutcome, SearchHit, SearchRequest};
use store::{ChunkRecord, DocumentId, DocumentRecord, Store, StoreCounts};

/// An open knowledge base: store plus full-text index, consistent with each other.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    store: Store,
    index: LexicalIndex,
    opened: OpenOutcome,
}

/// Sizes for `sputnik stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub data_dir: String,
    pub documents: u64,
    pub chunks: u64,
    pub store_revision: u64,
    pub indexed_chunks: u64,
    pub store_bytes: u64,
    pub index_bytes: u64,
}

impl App {
    /// Opens the knowledge base in the configured data directory, creating it if needed, and
    /// repairs the index if it does not match the store.
    pub fn open(settings: Settings) -> Result<App> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            Error::Usage(format!("cannot create data directory {}: {e}", settings.data_dir.display()))
        })?;
        Self::open_dir(settings)
    }

    /// Opens an existing knowledge base; refuses to create an empty one where none is (a typo
    /// in `--data-dir` should not look like "no results").
    pub fn open_existing(settings: Settings) -> Result<App> {
        if !settings.store_path().is_file() {
            return Err(Error::Usage(format!(
                "no knowledge base in {}: import documents first (sputnik import PATH) or check --data-dir",
                settings.data_dir.display()
            )));
        }
        Self::open_dir(settings)
    }

    fn open_dir(settings: Settings) -> Result<App> {
        let store = Store::open(&settings.store_path())?;
        let (index, opened) = LexicalIndex::open(&settings.index_dir(), &store)?;
        Ok(App { settings, store, index, opened })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether opening had to rebuild the index, and why.
    pub fn open_outcome(&self) -> &OpenOutcome {
        &self.opened
    }

    pub fn import(
        &mut self,
        request: &ImportRequest,
        observer: &mut dyn ImportObserver,
    ) -> Result<ImportReport> {
        let mut request = request.clone();
        request.groups = normalize_groups(&request.groups)?;
        ingest::import(&self.store, &mut self.index, &self.settings.ingest, &request, observer)
    }

    pub fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>> {
        let mut request = request.clone();
        request.groups = normalize_groups(&request.groups)?;
        search::search(&self.store, &self.index, &request, self.settings.search.snippet_chars)
    }

    pub fn evaluate(&self, questions: &[EvalQuestion], k: usize, groups: &[String]) -> Result<EvalReport> {
        search::eval::run(&self.store, &self.index, questions, k, &normalize_groups(groups)?)
    }

    /// Rebuilds the full-text index from the store; returns the number of chunks indexed.
    pub fn reindex(&mut self) -> Result<u64> {
        // The old index stays readable until it is replaced: its files are unlinked, not
        // truncated, so open memory maps remain valid.
        let (index, chunks) = LexicalIndex::rebuild(&self.settings.index_dir(), &self.store)?;
        self.index = index;
        Ok(chunks)
    }

    pub fn stats(&self) -> Result<Stats> {
        let StoreCounts { documents, chunks, revision } = self.store.counts()?;
        Ok(Stats {
            data_dir: self.settings.data_dir.display().to_string(),
            documents,
            chunks,
            store_revision: revision,
            indexed_chunks: self.index.num_chunks(),
            store_bytes: file_size(&self.settings.store_path()),
            index_bytes: self.index.size_on_disk(),
        })
    }

    pub fn documents(&self) -> Result<Vec<DocumentRecord>> {
        Ok(self.store.documents()?)
    }

    pub fn chunks(&self, id: DocumentId) -> Result<Vec<ChunkRecord>> {
        Ok(self.store.chunks(id)?)
    }

    /// Finds a document by id, or by its source path when that names exactly one document.
    pub fn resolve_document(&self, reference: &str) -> Result<DocumentRecord> {
        if let Ok(id) = reference.parse::<u64>()
            && let Some(document) = self.store.document(DocumentId(id))?
        {
            return Ok(document);
        }
        let wanted = reference.trim_start_matches("./");
        let matches: Vec<DocumentRecord> = self
            .store
            .documents()?
            .into_iter()
            .filter(|d| d.source == wanted || Path::new(&d.root).join(&d.source) == Path::new(reference))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one match")),
            0 => Err(Error::Usage(format!("no document {reference:?}: see `sputnik docs list`"))),
            _ => Err(Error::Usage(format!(
                "{reference:?} names several documents (ids {}); use an id",
                matches.iter().map(|d| d.id.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Removes a document from the store and the index, committing both.
    pub fn remove_document(&mut self, id: DocumentId) -> Result<DocumentRecord> {
        let (record, _) = self.store.remove_document(id)?;
        self.index.remove_document(id)?;
        self.index.commit(search::lexical::IndexState::of(&self.store)?)?;
        self.index.close_writer()?;
        Ok(record)
    }
}

fn normalize_groups(groups: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let group = search::normalize_group(group)?;
        if !out.contains(&group) {
            out.push(group);
        }
    }
    out.sort();
    Ok(out)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
