//! The full-text index (tantivy), derived from the store. One tantivy document per chunk.
//!
//! Every commit carries a payload naming the store instance and revision it reflects. On open,
//! an index whose payload does not match the store — missing, from an older index format, or
//! left behind by a crash between a store write and an index commit — is rebuilt from the store
//! before anything is searched. Access groups are a field of the index and filter inside the
//! query, so a top-k cut never hides a permitted hit behind forbidden ones.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};

use super::SearchError;
use super::analysis::{self, EXACT, STEMMED};
use crate::store::{ChunkRecord, DocumentId, DocumentRecord, Store};

/// Bump when the schema or analysis changes: older indexes are then rebuilt on open.
const INDEX_FORMAT: u32 = 1;
/// The group term carried by documents every employee may see.
pub const PUBLIC_GROUP: &str = "*";
const WRITER_HEAP_BYTES: usize = 64 * 1024 * 1024;

/// What the index reflects; stored as the payload of each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexState {
    pub format: u32,
    pub store_instance: u64,
    pub store_revision: u64,
}

impl IndexState {
    pub fn of(store: &Store) -> Result<IndexState, crate::Error> {
        Ok(IndexState {
            format: INDEX_FORMAT,
            store_instance: store.instance_id()?,
            store_revision: store.revision()?,
        })
    }
}

/// Why an index was rebuilt when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    UpToDate,
    /// The index reflects an earlier revision whose changes the store's change log still holds:
    /// they are to be applied ([`crate::App::follow`]), not the index rebuilt.
    Behind {
        revision: u64,
    },
    Rebuilt {
        reason: String,
        chunks: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    chunk_key: Field,
    document: Field,
    groups: Field,
    body: Field,
    heading: Field,
    exact: Field,
}

/// A raw full-text hit: which chunk, and its BM25 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalHit {
    pub document: DocumentId,
    pub ordinal: u32,
    pub score: f32,
}

/// The full-text index. Reads need no lock (tantivy's reader is shared); the writer, opened on
/// the first change and closed after an import, sits behind a mutex of its own, so an import
/// writes through a shared reference while questions are answered.
pub struct LexicalIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = |tokenizer: &str, record: IndexRecordOption| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(tokenizer).set_index_option(record),
        )
    };
    let fields = Fields {
        chunk_key: builder.add_u64_field("chunk_key", INDEXED | STORED | FAST),
        document: builder.add_u64_field("document", INDEXED | FAST),
        groups: builder.add_text_field("groups", STRING),
        body: builder.add_text_field("body", text(STEMMED, IndexRecordOption::WithFreqsAndPositions)),
        heading: builder.add_text_field("heading", text(STEMMED, IndexRecordOption::WithFreqs)),
        exact: builder.add_text_field("exact", text(EXACT, IndexRecordOption::WithFreqs)),
    };
    (builder.build(), fields)
}

/// Chunk keys pack (document, ordinal) into one fast-field value.
fn chunk_key(document: DocumentId, ordinal: u32) -> u64 {
    (document.0 << 24) | u64::from(ordinal & 0x00ff_ffff)
}

fn split_chunk_key(key: u64) -> (DocumentId, u32) {
    (DocumentId(key >> 24), (key & 0x00ff_ffff) as u32)
}

