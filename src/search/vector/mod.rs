//! The dense leg's index, derived from the embeddings in the store and held in memory.
//!
//! Vectors live in one contiguous row-major matrix, so an exact scan is a tight dot-product
//! loop. Above `exact_scan_limit` live vectors an HNSW graph (hnsw_rs, SIMD distances) answers
//! instead. Access groups are checked for every candidate *inside* the search — the scan skips
//! forbidden rows, the graph search takes a filter — so a top-k cut never hides permitted hits.
//! Neither structure deletes: replaced and removed chunks become tombstones, skipped in both
//! paths, and the matrix and graph are rebuilt once tombstones pass a fifth of the rows.
//!
//! With a multilingual model the index can *balance languages*. Such a model places texts of one
//! language nearer to each other than to texts of another, whatever they say: every vector
//! carries a large component shared by its whole language, so a Russian question ranks every
//! Russian chunk above the English one that answers it. Balancing *centres* each language: the
//! index keeps the mean `c(L)` of each language's chunk vectors, takes `α·c(L)` off every chunk
//! of language `L` and off the question (by the question's language), and ranks by the cosine of
//! what remains — `cos(q − α·c(Lq), p − α·c(Lp))`. What remains is what the text says rather
//! than which language it says it in, so translations meet and a passage no longer scores high
//! only for sharing the question's language. Unlike subtracting the question's mean similarity
//! to each language (the earlier rule), centring also reorders chunks *within* a language —
//! those made mostly of the language's common component stop crowding out specific ones — and
//! on the benchmark it gained in every direction at once (docs/quality.md).
//!
//! The strength `α` is `search.language_balance` (0: raw cosine). The means are kept as running
//! sums, so they follow every import and removal; the centres and each chunk's centred length
//! are refreshed from them once the means have moved by more than `CENTRE_TOLERANCE`. Hits
//! report the raw cosine and the *margin* — the cosine less the question's mean similarity to the
//! chunk's language, how far the chunk stands out from everything else in its language — which
//! the answer floors use.

use std::collections::{BinaryHeap, HashMap};

use hnsw_rs::anndists::dist::DistDot;
use hnsw_rs::hnsw::Hnsw;

use super::lexical::PUBLIC_GROUP;
use crate::store::{DocumentId, DocumentRecord, Language, Store, StoreError};

mod languages;
mod shared;

use languages::{LANGUAGES, language_slot};
pub use shared::SharedVectors;

/// HNSW parameters: neighbours per node, construction and search breadth.
const HNSW_M: usize = 16;
const HNSW_EF_CONSTRUCTION: usize = 100;
const HNSW_EF_SEARCH: usize = 64;
const HNSW_MAX_LAYERS: usize = 16;
/// Rebuild when this share of rows are tombstones.
const TOMBSTONE_REBUILD_RATIO: f64 = 0.2;
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    pub document: DocumentId,
    pub ordinal: u32,
    /// What hits are ranked by: the cosine similarity, or with languages balanced the cosine of
    /// the question and the chunk with their languages' centres taken off.
    pub score: f32,
    /// Cosine similarity (vectors are normalised).
    pub cosine: f32,
    /// The cosine less the query's mean similarity to the chunk's language.
    pub margin: f32,
}

#[derive(Debug, Clone)]
struct Row {
    document: DocumentId,
    ordinal: u32,
    /// Interned group ids; `0` is the public group.
    groups: Vec<u32>,
    /// Slot of the document's language in `LANGUAGES`.
    language: u8,
}

/// Which algorithm answers queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorStrategy {
    Exact,
    Hnsw,
}

pub struct VectorIndex {
    dimension: usize,
    exact_scan_limit: usize,
    rows: Vec<Row>,
    data: Vec<f32>,
    alive: Vec<bool>,
    dead: usize,
    by_document: HashMap<DocumentId, Vec<usize>>,
    group_ids: HashMap<String, u32>,
    graph: Option<Hnsw<'static, f32, DistDot>>,
    /// The share `α` of each language's mean vector taken off chunks and queries.
    balance: f32,
    /// Per language: the sum of its live vectors and their count.
    language_sums: Vec<(Vec<f64>, usize)>,
    /// Per language: `α` times its mean as of the last refresh (zeros when not balancing).
    centres: Vec<Vec<f32>>,
    /// The language means the centres were taken from, to tell when they have moved.
    centred_means: Vec<Vec<f64>>,
    /// Per row: the length of the chunk's vector less its language's centre.
    centred_lengths: Vec<f32>,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dimension", &self.dimension)
            .field("live", &self.len())
            .field("tombstones", &self.dead)
            .field("strategy", &self.strategy())
            .finish()
    }
}

impl VectorIndex {
    pub fn new(dimension: usize, exact_scan_limit: usize) -> VectorIndex {
        let mut group_ids = HashMap::new();
        group_ids.insert(PUBLIC_GROUP.to_owned(), 0);
        VectorIndex {
            dimension,
            exact_scan_limit,
            rows: Vec::new(),
            data: Vec::new(),
            alive: Vec::new(),
            dead: 0,
            by_document: HashMap::new(),
            group_ids,
            graph: None,
            balance: 0.0,
            language_sums: vec![(vec![0.0; dimension], 0); LANGUAGES.len()],
            centres: vec![vec![0.0; dimension]; LANGUAGES.len()],
            centred_means: vec![vec![0.0; dimension]; LANGUAGES.len()],
            centred_lengths: Vec::new(),
        }
    }

