//! Documents, their chunks and the chunks' vectors: the searchable content. A document and all
//! of its chunks (and vectors) change in one write transaction, and every such change bumps the
//! store revision.

use std::ops::ControlFlow;

use super::kv::{Reader, Span, Write, document_rows};
use super::schema::{CHUNKS, DOCUMENTS, META_TEXT, SOURCES, embeddings, meta, meta_keys, meta_text, take_id};
use super::{
    Change, ChunkRecord, DocumentId, DocumentRecord, NewDocument, SourceKey, Store, StoreError, StoreResult,
    bump_revision, decode, encode,
};

impl Store {
    pub fn find_by_source(&self, key: &SourceKey) -> StoreResult<Option<DocumentRecord>> {
        let txn = self.read()?;
        let Some(id) = txn.get(&SOURCES, &key.encoded())? else {
            return Ok(None);
        };
        read_document(&txn, id)
    }

    pub fn document(&self, id: DocumentId) -> StoreResult<Option<DocumentRecord>> {
        read_document(&self.read()?, id.0)
    }

    /// All documents, in id (import) order.
    pub fn documents(&self) -> StoreResult<Vec<DocumentRecord>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&DOCUMENTS, Span::all(), |id, bytes| {
            out.push(decode(&bytes, || format!("document {id}"))?);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn chunks(&self, id: DocumentId) -> StoreResult<Vec<ChunkRecord>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&CHUNKS, document_rows(id.0), |(doc, ordinal), bytes| {
            out.push(decode(&bytes, || format!("chunk {doc}/{ordinal}"))?);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Looks up many chunks by (document, ordinal) in one read transaction, with their documents.
    pub fn chunks_with_documents(
        &self,
        keys: &[(DocumentId, u32)],
    ) -> StoreResult<Vec<Option<(DocumentRecord, ChunkRecord)>>> {
        // Two lookups in all, not two per passage: on PostgreSQL each is a round trip.
        let txn = self.read()?;
        let chunk_keys: Vec<(u64, u32)> = keys.iter().map(|&(doc, ordinal)| (doc.0, ordinal)).collect();
        let chunks = txn.get_many(&CHUNKS, &chunk_keys)?;
        let mut ids: Vec<u64> = keys.iter().map(|(doc, _)| doc.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut documents = std::collections::HashMap::new();
        for (id, bytes) in ids.iter().zip(txn.get_many(&DOCUMENTS, &ids)?) {
            if let Some(bytes) = bytes {
                documents.insert(*id, decode::<DocumentRecord>(&bytes, || format!("document {id}"))?);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (&(doc, ordinal), chunk) in keys.iter().zip(chunks) {
            let (Some(bytes), Some(document)) = (chunk, documents.get(&doc.0)) else {
                out.push(None);
                continue;
            };
            let chunk = decode::<ChunkRecord>(&bytes, || format!("chunk {}/{ordinal}", doc.0))?;
            out.push(Some((document.clone(), chunk)));
        }
        Ok(out)
    }

    /// Visits every chunk with its document, in (document, ordinal) order, inside one read
    /// transaction: the consistent snapshot an index rebuild needs.
    pub fn for_each_chunk(
        &self,
        mut visit: impl FnMut(&DocumentRecord, &ChunkRecord) -> Result<(), crate::Error>,
    ) -> Result<u64, crate::Error> {
        let txn = self.read()?;
        let revision = meta(&txn, meta_keys::REVISION)?;
        let documents = all_documents(&txn)?;
        txn.scan(&CHUNKS, Span::all(), |(doc, ordinal), bytes| {
            if let Some(document) = documents.get(&doc) {
                let chunk: ChunkRecord = decode(&bytes, || format!("chunk {doc}/{ordinal}"))?;
                visit(document, &chunk)?;
            }
            Ok::<_, crate::Error>(ControlFlow::Continue(()))
        })?;
        Ok(revision)
    }

    /// The model whose embeddings every chunk carries, if embeddings are stored.
    pub fn embedding_model(&self) -> StoreResult<Option<String>> {
        meta_text(&self.read()?, meta_keys::EMBEDDING_MODEL)
    }

    /// Visits every stored embedding of the current model with its document, in order, inside
    /// one read transaction. Returns the store revision of that snapshot.
    pub fn for_each_embedding(
        &self,
        mut visit: impl FnMut(&DocumentRecord, u32, &[f32]),
    ) -> StoreResult<u64> {
        let txn = self.read()?;
        let revision = meta(&txn, meta_keys::REVISION)?;
        let Some(model) = meta_text(&txn, meta_keys::EMBEDDING_MODEL)? else {
            return Ok(revision);
        };
        let documents = all_documents(&txn)?;
        let mut vector = Vec::new();
        txn.scan(&embeddings(&model), Span::all(), |(doc, ordinal), bytes| {
            if let Some(document) = documents.get(&doc) {
                read_vector(&bytes, &mut vector);
                visit(document, ordinal, &vector);
            }
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(revision)
    }

    /// The current model's vectors of one document's chunks, by ordinal (for an index that
    /// follows the store); empty without embeddings.
    pub fn document_vectors(&self, id: DocumentId) -> StoreResult<Vec<(u32, Vec<f32>)>> {
        let txn = self.read()?;
        let Some(model) = meta_text(&txn, meta_keys::EMBEDDING_MODEL)? else {
            return Ok(Vec::new());
        };
        let rows = txn.rows(&embeddings(&model), document_rows(id.0))?;
        Ok(rows
            .into_iter()
            .map(|((_, ordinal), bytes)| {
                let mut vector = Vec::new();
                read_vector(&bytes, &mut vector);
                (ordinal, vector)
            })
            .collect())
    }

    /// Stores `model` embeddings for one document's chunks as part of a re-embedding run: they
    /// go to that model's table and become current only with [`Store::switch_embedding_model`].
    pub fn put_staged_embeddings(
        &self,
        model: &str,
        id: DocumentId,
        vectors: &[(u32, Vec<f32>)],
    ) -> StoreResult<()> {
        let txn = self.write()?;
        let table = embeddings(model);
        txn.remove_span(&table, document_rows(id.0))?;
        let bytes: Vec<Vec<u8>> = vectors.iter().map(|(_, v)| vector_bytes(v)).collect();
        txn.insert_all(&table, vectors.iter().zip(&bytes).map(|((ordinal, _), b)| ((id.0, *ordinal), b)))?;
        self.commit(txn)
    }

    /// Drops any staged embeddings of `model` (the start of a fresh re-embedding run).
    pub fn clear_staged_embeddings(&self, model: &str) -> StoreResult<()> {
        let txn = self.write()?;
        txn.delete_table(&embeddings(model))?;
        self.commit(txn)
    }

    /// Makes `model` the store's embedding model once every chunk has a staged vector, and
    /// deletes the previous model's vectors, in one transaction. `None` turns embeddings off.
    pub fn switch_embedding_model(&self, model: Option<&str>) -> StoreResult<u64> {
        let txn = self.write()?;
        let previous = meta_text(&txn, meta_keys::EMBEDDING_MODEL)?;
        if let Some(model) = model {
            let table = embeddings(model);
            let mut missing = None;
            txn.scan(&CHUNKS, Span::all(), |(document, ordinal), _| {
                if txn.get(&table, &(document, ordinal))?.is_none() {
                    missing = Some((document, ordinal));
                    return Ok::<_, StoreError>(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if let Some((document, ordinal)) = missing {
                txn.abort()?;
                return Err(StoreError::MissingEmbedding { document, ordinal, model: model.to_owned() });
            }
            txn.insert(&META_TEXT, &meta_keys::EMBEDDING_MODEL.to_owned(), &model.to_owned())?;
        } else {
            txn.remove(&META_TEXT, &meta_keys::EMBEDDING_MODEL.to_owned())?;
        }
        if let Some(previous) = previous.filter(|p| Some(p.as_str()) != model) {
            txn.delete_table(&embeddings(&previous))?;
        }
        let revision = bump_revision(&txn, Change::Everything)?;
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
        let txn = self.write()?;
        let model = vectors.as_ref().map(|v| v.model);
        let table_model = match check_embedding_model(&txn, model) {
            Ok(table_model) => table_model,
            Err(e) => {
                txn.abort()?;
                return Err(e);
            }
        };
        let key = new.source_key().encoded();
        let (id, imported_at) = match txn.get(&SOURCES, &key)? {
            Some(id) => {
                let previous = read_document(&txn, id)?;
                txn.remove_span(&CHUNKS, document_rows(id))?;
                (id, previous.map(|d| d.imported_at).unwrap_or(new.updated_at))
            }
            None => {
                let id = take_id(&txn, meta_keys::NEXT_DOCUMENT_ID)?;
                txn.insert(&SOURCES, &key, &id)?;
                (id, new.updated_at)
            }
        };
        let record = new.into_record(DocumentId(id), imported_at);
        let encoded: Vec<Vec<u8>> = record.1.iter().map(encode).collect();
        txn.insert_all(
            &CHUNKS,
            record.1.iter().zip(&encoded).map(|(chunk, bytes)| ((id, chunk.ordinal), bytes)),
        )?;
        if let (Some(model), Some(vectors)) = (&table_model, &vectors) {
            let table = embeddings(model);
            txn.remove_span(&table, document_rows(id))?;
            let bytes: Vec<Vec<u8>> = vectors.vectors.iter().map(|v| vector_bytes(v)).collect();
            txn.insert_all(&table, record.1.iter().zip(&bytes).map(|(chunk, b)| ((id, chunk.ordinal), b)))?;
        }
        txn.insert(&DOCUMENTS, &id, &encode(&record.0))?;
        let revision = bump_revision(&txn, Change::Document(DocumentId(id)))?;
        self.commit(txn)?;
        Ok((record.0, revision))
    }

    /// Changes a document's access groups without touching its chunks.
    pub fn set_groups(&self, id: DocumentId, groups: Vec<String>) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.write()?;
        let Some(mut record) = read_document(&txn, id.0)? else {
            txn.abort()?;
            return Err(StoreError::UnknownDocument(id.0));
        };
        record.groups = groups;
        txn.insert(&DOCUMENTS, &id.0, &encode(&record))?;
        let revision = bump_revision(&txn, Change::Document(id))?;
        self.commit(txn)?;
        Ok((record, revision))
    }

    /// Removes a document and all its chunks. Returns the removed record and the new revision.
    pub fn remove_document(&self, id: DocumentId) -> StoreResult<(DocumentRecord, u64)> {
        let txn = self.write()?;
        let Some(record) = read_document(&txn, id.0)? else {
            txn.abort()?;
            return Err(StoreError::UnknownDocument(id.0));
        };
        txn.remove(&DOCUMENTS, &id.0)?;
        txn.remove(&SOURCES, &record.source_key().encoded())?;
        txn.remove_span(&CHUNKS, document_rows(id.0))?;
        if let Some(model) = meta_text(&txn, meta_keys::EMBEDDING_MODEL)? {
            txn.remove_span(&embeddings(&model), document_rows(id.0))?;
        }
        let revision = bump_revision(&txn, Change::Removed(id))?;
        self.commit(txn)?;
        Ok((record, revision))
    }
}

/// The vectors of one document's chunks, in chunk order, and the model that made them.
#[derive(Debug, Clone, Copy)]
pub struct ChunkVectors<'a> {
    pub model: &'a str,
    pub vectors: &'a [Vec<f32>],
}

/// Refuses to mix documents with and without embeddings, or embeddings of two models. Returns
/// the model whose table to write, if any, recording it on the first embedded import.
fn check_embedding_model(txn: &Write, model: Option<&str>) -> StoreResult<Option<String>> {
    let stored = meta_text(txn, meta_keys::EMBEDDING_MODEL)?;
    let has_documents = !txn.is_empty(&DOCUMENTS)?;
    match (stored, model) {
        (Some(stored), Some(model)) if stored == model => Ok(Some(stored)),
        (Some(stored), configured) => Err(StoreError::EmbeddingModelMismatch {
            stored,
            configured: configured.map_or("\"none\"".to_owned(), str::to_owned),
        }),
        (None, Some(model)) if has_documents => {
            Err(StoreError::EmbeddingModelMismatch { stored: "no".to_owned(), configured: model.to_owned() })
        }
        (None, Some(model)) => {
            txn.insert(&META_TEXT, &meta_keys::EMBEDDING_MODEL.to_owned(), &model.to_owned())?;
            Ok(Some(model.to_owned()))
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

/// Every document by id, read in one scan (on PostgreSQL a round trip per page, not per
/// document: what a pass over every chunk or vector needs).
fn all_documents(txn: &impl Reader) -> StoreResult<std::collections::HashMap<u64, DocumentRecord>> {
    let mut documents = std::collections::HashMap::new();
    txn.scan(&DOCUMENTS, Span::all(), |id, bytes| {
        documents.insert(id, decode::<DocumentRecord>(&bytes, || format!("document {id}"))?);
        Ok::<_, StoreError>(ControlFlow::Continue(()))
    })?;
    Ok(documents)
}

fn read_document(txn: &impl Reader, id: u64) -> StoreResult<Option<DocumentRecord>> {
    match txn.get(&DOCUMENTS, &id)? {
        Some(bytes) => Ok(Some(decode(&bytes, || format!("document {id}"))?)),
        None => Ok(None),
    }
}
