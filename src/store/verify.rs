//! The store checked record by record: what `backup` and `restore` run before they trust a
//! file, and `doctor` before it calls the store right. redb's checksums (verified on open) say
//! every page is as redb wrote it; this says the records in them decode and agree.

use redb::{ReadableDatabase, ReadableTable};

use super::schema::{
    ASSIGNMENTS, BROADCASTS, CHUNKS, DELIVERIES, DOCUMENTS, EMPLOYEES, INBOX, INVITES, META, META_TEXT,
    NOTIFICATIONS, OUTBOX, PLANS, QUESTIONS, SESSIONS, SOURCES, TASK_STATES, TELEGRAM_USERS,
    UPDATE_QUESTIONS, embeddings_table, embeddings_table_name, meta_keys,
};
use super::{ChunkRecord, DocumentRecord, Store, StoreError, StoreResult, decode};

/// What [`Store::verify`] read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    pub documents: u64,
    pub chunks: u64,
    pub employees: u64,
    pub plans: u64,
    pub questions: u64,
    pub embedding_model: Option<String>,
}

impl Store {
    /// Reads every record of every table and checks that they agree with each other: each
    /// source names a stored document, each chunk belongs to one, and each chunk has exactly one
    /// embedding of the stored model. What `restore` and `backup` check before they trust a
    /// file, and `doctor` before it says the store is right; a failure is
    /// [`StoreError::Damaged`] naming the first disagreement.
    pub fn verify(&self) -> StoreResult<Verified> {
        let damaged = |reason: String| StoreError::Damaged { path: self.path.clone(), reason };
        let txn = self.db.begin_read()?;
        let mut documents = std::collections::HashMap::new();
        for row in txn.open_table(DOCUMENTS)?.iter()? {
            let (id, bytes) = row?;
            let record: DocumentRecord = decode(bytes.value(), || format!("document {}", id.value()))?;
            documents.insert(id.value(), record);
        }
        for row in txn.open_table(SOURCES)?.iter()? {
            let (source, id) = row?;
            if !documents.contains_key(&id.value()) {
                return Err(damaged(format!(
                    "source {} names a missing document {}",
                    source.value(),
                    id.value()
                )));
            }
        }
        let mut chunks = 0u64;
        for row in txn.open_table(CHUNKS)?.iter()? {
            let (key, bytes) = row?;
            let (document, ordinal) = key.value();
            let _: ChunkRecord = decode(bytes.value(), || format!("chunk {document}/{ordinal}"))?;
            if !documents.contains_key(&document) {
                return Err(damaged(format!("chunk {document}/{ordinal} belongs to a missing document")));
            }
            chunks += 1;
        }
        let model = txn.open_table(META_TEXT)?.get(meta_keys::EMBEDDING_MODEL)?.map(|v| v.value().to_owned());
        if let Some(model) = &model {
            let name = embeddings_table_name(model);
            let table = txn.open_table(embeddings_table(&name))?;
            let chunk_table = txn.open_table(CHUNKS)?;
            let mut embedded = 0u64;
            for row in table.iter()? {
                let (key, _) = row?;
                let (document, ordinal) = key.value();
                if chunk_table.get((document, ordinal))?.is_none() {
                    return Err(damaged(format!("an embedding of {document}/{ordinal} has no chunk")));
                }
                embedded += 1;
            }
            if embedded != chunks {
                return Err(damaged(format!("{chunks} chunks but {embedded} {model} embeddings")));
            }
        }
        // The rest is read through: every page of every table must be readable.
        macro_rules! rows {
            ($($table:expr),*) => {{
                let mut rows = 0u64;
                $(match txn.open_table($table) {
                    // Some tables are created by their first write.
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    table => for row in table?.iter()? { row?; rows += 1; },
                })*
                rows
            }};
        }
        let employees = rows!(EMPLOYEES);
        let questions = rows!(QUESTIONS);
        let plans = rows!(PLANS);
        rows!(
            META,
            TELEGRAM_USERS,
            INVITES,
            SESSIONS,
            OUTBOX,
            ASSIGNMENTS,
            TASK_STATES,
            NOTIFICATIONS,
            BROADCASTS,
            DELIVERIES,
            UPDATE_QUESTIONS,
            INBOX
        );
        drop(txn);
        // Records are decoded, not only read, where a reader would trip over them later.
        self.employees()?;
        self.questions()?;
        self.plans::<serde_json::Value>()?;
        Ok(Verified {
            documents: documents.len() as u64,
            chunks,
            employees,
            plans,
            questions,
            embedding_model: model,
        })
    }
}
