//! The store: one redb file, Sputnik's only source of truth. Every derived index is rebuilt
//! from it. Invariants kept here:
//! - a document and all of its chunks change in one write transaction, or not at all;
//! - every transaction that changes searchable content bumps the store *revision*, which the
//!   search index records at its own commits, so a stale index is detectable after a crash;
//! - the schema version is stored, and numbered migrations bring older files up to date.

mod conversation;
mod copy;
mod documents;
mod kv;
mod onboarding;
mod outbox;
mod people;
mod pg_url;
mod postgres;
mod records;
mod schema;
mod settings;
#[cfg(test)]
pub(crate) mod testing;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase};

pub use conversation::{CitedChunk, ConversationCounts, Feedback, QuestionRecord, Session};
pub use documents::ChunkVectors;
use kv::{Read, Reader, Write};
pub use onboarding::{Assignment, QuizAnswer, TaskState};
pub use outbox::{Broadcast, Notice, Recipient};
pub use people::{ChatId, Employee, EmployeeId, Invite, InviteRefusal, NewEmployee, Role, invite_hash};
pub use records::{ChunkRecord, DocumentId, DocumentRecord, Format, Language, NewDocument, SourceKey};
pub use schema::SCHEMA_VERSION;
use schema::{CHUNKS, DOCUMENTS, meta_keys};
pub use settings::{StoreBackend, StoreSettings};
pub use verify::Verified;

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
    #[error(
        "store.url is not a PostgreSQL connection URL ({reason}); write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl { reason: String },
    #[error("cannot reach the PostgreSQL store at {location}: {reason}")]
    Unreachable { location: String, reason: String },
    #[error(
        "{path} already holds records (table {table}); copy into an empty store: a new file, or a \
         new PostgreSQL database (createdb)"
    )]
    NotEmpty { path: PathBuf, table: String },
    #[error("PostgreSQL store: {0}")]
    Postgres(String),
    #[error("{0} is done with PostgreSQL's own tools on a PostgreSQL store (see docs/cluster.md)")]
    NotForPostgres(&'static str),
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
                | StoreError::BadUrl { .. }
                | StoreError::Unreachable { .. }
                | StoreError::NotForPostgres(_)
                | StoreError::NotEmpty { .. }
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

/// Typed access to the store, on either backend.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    /// The redb file, or for PostgreSQL where the store is (without a password): what messages
    /// name.
    path: PathBuf,
    /// Write transactions committed through this handle (exposed for metrics and tests).
    commits: AtomicU64,
}

/// The right to serve Telegram from a store, held until dropped ([`Store::try_service_lock`]).
pub struct ServiceLock {
    held: Option<postgres::Held>,
}

impl ServiceLock {
    /// Whether it is still held: on PostgreSQL a lost connection (a network cut, a restarted
    /// server) releases the lock, and a stand-by replica may have taken it since.
    pub fn check(&self) -> StoreResult<()> {
        self.held.as_ref().map_or(Ok(()), postgres::Held::check)
    }
}

impl std::fmt::Debug for ServiceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.held.is_some() { "ServiceLock(postgres)" } else { "ServiceLock(redb)" })
    }
}

#[derive(Debug)]
enum Backend {
    Redb(Database),
    Postgres(Arc<postgres::Pool>),
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
        if existed {
            schema::check_is_sputnik(&db, path)?;
        }
        let store = Store { backend: Backend::Redb(db), path: path.to_owned(), commits: AtomicU64::new(0) };
        schema::migrate(&store)?;
        Ok(store)
    }

    /// Connects to the store kept in PostgreSQL at `url`, creating its relation and migrating
    /// it to the current schema. Any number of processes may hold it open.
    pub fn connect(url: &str) -> StoreResult<Store> {
        let pool = postgres::Pool::open(url)?;
        let path = PathBuf::from(pool.location());
        let store = Store { backend: Backend::Postgres(pool), path, commits: AtomicU64::new(0) };
        schema::migrate(&store)?;
        Ok(store)
    }

    /// The redb file, or where the PostgreSQL store is (never with its password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this store lives in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    fn read(&self) -> StoreResult<Read> {
        Ok(match &self.backend {
            Backend::Redb(db) => Read::Redb(db.begin_read()?),
            Backend::Postgres(pool) => Read::Postgres(pool.read()?),
        })
    }

    fn write(&self) -> StoreResult<Write> {
        Ok(match &self.backend {
            Backend::Redb(db) => Write::Redb(db.begin_write()?),
            Backend::Postgres(pool) => Write::Postgres(pool.write()?),
        })
    }

    /// Tries to become the one process that serves Telegram from this store. On redb that is
    /// always granted: its file lock already makes this process the only one. On PostgreSQL it
    /// is a session advisory lock that one replica holds while the others stand by: `None` while
    /// another holds it, and it passes to a stand-by within moments of the holder's exit or
    /// death (its connection closes).
    pub fn try_service_lock(&self) -> StoreResult<Option<ServiceLock>> {
        match &self.backend {
            Backend::Redb(_) => Ok(Some(ServiceLock { held: None })),
            Backend::Postgres(pool) => Ok(pool
                .try_session_lock(postgres::SERVICE_LOCK)?
                .map(|held| ServiceLock { held: Some(held) })),
        }
    }

    /// Copies the store file to `dest` as of its last commit: a write transaction is held while
    /// the bytes are copied, so no write can land half-way, and dropped without changes. The
    /// copy was not closed by redb, so opening it replays the last commit (what a restart after
    /// a crash does); [`Store::open`] on it checks it.
    pub fn snapshot_to(&self, dest: &Path) -> StoreResult<u64> {
        let Backend::Redb(db) = &self.backend else {
            return Err(StoreError::NotForPostgres("a backup"));
        };
        let txn = db.begin_write()?;
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

    fn commit(&self, txn: Write) -> StoreResult<()> {
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
        schema::meta(&self.read()?, key)
    }

    /// What changed after revision `after`, in order, and the revision that brings the caller
    /// up to date; `None` when the log no longer reaches back that far (or never did: a store
    /// older than the log), so the caller must rebuild.
    pub fn changes_since(&self, after: u64) -> StoreResult<Option<Changes>> {
        let txn = self.read()?;
        let current = schema::meta(&txn, meta_keys::REVISION)?;
        if current <= after {
            return Ok(Some((current, Vec::new())));
        }
        let rows = txn.rows(&schema::CHANGES, kv::Span::between(after + 1, current))?;
        if rows.len() as u64 != current - after {
            return Ok(None);
        }
        let changes = rows
            .into_iter()
            .map(|(revision, bytes)| Ok((revision, decode(&bytes, || format!("change {revision}"))?)))
            .collect::<StoreResult<_>>()?;
        Ok(Some((current, changes)))
    }

    pub fn counts(&self) -> StoreResult<StoreCounts> {
        let txn = self.read()?;
        let documents = txn.len(&DOCUMENTS)?;
        let chunks = txn.len(&CHUNKS)?;
        let revision = schema::meta(&txn, meta_keys::REVISION)?;
        Ok(StoreCounts { documents, chunks, revision })
    }
}