impl LexicalIndex {
    /// Opens the index in `dir`, rebuilding it from `store` when it is missing, unreadable or
    /// does not reflect the store's current revision.
    pub fn open(dir: &Path, store: &Store) -> Result<(LexicalIndex, OpenOutcome), crate::Error> {
        let expected = IndexState::of(store)?;
        let reason = match Self::open_existing(dir) {
            Ok(index) => match index.state()? {
                Some(state) if state == expected => return Ok((index, OpenOutcome::UpToDate)),
                Some(state) if state.format != INDEX_FORMAT => "the index format changed".to_owned(),
                Some(state) if state.store_instance != expected.store_instance => {
                    "the index belongs to another store".to_owned()
                }
                Some(state)
                    if state.store_revision < expected.store_revision
                        && store.changes_since(state.store_revision)?.is_some_and(|(_, changes)| {
                            !changes.iter().any(|(_, change)| *change == crate::store::Change::Everything)
                        }) =>
                {
                    return Ok((index, OpenOutcome::Behind { revision: state.store_revision }));
                }
                Some(state) => format!(
                    "the index reflects store revision {}, the store is at {}",
                    state.store_revision, expected.store_revision
                ),
                None => "the index has no commit record".to_owned(),
            },
            Err(_) if !dir.exists() => "there is no index yet".to_owned(),
            Err(e) => format!("the index could not be opened ({e})"),
        };
        if dir.exists() || expected.store_revision > 0 {
            tracing::warn!(%reason, "rebuilding the full-text index from the store");
        }
        let (index, chunks) = Self::rebuild(dir, store)?;
        Ok((index, OpenOutcome::Rebuilt { reason, chunks }))
    }

    /// Checks, without changing anything, that the index in `dir` reflects `store`: `Ok` with
    /// its chunk count, or `Err` with why it would be rebuilt on the next open.
    pub fn check(dir: &Path, store: &Store) -> Result<Result<u64, String>, crate::Error> {
        let expected = IndexState::of(store)?;
        Ok(match Self::open_existing(dir) {
            Ok(index) => match index.state()? {
                Some(state) if state == expected => Ok(index.num_chunks()),
                Some(state) => Err(format!(
                    "the index reflects store revision {} (instance {}), the store is at {} (instance {})",
                    state.store_revision,
                    state.store_instance,
                    expected.store_revision,
                    expected.store_instance
                )),
                None => Err("the index has no commit record".to_owned()),
            },
            Err(_) if !dir.exists() => Err("there is no index yet".to_owned()),
            Err(e) => Err(format!("the index could not be opened ({e})")),
        })
    }

