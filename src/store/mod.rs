//! The store: one redb file, Sputnik's only source of truth. Every derived index is rebuilt
//! from it. Invariants kept here:
//! - a document and all of its chunks change in one write transaction, or not at all;
//! - every transaction that changes searchable content bumps the store *revision*, which the
//!   search index records at its own commits, so a stale index is detectable after a crash;
//! - the schema version is stored, and numbered migrations bring older files up to date.

mod onboarding;
mod outbox;
mod people;
mod records;
mod schema;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

pub use onboarding::{Assignment, QuizAnswer, TaskState};
pub use outbox::{Broadcast, Recipient};
pub use people::{
    CitedChunk, ConversationCounts, Employee, EmployeeId, Feedback, Invite, InviteRefusal, NewEmployee,
    QuestionRecord, Role, Session, invite_hash,
};
pub use records::{ChunkRecord, DocumentId, DocumentRecord, Format, Language, NewDocument, SourceKey};
pub use schema::SCHEMA_VERSION;
pub use verify::Verified;

use schema::{
    CHUNKS, DOCUMENTS, META, META_TEXT, SOURCES, embeddings_table, embeddings_table_name, meta_keys,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory is in use by another Sputnik process ({path}); is `sputnik serve` \
         running? Stop it first"
    )]
    Locked { path: PathBuf },
    #[error(
        "the store {path} was written by a newer Sputnik (schema {found}, this binary knows up \
         to {known}); upgrade Sputnik"
    )]
    TooNew { path: PathBuf, found: u64, known: u64 },
    #[error("no document with id {0}")]
    UnknownDocument(u64),
    #[error("no employee with id {0}")]
    UnknownEmployee(u64),
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error(
        "the store {path} is an empty file: it was truncated or wiped, not left by Sputnik. \
         Restore the latest backup (`sputnik restore FILE`); Sputnik will not start an empty \
         knowledge base over it"
    )]
    Empty { path: PathBuf },
    #[error(
        "{path} is not a Sputnik store ({reason}); point data_dir at Sputnik's data directory, or \
         restore a backup (`sputnik restore FILE`)"
    )]
    Foreign { path: PathBuf, reason: String },
    #[error(
        "the store {path} is damaged ({reason}); `sputnik doctor` says what can be saved from it, \
         and `sputnik restore FILE` puts the latest backup back"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("store: {0}")]
    Database(#[from] redb::Error),
    #[error("store record is corrupt ({what}): {source}")]
    Corrupt { what: String, source: serde_json::Error },
    #[error(
        "the knowledge base holds {stored} embeddings but embed.model is {configured}; run \
         `sputnik reindex --reembed` to re-embed every chunk with {configured}, or set embed.model \
         back to {stored}"
    )]
    EmbeddingModelMismatch { stored: String, configured: String },
    #[error("chunk {document}/{ordinal} has no {model} embedding; run `sputnik reindex --reembed`")]
    MissingEmbedding { document: u64, ordinal: u32, model: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Locked { .. }
                | StoreError::Empty { .. }
                | StoreError::Foreign { .. }
                | StoreError::Damaged { .. }
                | StoreError::UnknownDocument(_)
                | StoreError::UnknownEmployee(_)
                | StoreError::TooNew { .. }
                | StoreError::EmbeddingModelMismatch { .. }
        )
    }
}

/// What a failed open means for the person running Sputnik.
fn open_error(path: &Path, source: redb::DatabaseError) -> StoreError {
    let path = path.to_owned();
    match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) if reason.contains("magic") => {
            StoreError::Foreign { path, reason: "not a redb database".to_owned() }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            StoreError::Damaged { path, reason }
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Foreign { path, reason: e.to_string() }
        }
        source => StoreError::Open { path, source },
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
redb_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

pub type StoreResult<T> = Result<T, StoreError>;

/// Creates `path` (which must not exist) readable and writable by its owner only: a store, a
/// backup or a snapshot holds every document and every employee.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Counts for `sputnik stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounts {
    pub documents: u64,
    pub chunks: u64,
    pub revision: u64,
}