    /// Loads every embedding of the store's current model.
    pub fn load(store: &Store, dimension: usize, exact_scan_limit: usize) -> Result<VectorIndex, StoreError> {
        let mut index = VectorIndex::new(dimension, exact_scan_limit);
        let mut wrong_dimension = None;
        store.for_each_embedding(|document, ordinal, vector| {
            if vector.len() != dimension {
                wrong_dimension = Some(vector.len());
                return;
            }
            index.push(document, ordinal, vector);
        })?;
        if let Some(found) = wrong_dimension {
            return Err(StoreError::EmbeddingModelMismatch {
                stored: format!("{found}-dimensional"),
                configured: format!("a {dimension}-dimensional model"),
            });
        }
        index.maintain();
        Ok(index)
    }

    /// Changes the size above which the graph is used, building or dropping it as needed.
    pub fn set_exact_scan_limit(&mut self, limit: usize) {
        self.exact_scan_limit = limit;
        self.maintain();
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.rows.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tombstones(&self) -> usize {
        self.dead
    }

    pub fn strategy(&self) -> VectorStrategy {
        if self.graph.is_some() { VectorStrategy::Hnsw } else { VectorStrategy::Exact }
    }

    /// Bytes held by vectors and row metadata (not counting the graph's own structure).
    pub fn memory_bytes(&self) -> usize {
        self.data.len() * 4 + self.rows.len() * std::mem::size_of::<Row>()
    }

    fn intern(&mut self, group: &str) -> u32 {
        let next = self.group_ids.len() as u32;
        *self.group_ids.entry(group.to_owned()).or_insert(next)
    }

    fn push(&mut self, document: &DocumentRecord, ordinal: u32, vector: &[f32]) {
        let groups = if document.groups.is_empty() {
            vec![0]
        } else {
            document.groups.iter().map(|g| self.intern(g)).collect()
        };
        let row = self.rows.len();
        self.rows.push(Row {
            document: document.id,
            ordinal,
            groups,
            language: language_slot(document.language),
        });
        self.data.extend_from_slice(vector);
        self.alive.push(true);
        self.account(row, 1.0);
        self.centred_lengths.push(self.centred_length(row));
        self.by_document.entry(document.id).or_default().push(row);
        if let Some(graph) = &self.graph {
            graph.insert_slice((vector, row));
        }
    }

    /// Replaces a document's vectors (its groups may have changed too).
    pub fn replace_document(&mut self, document: &DocumentRecord, vectors: &[(u32, Vec<f32>)]) {
        self.remove_document(document.id);
        for (ordinal, vector) in vectors {
            self.push(document, *ordinal, vector);
        }
        self.maintain();
    }

    /// Updates the access groups of a document's rows in place.
    pub fn set_groups(&mut self, document: &DocumentRecord) {
        let groups: Vec<u32> = if document.groups.is_empty() {
            vec![0]
        } else {
            document.groups.iter().map(|g| self.intern(g)).collect()
        };
        for &row in self.by_document.get(&document.id).into_iter().flatten() {
            self.rows[row].groups = groups.clone();
        }
    }

    pub fn remove_document(&mut self, document: DocumentId) {
        if let Some(rows) = self.by_document.remove(&document) {
            for row in rows {
                if std::mem::replace(&mut self.alive[row], false) {
                    self.dead += 1;
                    self.account(row, -1.0);
                }
            }
        }
        self.maintain();
    }

    /// Compacts away tombstones when there are many, and switches between exact scan and the
    /// graph as the collection crosses the limit.
    fn maintain(&mut self) {
        let compact = self.dead > 0 && self.dead as f64 >= self.rows.len() as f64 * TOMBSTONE_REBUILD_RATIO;
        if compact {
            self.compact();
        }
        self.refresh_centres(compact);
        let want_graph = self.len() > self.exact_scan_limit;
        if want_graph && (self.graph.is_none() || compact) {
            self.build_graph();
        } else if !want_graph {
            self.graph = None;
        }
    }

    fn compact(&mut self) {
        let dimension = self.dimension;
        let mut rows = Vec::with_capacity(self.len());
        let mut data = Vec::with_capacity(self.len() * dimension);
        let mut by_document: HashMap<DocumentId, Vec<usize>> = HashMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            if !self.alive[i] {
                continue;
            }
            by_document.entry(row.document).or_default().push(rows.len());
            rows.push(row.clone());
            data.extend_from_slice(&self.data[i * dimension..(i + 1) * dimension]);
        }
        self.alive = vec![true; rows.len()];
        self.rows = rows;
        self.data = data;
        self.by_document = by_document;
        self.dead = 0;
        // Recount the language sums from scratch, shedding any rounding the running sums gathered.
        self.language_sums = vec![(vec![0.0; dimension], 0); LANGUAGES.len()];
        for row in 0..self.rows.len() {
            self.account(row, 1.0);
        }
    }