    /// Opens the index only after every file it uses passed its checksum: tantivy trusts its
    /// files and panics on a damaged one (a few flipped bytes in a `.fast` file did), so a
    /// damaged index is found here and rebuilt from the store instead. The panic guard covers
    /// damage the checksums cannot see (a file changed together with its checksum).
    fn open_existing(dir: &Path) -> Result<LexicalIndex, SearchError> {
        let guarded = std::panic::catch_unwind(|| -> Result<LexicalIndex, SearchError> {
            let index = Index::open_in_dir(dir)?;
            let (schema, fields) = schema();
            if index.schema() != schema {
                return Err(SearchError::IndexMismatch("schema differs".into()));
            }
            let damaged = index.validate_checksum().map_err(|e| SearchError::IndexDamaged(e.to_string()))?;
            if !damaged.is_empty() {
                let mut names: Vec<String> = damaged.iter().map(|p| p.display().to_string()).collect();
                names.sort();
                return Err(SearchError::IndexDamaged(format!("checksum mismatch in {}", names.join(", "))));
            }
            Self::wrap(dir, index, fields)
        });
        guarded.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unreadable".to_owned());
            Err(SearchError::IndexDamaged(what))
        })
    }

    fn wrap(dir: &Path, index: Index, fields: Fields) -> Result<LexicalIndex, SearchError> {
        analysis::register(&index);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(LexicalIndex { dir: dir.to_owned(), index, reader, writer: Mutex::new(None), fields })
    }

    /// Builds a fresh index from the store next to `dir`, then swaps it into place, so a crash
    /// mid-rebuild leaves the old index (which will simply be rebuilt again).
    pub fn rebuild(dir: &Path, store: &Store) -> Result<(LexicalIndex, u64), crate::Error> {
        let staging = dir.with_extension("rebuild");
        remove_dir_if_present(&staging)?;
        std::fs::create_dir_all(&staging).map_err(|e| SearchError::io(&staging, e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(&staging, schema).map_err(SearchError::from)?;
        let building = Self::wrap(&staging, index, fields)?;
        let instance = store.instance_id()?;
        let mut chunks = 0u64;
        let revision = store.for_each_chunk(|document, chunk| {
            building.add_chunk(document, chunk)?;
            chunks += 1;
            Ok(())
        })?;
        building.commit(IndexState {
            format: INDEX_FORMAT,
            store_instance: instance,
            store_revision: revision,
        })?;
        drop(building);
        remove_dir_if_present(dir)?;
        std::fs::rename(&staging, dir).map_err(|e| SearchError::io(dir, e))?;
        let index = Self::open_existing(dir)?;
        Ok((index, chunks))
    }

    /// The state recorded by the last commit, if any.
    pub fn state(&self) -> Result<Option<IndexState>, SearchError> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// Runs `f` with the writer, opening it first if needed.
    fn with_writer<R>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<R, SearchError>,
    ) -> Result<R, SearchError> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if writer.is_none() {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
            let opened: IndexWriter = self.index.writer_with_num_threads(threads, WRITER_HEAP_BYTES)?;
            // A process killed between writing and committing leaves files the index does not
            // list; a new writer would reach for the same names. Cleared before the first write.
            opened.garbage_collect_files().wait()?;
            *writer = Some(opened);
        }
        f(writer.as_mut().expect("writer was just created"))
    }

    fn add_chunk(&self, document: &DocumentRecord, chunk: &ChunkRecord) -> Result<(), SearchError> {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.chunk_key, chunk_key(document.id, chunk.ordinal));
        doc.add_u64(f.document, document.id.0);
        if document.groups.is_empty() {
            doc.add_text(f.groups, PUBLIC_GROUP);
        }
        for group in &document.groups {
            doc.add_text(f.groups, group);
        }
        let heading = std::iter::once(document.title.as_str())
            .chain(chunk.heading_path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" \n ");
        doc.add_text(f.body, &chunk.text);
        doc.add_text(f.heading, &heading);
        doc.add_text(f.exact, &heading);
        doc.add_text(f.exact, &chunk.text);
        self.with_writer(|writer| Ok(writer.add_document(doc).map(|_| ())?))
    }

    /// Stages the replacement of every chunk of `document`; visible after [`Self::commit`].
    pub fn replace_document(
        &self,
        document: &DocumentRecord,
        chunks: &[ChunkRecord],
    ) -> Result<(), SearchError> {
        self.remove_document(document.id)?;
        for chunk in chunks {
            self.add_chunk(document, chunk)?;
        }
        Ok(())
    }

    /// Stages the removal of every chunk of a document.
    pub fn remove_document(&self, document: DocumentId) -> Result<(), SearchError> {
        let term = Term::from_field_u64(self.fields.document, document.0);
        self.with_writer(|writer| {
            writer.delete_term(term);
            Ok(())
        })
    }

    /// Commits staged changes, recording the store state they bring the index to.
    pub fn commit(&self, state: IndexState) -> Result<(), SearchError> {
        let payload = serde_json::to_string(&state).expect("state serialises");
        self.with_writer(|writer| {
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            Ok(())
        })?;
        self.reader.reload()?;
        Ok(())
    }

    /// Releases the writer (and its lock and memory) after an import.
    pub fn close_writer(&self) -> Result<(), SearchError> {
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(writer) = writer {
            writer.wait_merging_threads()?;
        }
        Ok(())
    }

    /// Top `limit` chunks for `text`, among documents visible to `groups` (plus public ones).
    pub fn search(
        &self,
        text: &str,
        groups: &[String],
        limit: usize,
    ) -> Result<Vec<LexicalHit>, SearchError> {
        let Some(query) = self.query(text, groups) else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit.max(1)).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = searcher.segment_reader(address.segment_ord).fast_fields().u64("chunk_key")?;
            let Some(key) = column.first(address.doc_id) else { continue };
            let (document, ordinal) = split_chunk_key(key);
            hits.push(LexicalHit { document, ordinal, score });
        }
        Ok(hits)
    }

    /// The scored part of a query (no group filter), for snippet highlighting.
    pub fn text_query(&self, text: &str) -> Option<Box<dyn Query>> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        // The heading (title and section names) says what a chunk is about; the exact field
        // lets codes and names match even when stemming would blur them.
        for (field, analyzer, boost) in
            [(f.body, STEMMED, 1.0), (f.heading, STEMMED, 0.6), (f.exact, EXACT, 0.3)]
        {
            let Some(mut analyzer) = self.index.tokenizers().get(analyzer) else { continue };
            for term in analysis::terms(&mut analyzer, text) {
                let query = TermQuery::new(Term::from_field_text(field, &term), IndexRecordOption::WithFreqs);
                clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(query), boost))));
            }
        }
        (!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
    }

    fn query(&self, text: &str, groups: &[String]) -> Option<Box<dyn Query>> {
        let scored = self.text_query(text)?;
        let allowed: Vec<(Occur, Box<dyn Query>)> = std::iter::once(PUBLIC_GROUP)
            .chain(groups.iter().map(String::as_str))
            .map(|g| {
                let term = Term::from_field_text(self.fields.groups, g);
                (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>)
            })
            .collect();
        let filter = ConstScoreQuery::new(Box::new(BooleanQuery::new(allowed)), 0.0);
        Some(Box::new(BooleanQuery::new(vec![(Occur::Must, scored), (Occur::Must, Box::new(filter))])))
    }

    /// For each of `texts`, a snippet around the words `query_text` matches, with highlight
    /// ranges. The snippet generator is built once per query, not once per hit.
    pub fn snippets(
        &self,
        query_text: &str,
        texts: &[&str],
        max_chars: usize,
    ) -> Result<Vec<Snippet>, SearchError> {
        let Some(query) = self.text_query(query_text) else {
            return Ok(texts.iter().map(|t| Snippet::plain(t, max_chars)).collect());
        };
        let searcher = self.reader.searcher();
        let mut generator = tantivy::snippet::SnippetGenerator::create(&searcher, &*query, self.fields.body)?;
        generator.set_max_num_chars(max_chars);
        Ok(texts
            .iter()
            .map(|text| {
                let snippet = generator.snippet(text);
                if snippet.fragment().is_empty() {
                    Snippet::plain(text, max_chars)
                } else {
                    Snippet {
                        text: snippet.fragment().to_owned(),
                        highlights: snippet.highlighted().to_vec(),
                    }
                }
            })
            .collect())
    }

    /// The question's stemmed terms with their inverse document frequency in the body field.
    /// A term no chunk contains gets the highest weight: a question whose key word appears
    /// nowhere in the knowledge base is unlikely to be answered by it.
    pub fn term_weights(&self, text: &str) -> Result<Vec<(String, f32)>, SearchError> {
        let Some(mut analyzer) = self.index.tokenizers().get(STEMMED) else { return Ok(Vec::new()) };
        let searcher = self.reader.searcher();
        let total = searcher.num_docs().max(1) as f32;
        let mut weights = Vec::new();
        for term in analysis::terms(&mut analyzer, text) {
            let frequency = searcher.doc_freq(&Term::from_field_text(self.fields.body, &term))? as f32;
            let idf = (1.0 + (total - frequency + 0.5) / (frequency + 0.5)).ln();
            weights.push((term, idf));
        }
        Ok(weights)
    }

    /// The share (by weight) of the question's terms that occur in `text`, by analysing it:
    /// for chunks the index does not hold (see [`Self::chunk_coverage`]).
    pub fn coverage(&self, weights: &[(String, f32)], text: &str) -> f32 {
        let total: f32 = weights.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return 0.0;
        }
        let Some(mut analyzer) = self.index.tokenizers().get(STEMMED) else { return 0.0 };
        let mut present = vec![false; weights.len()];
        let mut missing = weights.len();
        let mut stream = analyzer.token_stream(text);
        while missing > 0 && stream.advance() {
            let token = &stream.token().text;
            for (slot, (term, _)) in weights.iter().enumerate() {
                if !present[slot] && term == token {
                    present[slot] = true;
                    missing -= 1;
                }
            }
        }
        let matched: f32 = weights.iter().zip(&present).filter(|(_, p)| **p).map(|((_, w), _)| w).sum();
        matched / total
    }

    /// For each chunk, the share (by weight) of the question's terms found in its text, title or
    /// headings, read from the index's postings rather than by analysing the text again (which
    /// costs more than the search itself). `None` for a chunk the index does not hold.
    pub fn chunk_coverage(
        &self,
        weights: &[(String, f32)],
        chunks: &[(DocumentId, u32)],
    ) -> Result<Vec<Option<f32>>, SearchError> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        let mut matched: Vec<Option<f32>> = vec![None; chunks.len()];
        for segment in searcher.segment_readers() {
            // The live tantivy document of each chunk this segment holds, in document order.
            let keys = segment.inverted_index(f.chunk_key)?;
            let mut located: Vec<(DocId, usize)> = Vec::new();
            for (slot, &(document, ordinal)) in chunks.iter().enumerate() {
                if matched[slot].is_some() {
                    continue;
                }
                let key = Term::from_field_u64(f.chunk_key, chunk_key(document, ordinal));
                let postings = keys
                    .read_postings(&key, IndexRecordOption::Basic)
                    .map_err(|e| SearchError::io(&self.dir, e))?;
                let Some(mut postings) = postings else { continue };
                let mut doc = postings.doc();
                while doc != TERMINATED && segment.is_deleted(doc) {
                    doc = postings.advance();
                }
                if doc != TERMINATED {
                    located.push((doc, slot));
                    matched[slot] = Some(0.0);
                }
            }
            if located.is_empty() {
                continue;
            }
            located.sort_unstable();
            let fields = [segment.inverted_index(f.body)?, segment.inverted_index(f.heading)?];
            for (term, weight) in weights {
                let mut contains = vec![false; located.len()];
                for (index, field) in fields.iter().zip([f.body, f.heading]) {
                    let term = Term::from_field_text(field, term);
                    let postings = index
                        .read_postings(&term, IndexRecordOption::Basic)
                        .map_err(|e| SearchError::io(&self.dir, e))?;
                    let Some(mut postings) = postings else { continue };
                    for (found, &(doc, _)) in contains.iter_mut().zip(&located) {
                        let at = if postings.doc() >= doc { postings.doc() } else { postings.seek(doc) };
                        *found |= at == doc;
                    }
                }
                for (found, &(_, slot)) in contains.iter().zip(&located) {
                    if let (true, Some(sum)) = (*found, matched[slot].as_mut()) {
                        *sum += weight;
                    }
                }
            }
        }
        let total: f32 = weights.iter().map(|(_, w)| w).sum();
        Ok(matched.into_iter().map(|m| m.map(|m| if total > 0.0 { m / total } else { 0.0 })).collect())
    }

    /// Number of indexed chunks.
    pub fn num_chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes the index occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        walkdir::WalkDir::new(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

/// A passage of a chunk with the byte ranges of matched words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snippet {
    pub text: String,
    pub highlights: Vec<std::ops::Range<usize>>,
}

impl Snippet {
    fn plain(text: &str, max_chars: usize) -> Snippet {
        let end = text.char_indices().nth(max_chars).map_or(text.len(), |(i, _)| i);
        Snippet { text: text[..end].to_owned(), highlights: Vec::new() }
    }

    /// The snippet with each highlighted range wrapped in `open` and `close`.
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + self.highlights.len() * 8);
        let mut at = 0;
        for range in &self.highlights {
            out.push_str(&self.text[at..range.start]);
            out.push_str(open);
            out.push_str(&self.text[range.clone()]);
            out.push_str(close);
            at = range.end;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), SearchError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SearchError::io(dir, e)),
        _ => Ok(()),
    }
}
