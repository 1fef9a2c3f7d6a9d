//! Sputnik: an on-prem employee companion in one binary. This crate holds everything; `main.rs`
//! only parses the command line and calls into [`App`].
//!
//! [`App`] is built from validated [`Settings`] and owns the store (the source of truth), the
//! indexes derived from it and the embedding model. The CLI, the tests and the benches all go
//! through it. The service shares one `Arc<App>` between every task: there is no lock around
//! it. The store is shared as it is (redb serialises its own writers); the derived indexes sit
//! behind handles whose locks are held for one scan, one in-memory update or one swap
//! ([`search::SharedLexical`], [`search::SharedVectors`]); writers (imports, removals, rebuilds)
//! take turns on a mutex of their own and do their slow part — parsing, embedding — before it.

pub mod access;
pub mod admin;
pub mod answer;
pub mod bot;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod http;
pub mod i18n;
pub mod ingest;
pub mod lang;
pub mod llm;
pub mod metrics;
pub mod onboarding;
pub mod people;
pub mod reply;
pub mod report;
pub mod search;
pub mod service;
pub mod setting;
pub mod store;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;

pub use config::Settings;
use embed::{CacheStats, Embedder};
pub use error::{Error, Result};
use eval::{EvalQuestion, EvalReport};
use ingest::{ImportObserver, ImportReport, ImportRequest, Indexes, Outcome};
use search::SearchMode;
use search::vector::VectorStrategy;
use search::{
    LexicalIndex, OpenOutcome, Retriever, SearchOutcome, SearchRequest, SharedLexical, SharedVectors,
    VectorIndex,
};
use store::{Change, ChunkRecord, DocumentId, DocumentRecord, Store, StoreCounts, StoreError};

/// An open knowledge base: store, full-text and vector indexes consistent with it, and the
/// embedding model.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    store: Store,
    index: SharedLexical,
    vectors: SharedVectors,
    embedder: Option<Embedder>,
    /// Set when the stored embeddings do not match the configured model: imports are refused
    /// and the dense leg is off until `reindex --reembed`.
    embedding_conflict: RwLock<Option<String>>,
    /// Held by whoever writes to the store and the indexes, one writer at a time; readers never
    /// take it.
    writing: Mutex<()>,
    opened: OpenOutcome,
    calendar: onboarding::Calendar,
    /// On a PostgreSQL store, the lock on `data_dir` that keeps a second process off this
    /// replica's indexes (the redb file's own lock does it for the embedded store).
    _data_lock: Option<std::fs::File>,
}

/// How strongly the vector index balances languages: only a multilingual model needs it.
fn balance(settings: &Settings, embedder: &Embedder) -> f32 {
    if embedder.profile().is_multilingual() { settings.search.language_balance } else { 0.0 }
}