/// redb's own page cache. Its default (1 GiB) lets the process grow towards the size of the
/// store file: every page read at start (the vectors, for the vector index) or written since
/// (the question log) stays cached, duplicating what the indexes already hold. The operating
/// system's page cache keeps the file warm anyway: measured, 32 MiB saves 60 MiB at 100k chunks
/// for about 5 % slower imports and unchanged search (docs/benchmarks.md).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Typed access to the redb file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Write transactions committed through this handle (exposed for metrics and tests).
    commits: AtomicU64,
}

impl Store {
    /// Opens (creating if there is no file) the store and migrates it to the current schema.
    ///
    /// A file that is there is checked, not assumed: an empty file is refused (redb would take
    /// it for a new database, and an import would then build an empty knowledge base over a
    /// wiped one), so is a file that is not a Sputnik store, and every page's checksum is
    /// verified on open, so a damaged file is reported here as [`StoreError::Damaged`] instead of
    /// panicking deep inside a later read.
    pub fn open(path: &Path) -> StoreResult<Store> {
        let existed = match std::fs::metadata(path) {
            Ok(meta) if meta.len() == 0 => return Err(StoreError::Empty { path: path.to_owned() }),
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => return Err(StoreError::Io { path: path.to_owned(), source }),
        };
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true);
        if !existed {
            // Readable by the service's user alone, as backups are.
            match create_private(path) {
                // Another process just made it; redb's lock decides which of us opens it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => {
                    other.map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
                }
            }
        }
        let opened = if existed { builder.open(path) } else { builder.create(path) };
        let db = opened.map_err(|source| open_error(path, source))?;
        let store = Store { db, path: path.to_owned(), commits: AtomicU64::new(0) };
        if existed {
            schema::check_is_sputnik(&store.db, path)?;
        }
        schema::migrate(&store.db, path)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the store file to `dest` as of its last commit: a write transaction is held while
    /// the bytes are copied, so no write can land half-way, and dropped without changes. The
    /// copy was not closed by redb, so opening it replays the last commit (what a restart after
    /// a crash does); [`Store::open`] on it checks it.
    pub fn snapshot_to(&self, dest: &Path) -> StoreResult<u64> {
        let txn = self.db.begin_write()?;
        let copied = (|| {
            let mut from = std::fs::File::open(&self.path)?;
            let mut to = create_private(dest)?;
            let copied = std::io::copy(&mut from, &mut to)?;
            to.sync_all()?;
            Ok(copied)
        })()
        .map_err(|source| StoreError::Io { path: dest.to_owned(), source })?;
        txn.abort()?;
        Ok(copied)
    }

    /// How many write transactions this handle has committed since it was opened.
    pub fn committed_writes(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> StoreResult<()> {
        txn.commit()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A random identity chosen when the store was created; lets an index tell one store from
    /// another that happens to be at the same revision.
    pub fn instance_id(&self) -> StoreResult<u64> {
        self.meta(meta_keys::INSTANCE_ID)
    }

    /// Monotonic counter bumped by every change to searchable content.
    pub fn revision(&self) -> StoreResult<u64> {
        self.meta(meta_keys::REVISION)
    }

    fn meta(&self, key: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn counts(&self) -> StoreResult<StoreCounts> {
        let txn = self.db.begin_read()?;
        let documents = txn.open_table(DOCUMENTS)?.len()?;
        let chunks = txn.open_table(CHUNKS)?.len()?;
        let revision = txn.open_table(META)?.get(meta_keys::REVISION)?.map(|v| v.value()).unwrap_or(0);
        Ok(StoreCounts { documents, chunks, revision })
    }

    pub fn find_by_source(&self, key: &SourceKey) -> StoreResult<Option<DocumentRecord>> {
        let txn = self.db.begin_read()?;
        let sources = txn.open_table(SOURCES)?;
        let Some(id) = sources.get(key.encoded().as_str())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let documents = txn.open_table(DOCUMENTS)?;
        read_document(&documents, id)
    }

    pub fn document(&self, id: DocumentId) -> StoreResult<Option<DocumentRecord>> {
        let txn = self.db.begin_read()?;
        read_document(&txn.open_table(DOCUMENTS)?, id.0)
    }

    /// All documents, in id (import) order.
    pub fn documents(&self) -> StoreResult<Vec<DocumentRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DOCUMENTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, bytes) = row?;
            out.push(decode(bytes.value(), || format!("document {}", id.value()))?);
        }
        Ok(out)
    }

    pub fn chunks(&self, id: DocumentId) -> StoreResult<Vec<ChunkRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHUNKS)?;
        let mut out = Vec::new();
        for row in table.range((id.0, 0)..=(id.0, u32::MAX))? {
            let (key, bytes) = row?;
            let (doc, ordinal) = key.value();
            out.push(decode(bytes.value(), || format!("chunk {doc}/{ordinal}"))?);
        }
        Ok(out)
    }

    /// Looks up many chunks by (document, ordinal) in one read transaction, with their documents.
    pub fn chunks_with_documents(
        &self,
        keys: &[(DocumentId, u32)],
    ) -> StoreResult<Vec<Option<(DocumentRecord, ChunkRecord)>>> {
        let txn = self.db.begin_read()?;
        let documents = txn.open_table(DOCUMENTS)?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = Vec::with_capacity(keys.len());
        for &(doc, ordinal) in keys {
            let chunk = match chunks.get((doc.0, ordinal))? {
                Some(bytes) => decode::<ChunkRecord>(bytes.value(), || format!("chunk {}/{ordinal}", doc.0))?,
                None => {
                    out.push(None);
                    continue;
                }
            };
            out.push(read_document(&documents, doc.0)?.map(|d| (d, chunk)));
        }
        Ok(out)
    }

    /// Visits every chunk with its document, in (document, ordinal) order, inside one read
    /// transaction: the consistent snapshot an index rebuild needs.
    pub fn for_each_chunk(
        &self,
        mut visit: impl FnMut(&DocumentRecord, &ChunkRecord) -> Result<(), crate::Error>,
    ) -> Result<u64, crate::Error> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let documents = txn.open_table(DOCUMENTS).map_err(StoreError::from)?;
        let chunks = txn.open_table(CHUNKS).map_err(StoreError::from)?;
        let revision = txn
            .open_table(META)
            .map_err(StoreError::from)?
            .get(meta_keys::REVISION)
            .map_err(StoreError::from)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut current: Option<DocumentRecord> = None;
        for row in chunks.iter().map_err(StoreError::from)? {
            let (key, bytes) = row.map_err(StoreError::from)?;
            let (doc, ordinal) = key.value();
            if current.as_ref().is_none_or(|d| d.id.0 != doc) {
                current = read_document(&documents, doc)?;
            }
            let Some(document) = &current else { continue };
            let chunk: ChunkRecord = decode(bytes.value(), || format!("chunk {doc}/{ordinal}"))?;
            visit(document, &chunk)?;
        }
        Ok(revision)
    }

    /// The model whose embeddings every chunk carries, if embeddings are stored.
    pub fn embedding_model(&self) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META_TEXT)?;
        Ok(table.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned()))
    }

    /// Visits every stored embedding of the current model with its document, in order, inside
    /// one read transaction. Returns the store revision of that snapshot.
    pub fn for_each_embedding(
        &self,
        mut visit: impl FnMut(&DocumentRecord, u32, &[f32]),
    ) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let revision = txn.open_table(META)?.get(meta_keys::REVISION)?.map(|v| v.value()).unwrap_or(0);
        let Some(model) =
            txn.open_table(META_TEXT)?.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned())
        else {
            return Ok(revision);
        };
        let name = embeddings_table_name(&model);
        let documents = txn.open_table(DOCUMENTS)?;
        let table = txn.open_table(embeddings_table(&name))?;
        let mut current: Option<DocumentRecord> = None;
        let mut vector = Vec::new();
        for row in table.iter()? {
            let (key, bytes) = row?;
            let (doc, ordinal) = key.value();
            if current.as_ref().is_none_or(|d| d.id.0 != doc) {
                current = read_document(&documents, doc)?;
            }
            let Some(document) = &current else { continue };
            read_vector(bytes.value(), &mut vector);
            visit(document, ordinal, &vector);
        }
        Ok(revision)
    }

    /// Stores `model` embeddings for one document's chunks as part of a re-embedding run: they
    /// go to that model's table and become current only with [`Store::switch_embedding_model`].
    pub fn put_staged_embeddings(
        &self,
        model: &str,
        id: DocumentId,
        vectors: &[(u32, Vec<f32>)],
    ) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        {
            let name = embeddings_table_name(model);
            let mut table = txn.open_table(embeddings_table(&name))?;
            table.retain_in((id.0, 0)..=(id.0, u32::MAX), |_, _| false)?;
            for (ordinal, vector) in vectors {
                table.insert((id.0, *ordinal), vector_bytes(vector).as_slice())?;
            }
        }
        self.commit(txn)
    }

    /// Drops any staged embeddings of `model` (the start of a fresh re-embedding run).
    pub fn clear_staged_embeddings(&self, model: &str) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        let name = embeddings_table_name(model);
        txn.delete_table(embeddings_table(&name))?;
        self.commit(txn)
    }

    /// Makes `model` the store's embedding model once every chunk has a staged vector, and
    /// deletes the previous model's vectors, in one transaction. `None` turns embeddings off.
    pub fn switch_embedding_model(&self, model: Option<&str>) -> StoreResult<u64> {
        let txn = self.db.begin_write()?;
        let revision = {
            let mut meta_text = txn.open_table(META_TEXT)?;
            let previous = meta_text.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned());
            if let Some(model) = model {
                let name = embeddings_table_name(model);
                let table = txn.open_table(embeddings_table(&name))?;
                let chunks = txn.open_table(CHUNKS)?;
                for row in chunks.iter()? {
                    let (key, _) = row?;
                    let (document, ordinal) = key.value();
                    if table.get((document, ordinal))?.is_none() {
                        return Err(StoreError::MissingEmbedding {
                            document,
                            ordinal,
                            model: model.to_owned(),
                        });
                    }
                }
                meta_text.insert(meta_keys::EMBEDDING_MODEL, model)?;
            } else {
                meta_text.remove(meta_keys::EMBEDDING_MODEL)?;
            }
            if let Some(previous) = previous.filter(|p| Some(p.as_str()) != model) {
                let name = embeddings_table_name(&previous);
                txn.delete_table(embeddings_table(&name))?;
            }
            let mut meta = txn.open_table(META)?;
            bump_revision(&mut meta)?
        };
        self.commit(txn)?;
        Ok(revision)
    }

    /// Inserts a document with its chunks, or replaces the document stored under the same source
    /// key (keeping its id) and all of its chunks, in one transaction. Returns the stored record
    /// and the new store revision.
    pub fn put_document(
        &self,
        new: NewDocument,
        vectors: Option<ChunkVectors<'_>>,
    ) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.db.begin_write()?;
        let result = {
            let model = vectors.as_ref().map(|v| v.model);
            let table_name = check_embedding_model(&txn, model)?;
            let mut sources = txn.open_table(SOURCES)?;
            let mut documents = txn.open_table(DOCUMENTS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut meta = txn.open_table(META)?;
            let key = new.source_key().encoded();
            let existing = sources.get(key.as_str())?.map(|v| v.value());
            let (id, imported_at) = match existing {
                Some(id) => {
                    let previous = read_document(&documents, id)?;
                    remove_chunks(&mut chunks, id)?;
                    (id, previous.map(|d| d.imported_at).unwrap_or(new.updated_at))
                }
                None => {
                    let id = meta.get(meta_keys::NEXT_DOCUMENT_ID)?.map(|v| v.value()).unwrap_or(1);
                    meta.insert(meta_keys::NEXT_DOCUMENT_ID, id + 1)?;
                    sources.insert(key.as_str(), id)?;
                    (id, new.updated_at)
                }
            };
            let record = new.into_record(DocumentId(id), imported_at);
            for chunk in &record.1 {
                chunks.insert((id, chunk.ordinal), encode(chunk).as_slice())?;
            }
            if let (Some(name), Some(vectors)) = (&table_name, &vectors) {
                let mut table = txn.open_table(embeddings_table(name))?;
                table.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
                for (chunk, vector) in record.1.iter().zip(vectors.vectors) {
                    table.insert((id, chunk.ordinal), vector_bytes(vector).as_slice())?;
                }
            }
            documents.insert(id, encode(&record.0).as_slice())?;
            let revision = bump_revision(&mut meta)?;
            (record.0, revision)
        };
        self.commit(txn)?;
        Ok(result)
    }

    /// Changes a document's access groups without touching its chunks.
    pub fn set_groups(&self, id: DocumentId, groups: Vec<String>) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.db.begin_write()?;
        let result = {
            let mut documents = txn.open_table(DOCUMENTS)?;
            let mut meta = txn.open_table(META)?;
            let mut record = read_document(&documents, id.0)?.ok_or(StoreError::UnknownDocument(id.0))?;
            record.groups = groups;
            documents.insert(id.0, encode(&record).as_slice())?;
            (record, bump_revision(&mut meta)?)
        };
        self.commit(txn)?;
        Ok(result)
    }

    /// Removes a document and all its chunks. Returns the removed record and the new revision.
    pub fn remove_document(&self, id: DocumentId) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.db.begin_write()?;
        let result = {
            let mut sources = txn.open_table(SOURCES)?;
            let mut documents = txn.open_table(DOCUMENTS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut meta = txn.open_table(META)?;
            let record = read_document(&documents, id.0)?.ok_or(StoreError::UnknownDocument(id.0))?;
            documents.remove(id.0)?;
            sources.remove(record.source_key().encoded().as_str())?;
            remove_chunks(&mut chunks, id.0)?;
            let model =
                txn.open_table(META_TEXT)?.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned());
            if let Some(model) = model {
                let name = embeddings_table_name(&model);
                let mut table = txn.open_table(embeddings_table(&name))?;
                table.retain_in((id.0, 0)..=(id.0, u32::MAX), |_, _| false)?;
            }
            (record, bump_revision(&mut meta)?)
        };
        self.commit(txn)?;
        Ok(result)
    }
}