    fn build_graph(&mut self) {
        let started = std::time::Instant::now();
        let graph = Hnsw::<f32, DistDot>::new(
            HNSW_M,
            self.rows.len().max(1),
            HNSW_MAX_LAYERS,
            HNSW_EF_CONSTRUCTION,
            DistDot,
        );
        let items: Vec<(&[f32], usize)> = (0..self.rows.len())
            .filter(|&i| self.alive[i])
            .map(|i| (&self.data[i * self.dimension..(i + 1) * self.dimension], i))
            .collect();
        graph.parallel_insert_slice(&items);
        tracing::info!(
            vectors = items.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built the HNSW graph"
        );
        self.graph = Some(graph);
    }

    fn allowed_ids(&self, groups: &[String]) -> Vec<u32> {
        let mut ids = vec![0];
        ids.extend(groups.iter().filter_map(|g| self.group_ids.get(g).copied()));
        ids
    }

    fn permitted(&self, row: usize, allowed: &[u32]) -> bool {
        self.alive[row] && self.rows[row].groups.iter().any(|g| allowed.contains(g))
    }

    /// The `limit` nearest chunks to `query`, a question in `language`, visible to `groups`
    /// (public ones always are).
    pub fn search(
        &self,
        query: &[f32],
        language: Language,
        groups: &[String],
        limit: usize,
    ) -> Vec<VectorHit> {
        if query.len() != self.dimension || limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let allowed = self.allowed_ids(groups);
        let means = self.language_means(query);
        let centred = self.centre_query(query, language);
        // Per language, the centred query's similarity to the language's centre: a row's score is
        // (q'·p − q'·c(L)) / |p − c(L)|, one dot product per row as for the raw cosine.
        let offsets: Vec<f32> = self.centres.iter().map(|centre| dot(&centred, centre)).collect();
        let score = |row: usize, product: f32| {
            (product - offsets[self.rows[row].language as usize]) / self.centred_lengths[row]
        };
        let scored: Vec<(usize, f32)> = match &self.graph {
            Some(graph) => {
                // One filtered graph search per language present, so each language's best chunks
                // are found before centring reorders them; the graph ranks by the centred query's
                // dot product, so twice as many are taken and scored exactly.
                let ef = HNSW_EF_SEARCH.max(limit * 4);
                let languages: Vec<Option<u8>> = if self.balance > 0.0 {
                    (0..LANGUAGES.len() as u8)
                        .filter(|&l| self.language_sums[l as usize].1 > 0)
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                let mut found: Vec<(usize, f32)> = Vec::new();
                for language in languages {
                    let filter = |id: &usize| {
                        self.permitted(*id, &allowed) && language.is_none_or(|l| self.rows[*id].language == l)
                    };
                    found.extend(
                        graph
                            .search_filter(&centred, limit * 2, ef, Some(&filter))
                            .into_iter()
                            .map(|n| (n.d_id, score(n.d_id, 1.0 - n.distance))),
                    );
                }
                found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                found.truncate(limit);
                found
            }
            None => self.scan(&centred, &allowed, score, limit),
        };
        scored
            .into_iter()
            .map(|(row, score)| {
                let language = self.rows[row].language as usize;
                let cosine = dot(query, &self.data[row * self.dimension..(row + 1) * self.dimension]);
                VectorHit {
                    document: self.rows[row].document,
                    ordinal: self.rows[row].ordinal,
                    score,
                    cosine,
                    margin: cosine - means[language],
                }
            })
            .collect()
    }

    /// Exact top-k over permitted rows by `score(row, query·row)`, best first.
    fn scan(
        &self,
        query: &[f32],
        allowed: &[u32],
        score: impl Fn(usize, f32) -> f32,
        limit: usize,
    ) -> Vec<(usize, f32)> {
        // Min-heap of the best `limit` so far, keyed by score.
        let mut best: BinaryHeap<std::cmp::Reverse<(OrderedScore, usize)>> =
            BinaryHeap::with_capacity(limit + 1);
        for (row, vector) in self.data.chunks_exact(self.dimension).enumerate() {
            if !self.permitted(row, allowed) {
                continue;
            }
            let score = score(row, dot(query, vector));
            if best.len() < limit {
                best.push(std::cmp::Reverse((OrderedScore(score), row)));
            } else if let Some(std::cmp::Reverse((worst, _))) = best.peek()
                && score > worst.0
            {
                best.pop();
                best.push(std::cmp::Reverse((OrderedScore(score), row)));
            }
        }
        let mut out: Vec<(usize, f32)> =
            best.into_iter().map(|std::cmp::Reverse((s, row))| (row, s.0)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// Dot product written so the compiler vectorises it (eight independent accumulators).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for lane in 0..8 {
            acc[lane] += a[i * 8 + lane] * b[i * 8 + lane];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedScore(f32);

impl Eq for OrderedScore {}

impl PartialOrd for OrderedScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedScore {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests;