/// Sizes for `sputnik stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Stats {
    pub data_dir: String,
    pub documents: u64,
    pub chunks: u64,
    pub store_revision: u64,
    pub indexed_chunks: u64,
    pub store_bytes: u64,
    pub index_bytes: u64,
    pub embedding_model: Option<String>,
    pub vectors: usize,
    pub vector_strategy: Option<VectorStrategy>,
    pub vector_bytes: usize,
    pub query_cache: Option<CacheStats>,
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
        if settings.store.backend == config::StoreBackend::Redb && !settings.store_path().is_file() {
            return Err(Error::Usage(format!(
                "no knowledge base in {}: import documents first (sputnik import PATH) or check --data-dir",
                settings.data_dir.display()
            )));
        }
        Self::open_dir(settings)
    }

    fn open_dir(settings: Settings) -> Result<App> {
        refuse_foreign_data_dir(&settings.data_dir)?;
        let calendar =
            onboarding::Calendar::new(&settings.onboarding).map_err(|e| Error::Usage(e.to_string()))?;
        let data_lock = match settings.store.backend {
            config::StoreBackend::Postgres => Some(lock_data_dir(&settings.data_dir)?),
            config::StoreBackend::Redb => None,
        };
        let store = settings.open_store()?;
        let (index, opened) = LexicalIndex::open(&settings.index_dir(), &store)?;
        let embedder = Embedder::start(&settings.embed)?;
        let stored = store.embedding_model()?;
        let configured = embedder.as_ref().map(|e| e.profile().name.clone());
        let has_documents = store.counts()?.documents > 0;
        let embedding_conflict = match (&stored, &configured) {
            (Some(stored), Some(configured)) if stored == configured => None,
            (None, None) => None,
            (None, Some(_)) if !has_documents => None,
            (stored, configured) => Some(
                StoreError::EmbeddingModelMismatch {
                    stored: stored.clone().unwrap_or_else(|| "no".into()),
                    configured: configured.clone().unwrap_or_else(|| "\"none\"".into()),
                }
                .to_string(),
            ),
        };
        let vectors = match &embedder {
            Some(embedder) if embedding_conflict.is_none() => Some(
                VectorIndex::load(&store, embedder.profile().dimension, settings.search.exact_scan_limit)?
                    .balance_languages(balance(&settings, embedder)),
            ),
            _ => None,
        };
        let app = App {
            settings,
            store,
            index: SharedLexical::new(index),
            vectors: SharedVectors::new(vectors),
            embedder,
            embedding_conflict: RwLock::new(embedding_conflict),
            writing: Mutex::new(()),
            opened,
            calendar,
            _data_lock: data_lock,
        };
        if let OpenOutcome::Behind { revision } = app.opened {
            let changes = app.follow()?;
            tracing::info!(revision, changes, "caught the full-text index up with the store's change log");
        }
        Ok(app)
    }

    /// Why imports are refused and the dense leg is off, if they are (a model conflict).
    fn embedding_conflict(&self) -> Option<String> {
        self.embedding_conflict.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The writers' turn: held while the store and the indexes change.
    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer floors, with the embedding model's calibrated similarity floors where the
    /// configuration sets none.
    pub fn answer_floors(&self) -> answer::Floors {
        answer::Floors::new(&self.settings.answer, self.embedder.as_ref().map(|e| e.profile()))
    }

    /// Working days and hours for onboarding schedules, from `[onboarding]`.
    pub fn calendar(&self) -> &onboarding::Calendar {
        &self.calendar
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref()
    }

    /// Whether opening had to rebuild the index, and why.
    pub fn open_outcome(&self) -> &OpenOutcome {
        &self.opened
    }

    fn retriever(&self) -> Retriever<'_> {
        Retriever {
            store: &self.store,
            lexical: self.index.current(),
            vectors: &self.vectors,
            embedder: self.embedder.as_ref(),
            settings: &self.settings.search,
            dense_unavailable: self.embedding_conflict(),
        }
    }

    /// Imports files and folders: each file is prepared (parsed, chunked, embedded) with no
    /// lock held, then written in the writers' turn.
    pub fn import(&self, request: &ImportRequest, observer: &mut dyn ImportObserver) -> Result<ImportReport> {
        if let Some(conflict) = self.embedding_conflict()
            && !request.dry_run
        {
            return Err(Error::Usage(conflict));
        }
        let mut request = request.clone();
        request.groups = normalize_groups(&request.groups)?;
        let indexes = Indexes {
            lexical: &self.index,
            vectors: &self.vectors,
            embedder: self.embedder.as_ref(),
            writing: &self.writing,
        };
        ingest::import(&self.store, indexes, &self.settings.ingest, &request, observer)
    }

    /// The slow, read-only half of importing one file that came with a request (the admin
    /// API): decides, parses, chunks and embeds it. [`App::apply_import`] writes the result,
    /// so the service keeps answering while a file is embedded.
    pub fn prepare_import(
        &self,
        candidate: &ingest::Candidate,
        groups: &[String],
        dry_run: bool,
    ) -> Result<ingest::Prepared> {
        if let Some(conflict) = self.embedding_conflict()
            && !dry_run
        {
            return Err(Error::Usage(conflict));
        }
        let request =
            ImportRequest { groups: normalize_groups(groups)?, dry_run, ..ImportRequest::default() };
        ingest::prepare(&self.store, self.embedder.as_ref(), &self.settings.ingest, candidate, &request)
    }

    /// Writes what [`App::prepare_import`] prepared.
    pub fn apply_import(&self, prepared: ingest::Prepared) -> Result<ingest::Outcome> {
        let _turn = self.writing();
        ingest::apply_prepared(&self.store, &self.index, &self.vectors, prepared)
    }

    pub fn search(&self, request: &SearchRequest) -> Result<SearchOutcome> {
        let mut request = request.clone();
        request.groups = normalize_groups(&request.groups)?;
        self.retriever().search(&request)
    }

    pub fn evaluate(
        &self,
        questions: &[EvalQuestion],
        k: usize,
        groups: &[String],
        mode: Option<SearchMode>,
        explain: bool,
    ) -> Result<EvalReport> {
        let mode = mode.unwrap_or(self.settings.search.mode);
        let floors = self.answer_floors();
        let answering = eval::Answering { settings: &self.settings.answer, floors: &floors };
        eval::run(&self.retriever(), answering, questions, k, &normalize_groups(groups)?, mode, explain)
    }

    /// Rebuilds the full-text and vector indexes from the store; returns the number of chunks
    /// indexed.
    pub fn reindex(&self) -> Result<u64> {
        let _turn = self.writing();
        self.rebuild_indexes()
    }

    /// Applies to the indexes, in order, what other processes changed in the store since they
    /// were last brought up to date (replicas of a PostgreSQL store); rebuilds them when the
    /// change log does not reach back that far or the embedding model was switched. Returns how
    /// many changes it applied.
    pub fn follow(&self) -> Result<usize> {
        let _turn = self.writing();
        let Some((current, changes)) = self.store.changes_since(self.index.applied())? else {
            self.rebuild_indexes()?;
            return Ok(1);
        };
        if changes.is_empty() {
            return Ok(0);
        }
        if changes.iter().any(|(_, change)| *change == Change::Everything) {
            self.rebuild_indexes()?;
            return Ok(changes.len());
        }
        let index = self.index.current();
        let dense = self.embedder.is_some() && self.embedding_conflict().is_none();
        for (_, change) in &changes {
            // The document as it is now: a later change to it is applied again, to the same end.
            let (Change::Document(id) | Change::Removed(id)) = *change else { continue };
            match self.store.document(id)? {
                Some(record) => {
                    index.replace_document(&record, &self.store.chunks(id)?)?;
                    if dense {
                        let rows = self.store.document_vectors(id)?;
                        self.vectors.update(|vectors| vectors.replace_document(&record, &rows));
                    }
                }
                None => {
                    index.remove_document(id)?;
                    self.vectors.update(|vectors| vectors.remove_document(id));
                }
            }
        }
        self.index.caught_up(current);
        index.commit(self.index.state(&self.store)?)?;
        index.close_writer()?;
        Ok(changes.len())
    }

    /// Builds both indexes from the store beside the live ones and swaps them in; questions
    /// keep being answered from the old ones meanwhile. The caller holds the writers' turn.
    fn rebuild_indexes(&self) -> Result<u64> {
        // The old index stays readable until it is replaced: its files are unlinked, not
        // truncated, so open memory maps remain valid.
        let (index, chunks) = LexicalIndex::rebuild(&self.settings.index_dir(), &self.store)?;
        self.index.replace(index);
        if let Some(embedder) = &self.embedder
            && self.embedding_conflict().is_none()
        {
            let limit = self.settings.search.exact_scan_limit;
            let vectors = VectorIndex::load(&self.store, embedder.profile().dimension, limit)?
                .balance_languages(balance(&self.settings, embedder));
            self.vectors.replace(Some(vectors));
        }
        Ok(chunks)
    }

    /// Re-embeds every chunk with the configured model (or drops all embeddings when the model
    /// is "none"), then makes that model current in one transaction and rebuilds the indexes.
    /// Until the switch the old embeddings stay in force, so an interrupted run changes nothing.
    pub fn reembed(&self, observer: &mut dyn ImportObserver) -> Result<u64> {
        self.stage_embeddings(observer)?;
        self.switch_embeddings()
    }

    /// The slow, read-only half of [`App::reembed`]: embeds every chunk with the configured
    /// model into a staging area, reporting each document to `observer`.
    pub fn stage_embeddings(&self, observer: &mut dyn ImportObserver) -> Result<()> {
        let documents = self.store.documents()?;
        observer.started(documents.len());
        let model = self.embedder.as_ref().map(|e| e.profile().name.clone());
        if let (Some(embedder), Some(model)) = (&self.embedder, &model) {
            // Vectors staged for the model that is already current are live: write over them.
            if self.store.embedding_model()?.as_deref() != Some(model.as_str()) {
                self.store.clear_staged_embeddings(model)?;
            }
            for document in &documents {
                let chunks = self.store.chunks(document.id)?;
                let vectors = ingest::embed_chunks(embedder, &document.title, &chunks)?;
                let rows: Vec<(u32, Vec<f32>)> = chunks.iter().map(|c| c.ordinal).zip(vectors).collect();
                self.store.put_staged_embeddings(model, document.id, &rows)?;
                observer.file_done(
                    &document.source,
                    &Outcome::Updated { chunks: rows.len(), warnings: Vec::new() },
                );
            }
        }
        Ok(())
    }

    /// Makes the staged embeddings current and rebuilds the indexes; returns the chunk count.
    pub fn switch_embeddings(&self) -> Result<u64> {
        let _turn = self.writing();
        let model = self.embedder.as_ref().map(|e| e.profile().name.clone());
        self.store.switch_embedding_model(model.as_deref())?;
        *self.embedding_conflict.write().unwrap_or_else(PoisonError::into_inner) = None;
        // The switch bumped the store revision: record it in the full-text index too.
        self.rebuild_indexes()
    }

    pub fn stats(&self) -> Result<Stats> {
        let StoreCounts { documents, chunks, revision } = self.store.counts()?;
        Ok(Stats {
            data_dir: self.settings.data_dir.display().to_string(),
            documents,
            chunks,
            store_revision: revision,
            indexed_chunks: self.index.current().num_chunks(),
            store_bytes: file_size(&self.settings.store_path()),
            index_bytes: self.index.current().size_on_disk(),
            embedding_model: self.store.embedding_model()?,
            vectors: self.vectors.inspect(|v| v.map_or(0, VectorIndex::len)),
            vector_strategy: self.vectors.inspect(|v| v.map(VectorIndex::strategy)),
            vector_bytes: self.vectors.inspect(|v| v.map_or(0, VectorIndex::memory_bytes)),
            query_cache: self.embedder.as_ref().map(Embedder::cache_stats),
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

    /// Removes a document from the store and the indexes, committing them.
    pub fn remove_document(&self, id: DocumentId) -> Result<DocumentRecord> {
        let _turn = self.writing();
        let (record, revision) = self.store.remove_document(id)?;
        let index = self.index.current();
        index.remove_document(id)?;
        self.index.wrote(revision);
        index.commit(self.index.state(&self.store)?)?;
        index.close_writer()?;
        self.vectors.update(|vectors| vectors.remove_document(id));
        Ok(record)
    }
}

/// Root must not write into a data directory that belongs to the service's user: files it
/// created (a rebuilt index, a new segment) would be unwritable for the service afterwards.
/// Locks `data_dir` for this process: another process that opens it gets
/// [`StoreError::Locked`], as a second opener of a redb store does, so admin commands go to the
/// running service's API instead of writing to its indexes. Released when the file closes.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Usage(format!("cannot create data directory {}: {e}", data_dir.display())))?;
    let path = data_dir.join("sputnik.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Store(StoreError::Locked { path })),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Usage(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

pub fn refuse_foreign_data_dir(data_dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(data_dir) else { return Ok(()) };
    if !rustix::process::geteuid().is_root() || dir.uid() == 0 {
        return Ok(());
    }
    let owner = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&dir.uid().to_string().as_str())).then(|| fields[0].to_owned())
            })
        })
        .unwrap_or_else(|| dir.uid().to_string());
    Err(Error::Usage(format!(
        "{} belongs to {owner}; run Sputnik as that user so the service can still write what this command \
         creates: sudo -u {owner} sputnik …",
        data_dir.display()
    )))
}

fn normalize_groups(groups: &[String]) -> Result<Vec<String>> {
    Ok(access::parse_groups(groups)?)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
