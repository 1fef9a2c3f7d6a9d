//! The store: one redb file, Sputnik's only source of truth. Every derived index is rebuilt
//! from it. Invariants kept here:
//! - a document and all of its chunks change in one write transaction, or not at all;
//! - every transaction that changes searchable content bumps the store *revision*, which the
//!   search index records at its own commits, so a stale index is detectable after a crash;
//! - the schema version is stored, and numbered migrations bring older files up to date.

mod records;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

pub use records::{ChunkRecord, DocumentId, DocumentRecord, Format, Language, NewDocument, SourceKey};
pub use schema::SCHEMA_VERSION;

use schema::{CHUNKS, DOCUMENTS, META, SOURCES, meta_keys};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory is in use by another Sputnik process ({path}); stop it or run the \
         command through the running service"
    )]
    Locked { path: PathBuf },
    #[error(
        "the store {path} was written by a newer Sputnik (schema {found}, this binary knows up \
         to {known}); upgrade Sputnik"
    )]
    TooNew { path: PathBuf, found: u64, known: u64 },
    #[error("no document with id {0}")]
    UnknownDocument(u64),
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("store: {0}")]
    Database(#[from] redb::Error),
    #[error("store record is corrupt ({what}): {source}")]
    Corrupt { what: String, source: serde_json::Error },
}

impl StoreError {
    pub fn is_user_error(&self) -> bool {
        matches!(self, StoreError::Locked { .. } | StoreError::UnknownDocument(_) | StoreError::TooNew { .. })
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

/// Counts for `sputnik stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounts {
    pub documents: u64,
    pub chunks: u64,
    pub revision: u64,
}

/// Typed access to the redb file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Write transactions committed through this handle (exposed for metrics and tests).
    commits: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store file and migrates it to the current schema.
    pub fn open(path: &Path) -> StoreResult<Store> {
        let db = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.to_owned() },
            source => StoreError::Open { path: path.to_owned(), source },
        })?;
        let store = Store { db, path: path.to_owned(), commits: AtomicU64::new(0) };
        schema::migrate(&store.db, path)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Inserts a document with its chunks, or replaces the document stored under the same source
    /// key (keeping its id) and all of its chunks, in one transaction. Returns the stored record
    /// and the new store revision.
    pub fn put_document(&self, new: NewDocument) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.db.begin_write()?;
        let result = {
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
            (record, bump_revision(&mut meta)?)
        };
        self.commit(txn)?;
        Ok(result)
    }
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
        let (first, rev1) = store.put_document(new_doc("a.md", &["one", "two", "three"])).unwrap();
        let (other, _) = store.put_document(new_doc("b.md", &["other"])).unwrap();
        let (second, rev2) = store.put_document(new_doc("a.md", &["uno"])).unwrap();
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
        let (doc, _) = store.put_document(new_doc("a.md", &["one", "two"])).unwrap();
        store.remove_document(doc.id).unwrap();
        assert_eq!(store.counts().unwrap().chunks, 0);
        assert!(store.find_by_source(&doc.source_key()).unwrap().is_none());
        assert!(matches!(store.remove_document(doc.id), Err(StoreError::UnknownDocument(_))));
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
            store.put_document(new_doc("a.md", &["x"])).unwrap();
            store.instance_id().unwrap()
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.instance_id().unwrap(), id);
        assert_eq!(store.counts().unwrap().documents, 1);
    }
}
