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
//! language nearer to each other than to texts of another, whatever they say, so a Russian
//! question ranks every Russian chunk above the English one that answers it. Balancing ranks
//! each chunk by `q·p − q·c(L)`, where `c(L)` is the mean of the vectors of the chunk's language
//! `L` — the query's mean similarity to that language, which is exactly the language's shared
//! component. Within one language the order is unchanged; across languages, chunks compete on
//! what they say. The means are kept as running sums, so they follow every import and removal.
//!
//! The correction is applied at a *strength* between 0 and 1 (`search.language_balance`): at
//! full strength it lifts every other-language chunk so far that, on real documents, a Russian
//! question's right Russian passage dropped from 0.82 to 0.63 in the first five, while the
//! answers that exist only in the other language gained less (docs/quality.md); half strength
//! keeps most of both. Hits report the raw cosine and the *margin* — the cosine less the query's
//! mean similarity to the chunk's language at full strength, how far the chunk stands out from
//! everything else in its language — which the answer floors use.

use std::collections::{BinaryHeap, HashMap};

use hnsw_rs::anndists::dist::DistDot;
use hnsw_rs::hnsw::Hnsw;

use super::lexical::PUBLIC_GROUP;
use crate::store::{DocumentId, DocumentRecord, Language, Store, StoreError};

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
    /// What hits are ranked by: the cosine similarity, less the query's mean similarity to the
    /// chunk's language when languages are balanced.
    pub score: f32,
    /// Cosine similarity (vectors are normalised).
    pub cosine: f32,
    /// The cosine less the query's mean similarity to the chunk's language.
    pub margin: f32,
}

/// Languages whose chunks are balanced against each other, as row slots.
const LANGUAGES: [Language; 2] = [Language::Ru, Language::En];