/// What one revision changed in the searchable content, for indexes that follow the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A document was added, replaced or regrouped: read it again.
    Document(DocumentId),
    /// A document was removed.
    Removed(DocumentId),
    /// Everything may have changed (the embedding model was switched): rebuild.
    Everything,
}

/// What [`Store::changes_since`] found: the revision it brings the caller to, and each change
/// after the caller's revision with the revision that made it, in order.
pub type Changes = (u64, Vec<(u64, Change)>);

/// Change-log entries kept: a replica further behind than this rebuilds its indexes.
pub const CHANGES_KEPT: u64 = 10_000;

/// Bumps the revision, recording what it changed in the same transaction; returns it.
fn bump_revision(txn: &Write, change: Change) -> StoreResult<u64> {
    let next = schema::meta(txn, meta_keys::REVISION)? + 1;
    schema::set_meta(txn, meta_keys::REVISION, next)?;
    txn.insert(&schema::CHANGES, &next, &encode(&change))?;
    txn.notify(outbox::Notice::Changes.channel())?;
    if next > CHANGES_KEPT {
        txn.remove(&schema::CHANGES, &(next - CHANGES_KEPT))?;
    }
    Ok(next)
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
        testing::each_backend(|backend| {
            let store = backend.open();
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
            // Passages with their documents, in the order asked, missing ones as None.
            let keys = [(other.id, 0), (first.id, 1), (first.id, 0), (DocumentId(999), 0)];
            let found: Vec<Option<(String, String)>> = store
                .chunks_with_documents(&keys)
                .unwrap()
                .into_iter()
                .map(|hit| hit.map(|(d, c)| (d.source, c.text)))
                .collect();
            let hit = |source: &str, text: &str| Some((source.to_owned(), text.to_owned()));
            assert_eq!(found, [hit("b.md", "other"), None, hit("a.md", "uno"), None]);
        });
    }

    #[test]
    fn removing_a_document_removes_its_chunks_and_source() {
        testing::each_backend(|backend| {
            let store = backend.open();
            let (doc, _) = store.put_document(new_doc("a.md", &["one", "two"]), None).unwrap();
            store.remove_document(doc.id).unwrap();
            assert_eq!(store.counts().unwrap().chunks, 0);
            assert!(store.find_by_source(&doc.source_key()).unwrap().is_none());
            assert!(matches!(store.remove_document(doc.id), Err(StoreError::UnknownDocument(_))));
        });
    }

    #[test]
    fn embeddings_of_two_models_or_none_never_mix() {
        testing::each_backend(|backend| {
            let store = backend.open();
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
            assert!(matches!(
                store.switch_embedding_model(Some("m2")),
                Err(StoreError::MissingEmbedding { .. })
            ));
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
        });
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

    /// Each change to searchable content is logged with its revision, in the same transaction,
    /// for replicas to follow.
    #[test]
    fn every_revision_is_in_the_change_log() {
        testing::each_backend(|backend| {
            let store = backend.open();
            let vectors = vec![vec![1.0f32, 0.0]];
            let (a, r1) = store
                .put_document(new_doc("a.md", &["x"]), Some(ChunkVectors { model: "m", vectors: &vectors }))
                .unwrap();
            let (_, r2) = store.set_groups(a.id, vec!["hr".into()]).unwrap();
            let (_, r3) = store.remove_document(a.id).unwrap();
            let r4 = store.switch_embedding_model(None).unwrap();
            assert_eq!((r1, r2, r3, r4), (1, 2, 3, 4));
            let expected =
                vec![(2, Change::Document(a.id)), (3, Change::Removed(a.id)), (4, Change::Everything)];
            assert_eq!(store.changes_since(1).unwrap(), Some((4, expected)));
            assert_eq!(store.changes_since(0).unwrap().unwrap().1[0], (1, Change::Document(a.id)));
            assert_eq!(store.changes_since(4).unwrap(), Some((4, vec![])));
        });
    }

    #[test]
    fn reopening_keeps_schema_and_instance() {
        testing::each_backend(|backend| {
            let id = {
                let store = backend.open();
                store.put_document(new_doc("a.md", &["x"]), None).unwrap();
                store.instance_id().unwrap()
            };
            let store = backend.open();
            assert_eq!(store.instance_id().unwrap(), id);
            assert_eq!(store.counts().unwrap().documents, 1);
            assert_eq!(store.verify().unwrap().documents, 1);
        });
    }
}