/// The vectors of one document's chunks, in chunk order, and the model that made them.
#[derive(Debug, Clone, Copy)]
pub struct ChunkVectors<'a> {
    pub model: &'a str,
    pub vectors: &'a [Vec<f32>],
}

/// Refuses to mix documents with and without embeddings, or embeddings of two models. Returns
/// the embeddings table to write, if any, recording the model on the first embedded import.
fn check_embedding_model(txn: &redb::WriteTransaction, model: Option<&str>) -> StoreResult<Option<String>> {
    let mut meta_text = txn.open_table(META_TEXT)?;
    let stored = meta_text.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned());
    let has_documents = !txn.open_table(DOCUMENTS)?.is_empty()?;
    match (stored, model) {
        (Some(stored), Some(model)) if stored == model => Ok(Some(embeddings_table_name(model))),
        (Some(stored), configured) => Err(StoreError::EmbeddingModelMismatch {
            stored,
            configured: configured.map_or("\"none\"".to_owned(), str::to_owned),
        }),
        (None, Some(model)) if has_documents => {
            Err(StoreError::EmbeddingModelMismatch { stored: "no".to_owned(), configured: model.to_owned() })
        }
        (None, Some(model)) => {
            meta_text.insert(meta_keys::EMBEDDING_MODEL, model)?;
            Ok(Some(embeddings_table_name(model)))
        }
        (None, None) => Ok(None),
    }
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read_vector(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
}

