//! Documents, their chunks and the chunks' vectors: the searchable content. A document and all
//! of its chunks (and vectors) change in one write transaction, and every such change bumps the
//! store revision.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::schema::{
    CHUNKS, DOCUMENTS, META, META_TEXT, SOURCES, embeddings_table, embeddings_table_name, meta_keys,
};
use super::{
    ChunkRecord, DocumentId, DocumentRecord, NewDocument, SourceKey, Store, StoreError, StoreResult,
    bump_revision, decode, encode,
};

impl Store {
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