fn language_slot(language: Language) -> u8 {
    LANGUAGES.iter().position(|&l| l == language).expect("every language has a slot") as u8
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
    /// How much of the query's mean similarity to a chunk's language is taken off its score.
    balance: f32,
    /// Per language: the sum of its live vectors and their count.
    language_sums: Vec<(Vec<f64>, usize)>,
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
        }
    }

    /// Ranks chunks of different languages more by what they say than by their language, at
    /// `strength` (0: raw cosine; 1: fully balanced; see the module's documentation); for
    /// multilingual models.
    pub fn balance_languages(mut self, strength: f32) -> VectorIndex {
        self.balance = strength.clamp(0.0, 1.0);
        self
    }

    fn account(&mut self, row: usize, sign: f64) {
        let (sum, count) = &mut self.language_sums[self.rows[row].language as usize];
        for (s, v) in sum.iter_mut().zip(&self.data[row * self.dimension..(row + 1) * self.dimension]) {
            *s += sign * f64::from(*v);
        }
        if sign > 0.0 {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    /// The query's mean similarity to each language's chunks.
    fn language_means(&self, query: &[f32]) -> Vec<f32> {
        self.language_sums
            .iter()
            .map(|(sum, count)| {
                if *count == 0 {
                    return 0.0;
                }
                let dot: f64 = sum.iter().zip(query).map(|(s, q)| s * f64::from(*q)).sum();
                (dot / *count as f64) as f32
            })
            .collect()
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

    /// The `limit` nearest chunks to `query` visible to `groups` (public ones always are).
    pub fn search(&self, query: &[f32], groups: &[String], limit: usize) -> Vec<VectorHit> {
        if query.len() != self.dimension || limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let allowed = self.allowed_ids(groups);
        let means = self.language_means(query);
        let offsets: Vec<f32> = means.iter().map(|m| m * self.balance).collect();
        let scored: Vec<(usize, f32)> = match &self.graph {
            Some(graph) => {
                // One filtered graph search per language present, so each language's best
                // chunks are found before the offsets reorder them.
                let ef = HNSW_EF_SEARCH.max(limit * 2);
                let mut found: Vec<(usize, f32)> = Vec::new();
                let languages: Vec<Option<u8>> = if self.balance > 0.0 {
                    (0..LANGUAGES.len() as u8)
                        .filter(|&l| self.language_sums[l as usize].1 > 0)
                        .map(Some)
                        .collect()
                } else {
                    vec![None]
                };
                for language in languages {
                    let filter = |id: &usize| {
                        self.permitted(*id, &allowed) && language.is_none_or(|l| self.rows[*id].language == l)
                    };
                    found.extend(
                        graph
                            .search_filter(query, limit, ef, Some(&filter))
                            .into_iter()
                            .map(|n| (n.d_id, 1.0 - n.distance)),
                    );
                }
                for (row, score) in &mut found {
                    *score -= offsets[self.rows[*row].language as usize];
                }
                found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                found.truncate(limit);
                found
            }
            None => self.scan(query, &allowed, &offsets, limit),
        };
        scored
            .into_iter()
            .map(|(row, score)| {
                let language = self.rows[row].language as usize;
                let cosine = score + offsets[language];
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

    /// Exact top-k by dot product less the language offset over permitted rows, best first.
    fn scan(&self, query: &[f32], allowed: &[u32], offsets: &[f32], limit: usize) -> Vec<(usize, f32)> {
        // Min-heap of the best `limit` so far, keyed by score.
        let mut best: BinaryHeap<std::cmp::Reverse<(OrderedScore, usize)>> =
            BinaryHeap::with_capacity(limit + 1);
        for (row, vector) in self.data.chunks_exact(self.dimension).enumerate() {
            if !self.permitted(row, allowed) {
                continue;
            }
            let score = dot(query, vector) - offsets[self.rows[row].language as usize];
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
mod tests {
    use super::*;
    use crate::store::{Format, Language};

    fn document(id: u64, groups: &[&str]) -> DocumentRecord {
        DocumentRecord {
            id: DocumentId(id),
            root: "/".into(),
            source: format!("{id}.md"),
            title: String::new(),
            language: Language::En,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            content_hash: String::new(),
            pipeline: String::new(),
            format: Format::Markdown,
            size: 0,
            imported_at: 0,
            updated_at: 0,
            chunk_count: 1,
        }
    }

    fn unit(seed: u64, dimension: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dimension)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / u32::MAX as f32) - 0.25
            })
            .collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        v
    }

    fn index_with(limit: usize, docs: u64) -> VectorIndex {
        let mut index = VectorIndex::new(16, limit);
        for id in 1..=docs {
            let groups: &[&str] = if id % 3 == 0 { &["board"] } else { &[] };
            index.replace_document(&document(id, groups), &[(0, unit(id, 16))]);
        }
        index
    }

    #[test]
    fn exact_scan_and_graph_agree_and_respect_groups() {
        let exact = index_with(10_000, 600);
        let graph = index_with(100, 600);
        assert_eq!((exact.strategy(), graph.strategy()), (VectorStrategy::Exact, VectorStrategy::Hnsw));
        for seed in [5u64, 77, 301] {
            let query = unit(seed, 16);
            let a = exact.search(&query, &[], 5);
            let b = graph.search(&query, &[], 5);
            assert_eq!(
                a.iter().map(|h| h.document).collect::<Vec<_>>(),
                b.iter().map(|h| h.document).collect::<Vec<_>>()
            );
            assert!(a.iter().all(|h| h.document.0 % 3 != 0), "board documents leaked");
            assert_eq!(a[0].document, DocumentId(seed), "a vector is its own nearest neighbour");
        }
        let hits = exact.search(&unit(300, 16), &["board".into()], 1);
        assert_eq!(hits[0].document, DocumentId(300));
        assert!((hits[0].score - 1.0).abs() < 1e-5);
    }

    #[test]
    fn balancing_strength_scales_the_language_offset_and_margins_are_against_the_mean() {
        let mut russian = document(1, &[]);
        russian.language = Language::Ru;
        let vectors: Vec<(DocumentRecord, Vec<f32>)> =
            vec![(russian, unit(1, 16)), (document(2, &[]), unit(2, 16)), (document(3, &[]), unit(3, 16))];
        let query = unit(7, 16);
        let mean =
            |ids: &[usize]| ids.iter().map(|&i| dot(&query, &vectors[i].1)).sum::<f32>() / ids.len() as f32;
        let (ru_mean, en_mean) = (mean(&[0]), mean(&[1, 2]));
        for strength in [0.0, 0.5, 1.0] {
            let mut index = VectorIndex::new(16, 10_000).balance_languages(strength);
            for (record, vector) in &vectors {
                index.replace_document(record, &[(0, vector.clone())]);
            }
            for hit in index.search(&query, &[], 3) {
                let i = hit.document.0 as usize - 1;
                let language_mean = if i == 0 { ru_mean } else { en_mean };
                let cosine = dot(&query, &vectors[i].1);
                assert!((hit.cosine - cosine).abs() < 1e-5);
                assert!(
                    (hit.score - (cosine - strength * language_mean)).abs() < 1e-5,
                    "strength {strength}"
                );
                assert!((hit.margin - (cosine - language_mean)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn tombstones_hide_removed_vectors_and_compact() {
        let mut index = index_with(10_000, 10);
        index.remove_document(DocumentId(4));
        assert!(index.search(&unit(4, 16), &[], 10).iter().all(|h| h.document != DocumentId(4)));
        assert_eq!(index.len(), 9);
        index.remove_document(DocumentId(5));
        // 2 of 10 rows are dead: compacted.
        assert_eq!(index.tombstones(), 0);
        assert_eq!(index.search(&unit(7, 16), &[], 1)[0].document, DocumentId(7));
    }
}