fn bump_revision(meta: &mut redb::Table<&str, u64>) -> StoreResult<u64> {
    let next = meta.get(meta_keys::REVISION)?.map(|v| v.value()).unwrap_or(0) + 1;
    meta.insert(meta_keys::REVISION, next)?;
    Ok(next)
}

fn remove_chunks(chunks: &mut redb::Table<(u64, u32), &[u8]>, id: u64) -> StoreResult<()> {
    chunks.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
    Ok(())
}

fn read_document(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> StoreResult<Option<DocumentRecord>> {
    match table.get(id)? {
        Some(bytes) => Ok(Some(decode(bytes.value(), || format!("document {id}"))?)),
        None => Ok(None),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialise")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what: what(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_doc(rel: &str, chunks: &[&str]) -> NewDocument {
        NewDocument {
            root: "/kb".into(),
            source: rel.into(),
            title: rel.into(),
            language: Language::En,
            groups: vec![],
            content_hash: format!("hash-{}", chunks.join("")),
            pipeline: "test".into(),
            format: Format::Markdown,
            size: 10,
            updated_at: 1,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, text)| ChunkRecord {
                    ordinal: i as u32,
                    heading_path: vec![],
                    text: text.to_string(),
                    start: 0,
                    end: text.len() as u64,
                    tokens: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn replacing_a_document_keeps_its_id_and_swaps_all_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (first, rev1) = store.put_document(new_doc("a.md", &["one", "two", "three"]), None).unwrap();
        let (other, _) = store.put_document(new_doc("b.md", &["other"]), None).unwrap();
        let (second, rev2) = store.put_document(new_doc("a.md", &["uno"]), None).unwrap();
        assert_eq!(first.id, second.id);
        assert_ne!(first.id, other.id);
        assert!(rev2 > rev1);
        let texts: Vec<_> = store.chunks(first.id).unwrap().into_iter().map(|c| c.text).collect();
        assert_eq!(texts, vec!["uno"]);
        assert_eq!(store.chunks(other.id).unwrap().len(), 1);
        assert_eq!(store.counts().unwrap().chunks, 2);
    }

    #[test]
    fn removing_a_document_removes_its_chunks_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (doc, _) = store.put_document(new_doc("a.md", &["one", "two"]), None).unwrap();
        store.remove_document(doc.id).unwrap();
        assert_eq!(store.counts().unwrap().chunks, 0);
        assert!(store.find_by_source(&doc.source_key()).unwrap().is_none());
        assert!(matches!(store.remove_document(doc.id), Err(StoreError::UnknownDocument(_))));
    }

    #[test]
    fn embeddings_of_two_models_or_none_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let vectors = vec![vec![1.0f32, 0.0], vec![0.0, 1.0]];
        let first = ChunkVectors { model: "m1", vectors: &vectors };
        let (doc, _) = store.put_document(new_doc("a.md", &["x", "y"]), Some(first)).unwrap();
        assert_eq!(store.embedding_model().unwrap().as_deref(), Some("m1"));
        let other = ChunkVectors { model: "m2", vectors: &vectors };
        let err = store.put_document(new_doc("b.md", &["x", "y"]), Some(other)).unwrap_err();
        assert!(matches!(err, StoreError::EmbeddingModelMismatch { .. }), "{err}");
        assert!(store.put_document(new_doc("b.md", &["x", "y"]), None).is_err());

        let mut seen = Vec::new();
        store.for_each_embedding(|d, ordinal, v| seen.push((d.id, ordinal, v.to_vec()))).unwrap();
        assert_eq!(seen, vec![(doc.id, 0, vec![1.0, 0.0]), (doc.id, 1, vec![0.0, 1.0])]);

        // Switching needs a staged vector for every chunk.
        store.put_staged_embeddings("m2", doc.id, &[(0, vec![0.5, 0.5])]).unwrap();
        assert!(matches!(store.switch_embedding_model(Some("m2")), Err(StoreError::MissingEmbedding { .. })));
        store.put_staged_embeddings("m2", doc.id, &[(0, vec![0.5, 0.5]), (1, vec![0.6, 0.4])]).unwrap();
        store.switch_embedding_model(Some("m2")).unwrap();
        assert_eq!(store.embedding_model().unwrap().as_deref(), Some("m2"));
        let mut seen = Vec::new();
        store.for_each_embedding(|_, ordinal, v| seen.push((ordinal, v.to_vec()))).unwrap();
        assert_eq!(seen, vec![(0, vec![0.5, 0.5]), (1, vec![0.6, 0.4])]);
        store.remove_document(doc.id).unwrap();
        let mut count = 0;
        store.for_each_embedding(|_, _, _| count += 1).unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn a_new_store_is_private_and_an_empty_or_foreign_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sputnik.redb");
        drop(Store::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        // An empty file was taken for a new store, over a knowledge base that had been wiped.
        std::fs::File::create(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Empty { .. })));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left for the admin to restore");

        std::fs::write(&path, b"not a database at all, just some text that is long enough").unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Foreign { .. })));
        let other = dir.path().join("other.redb");
        {
            let db = redb::Database::create(&other).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(redb::TableDefinition::<u64, u64>::new("accounts")).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(Store::open(&other), Err(StoreError::Foreign { .. })));
    }

    #[test]
    fn a_second_process_handle_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn reopening_keeps_schema_and_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let id = {
            let store = Store::open(&path).unwrap();
            store.put_document(new_doc("a.md", &["x"]), None).unwrap();
            store.instance_id().unwrap()
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.instance_id().unwrap(), id);
        assert_eq!(store.counts().unwrap().documents, 1);
    }
}
