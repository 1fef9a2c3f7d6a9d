//! The store checked record by record: what `backup` and `restore` run before they trust a
//! file, and `doctor` before it calls the store right. redb's checksums (verified on open) say
//! every page is as redb wrote it; this says the records in them decode and agree.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::kv::{Reader, Span};
use super::schema::{
    CHUNKS, DOCUMENTS, EMPLOYEES, PLANS, QUESTIONS, SOURCES, TABLES, embeddings, meta_keys, meta_text,
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
        let txn = self.read()?;
        let mut documents = HashMap::new();
        txn.scan(&DOCUMENTS, Span::all(), |id, bytes| {
            let record: DocumentRecord = decode(&bytes, || format!("document {id}"))?;
            documents.insert(id, record);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        let mut disagreement = None;
        txn.scan(&SOURCES, Span::all(), |source, id| {
            if documents.contains_key(&id) {
                return Ok::<_, StoreError>(ControlFlow::Continue(()));
            }
            disagreement = Some(format!("source {source} names a missing document {id}"));
            Ok(ControlFlow::Break(()))
        })?;
        let mut chunks = 0u64;
        if disagreement.is_none() {
            txn.scan(&CHUNKS, Span::all(), |(document, ordinal), bytes| {
                let _: ChunkRecord = decode(&bytes, || format!("chunk {document}/{ordinal}"))?;
                if !documents.contains_key(&document) {
                    disagreement = Some(format!("chunk {document}/{ordinal} belongs to a missing document"));
                    return Ok::<_, StoreError>(ControlFlow::Break(()));
                }
                chunks += 1;
                Ok(ControlFlow::Continue(()))
            })?;
        }
        let model = meta_text(&txn, meta_keys::EMBEDDING_MODEL)?;
        if let (None, Some(model)) = (&disagreement, &model) {
            let mut embedded = 0u64;
            txn.scan(&embeddings(model), Span::all(), |(document, ordinal), _| {
                if txn.get(&CHUNKS, &(document, ordinal))?.is_none() {
                    disagreement = Some(format!("an embedding of {document}/{ordinal} has no chunk"));
                    return Ok::<_, StoreError>(ControlFlow::Break(()));
                }
                embedded += 1;
                Ok(ControlFlow::Continue(()))
            })?;
            if disagreement.is_none() && embedded != chunks {
                disagreement = Some(format!("{chunks} chunks but {embedded} {model} embeddings"));
            }
        }
        if let Some(reason) = disagreement {
            return Err(damaged(reason));
        }
        // The rest is read through: every page of every table must be readable.
        for table in TABLES {
            table.read_through(&txn)?;
        }
        let employees = txn.len(&EMPLOYEES)?;
        let questions = txn.len(&QUESTIONS)?;
        let plans = txn.len(&PLANS)?;
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
