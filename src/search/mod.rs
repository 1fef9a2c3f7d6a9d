//! Search over the knowledge base: a full-text leg (tantivy, [`lexical`]) and a dense leg
//! (embeddings, [`vector`]) fused into one ranking, resolved against the store into hits that
//! carry everything a citation needs. Access groups are applied inside each leg; deleted
//! documents leave both legs at the commit that records their removal. The dense leg is skipped
//! for a question in a language the model does not serve, so it can never drown good full-text
//! hits with noise.

pub mod analysis;
pub mod lexical;
mod settings;
mod shared_lexical;
pub mod vector;

use std::path::PathBuf;

use serde::Serialize;

use crate::embed::Embedder;
use crate::store::{DocumentId, Language, Store};
pub use lexical::{LexicalIndex, OpenOutcome, Snippet};
pub use settings::{Fusion, SearchMode, SearchSettings};
pub use shared_lexical::SharedLexical;
pub use vector::{SharedVectors, VectorIndex};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("full-text index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("full-text index does not match: {0}")]
    IndexMismatch(String),
    #[error("full-text index is damaged: {0}")]
    IndexDamaged(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the question is empty")]
    EmptyQuery,
    #[error(transparent)]
    InvalidGroup(#[from] crate::access::InvalidGroup),
    #[error("dense search needs an embedding model, but embed.model is \"none\"")]
    NoModel,
}

impl SearchError {
    pub fn is_user_error(&self) -> bool {
        matches!(self, SearchError::EmptyQuery | SearchError::InvalidGroup(_) | SearchError::NoModel)
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SearchError::Io { path: path.to_owned(), source }
    }
}

impl From<tantivy::directory::error::OpenReadError> for SearchError {
    fn from(e: tantivy::directory::error::OpenReadError) -> Self {
        SearchError::Index(e.into())
    }
}

/// A question to the knowledge base.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub k: usize,
    /// Access groups the asker belongs to; documents without groups are always visible.
    pub groups: Vec<String>,
    /// Which legs to use; `None` means the configured default.
    pub mode: Option<SearchMode>,
    /// Whether hits carry a highlighted snippet, for showing to a person (`sputnik search`).
    /// Answers draw on whole chunks and skip them: snippets cost more than the search.
    pub snippets: bool,
}

/// One ranked chunk with its citation.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub rank: usize,
    /// The fused score (RRF or weighted), or the single leg's score.
    pub score: f32,
    /// 1-based rank in each leg's own list, where the chunk appeared there.
    pub lexical_rank: Option<usize>,
    pub dense_rank: Option<usize>,
    /// Each leg's own score: BM25, and cosine similarity.
    pub lexical_score: Option<f32>,
    pub dense_score: Option<f32>,
    /// The cosine less the question's mean similarity to the chunk's language: how far the
    /// chunk stands out from the rest of its language.
    pub dense_margin: Option<f32>,
    /// Share of the question's words (weighted by rarity) that this chunk contains, title and
    /// headings included.
    pub term_coverage: f32,
    pub document_id: DocumentId,
    pub title: String,
    pub heading_path: Vec<String>,
    /// Path relative to the directory it was imported from.
    pub source: String,
    pub language: Language,
    pub chunk: u32,
    /// A passage around the matched words, when the request asked for snippets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<Snippet>,
    /// The chunk's whole text, for composing answers.
    #[serde(skip)]
    pub text: String,
}

/// A search's hits and how they were found.
#[derive(Debug, Clone, Serialize)]
pub struct SearchOutcome {
    pub query: String,
    pub language: Language,
    pub mode: SearchMode,
    /// Why the dense leg did not run, when the mode asked for it.
    pub dense_skipped: Option<String>,
    pub hits: Vec<SearchHit>,
}

/// A fused candidate before it is resolved against the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub document: DocumentId,
    pub ordinal: u32,
    pub score: f32,
    pub lexical_rank: Option<usize>,
    pub dense_rank: Option<usize>,
    pub lexical_score: Option<f32>,
    pub dense_score: Option<f32>,
    pub dense_margin: Option<f32>,
}

/// Everything retrieval reads, from the open knowledge base: the full-text index as it stood
/// when the retriever was made, the shared vector index (read-locked for each scan only).
#[derive(Debug, Clone)]
pub struct Retriever<'a> {
    pub store: &'a Store,
    pub lexical: std::sync::Arc<LexicalIndex>,
    pub vectors: &'a SharedVectors,
    pub embedder: Option<&'a Embedder>,
    pub settings: &'a SearchSettings,
    /// Why there is no dense leg, when the vector index or the embedder is absent.
    pub dense_unavailable: Option<String>,
}

/// The ranked candidates of one retrieval, with why the dense leg was skipped if it was.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub language: Language,
    pub candidates: Vec<Candidate>,
    pub dense_skipped: Option<String>,
}

impl Retriever<'_> {
    /// Runs the legs `mode` asks for, each `depth` deep, and fuses them.
    pub fn retrieve(
        &self,
        query: &str,
        groups: &[String],
        depth: usize,
        mode: SearchMode,
    ) -> Result<Retrieved, crate::Error> {
        let language = crate::lang::detect(query);
        let lexical = match mode {
            SearchMode::Dense => Vec::new(),
            _ => {
                let _timer = crate::metrics::time(crate::metrics::Stage::Lexical);
                self.lexical.search(query, groups, depth)?
            }
        };
        let mut dense_skipped = None;
        let unavailable =
            || self.dense_unavailable.clone().unwrap_or_else(|| "no embedding model is configured".into());
        let dense = match (mode, self.embedder) {
            (SearchMode::Lexical, _) => Vec::new(),
            (SearchMode::Dense, None) => {
                return Err(match &self.dense_unavailable {
                    Some(reason) => crate::Error::Usage(reason.clone()),
                    None => SearchError::NoModel.into(),
                });
            }
            (_, Some(embedder)) if !embedder.profile().serves(language) => {
                dense_skipped = Some(format!(
                    "{} does not serve {} questions; full-text results only",
                    embedder.profile().name,
                    language.code()
                ));
                Vec::new()
            }
            (_, Some(embedder)) if self.vectors.is_present() => {
                // The model runs with no lock held; the vector index is read-locked for the scan.
                let query_vector = {
                    let _timer = crate::metrics::time(crate::metrics::Stage::Embed);
                    embedder.embed_query(query)?
                };
                let _timer = crate::metrics::time(crate::metrics::Stage::Dense);
                match self.vectors.search(&query_vector, language, groups, depth) {
                    Some(hits) => hits,
                    None if mode == SearchMode::Dense => return Err(crate::Error::Usage(unavailable())),
                    None => {
                        dense_skipped = Some(unavailable());
                        Vec::new()
                    }
                }
            }
            (SearchMode::Dense, Some(_)) => return Err(crate::Error::Usage(unavailable())),
            (_, _) => {
                dense_skipped = Some(unavailable());
                Vec::new()
            }
        };
        let _timer = crate::metrics::time(crate::metrics::Stage::Fuse);
        let mut lexical: Vec<(DocumentId, u32, f32)> =
            lexical.iter().map(|h| (h.document, h.ordinal, h.score)).collect();
        if !dense.is_empty() && self.settings.lexical_min_coverage > 0.0 {
            self.drop_weak_word_matches(query, &mut lexical)?;
        }
        let cosines: std::collections::HashMap<(DocumentId, u32), (f32, f32)> =
            dense.iter().map(|h| ((h.document, h.ordinal), (h.cosine, h.margin))).collect();
        let dense: Vec<(DocumentId, u32, f32)> =
            dense.iter().map(|h| (h.document, h.ordinal, h.score)).collect();
        let mut candidates = fuse(&lexical, &dense, self.settings);
        // Ranked by the balanced score; reported (and held to the answer floor) as cosine.
        for candidate in &mut candidates {
            if candidate.dense_score.is_some() {
                let found = cosines.get(&(candidate.document, candidate.ordinal));
                candidate.dense_score = found.map(|f| f.0);
                candidate.dense_margin = found.map(|f| f.1);
            }
        }
        Ok(Retrieved { language, candidates, dense_skipped })
    }

    /// Keeps the full-text hits that hold enough of the question's words (rarity-weighted). A
    /// hit matching one common word of a longer question is weak evidence; in hybrid search it
    /// would outvote the meaning leg — worst when the answer is in another language, where the
    /// words cannot match at all.
    fn drop_weak_word_matches(
        &self,
        query: &str,
        lexical: &mut Vec<(DocumentId, u32, f32)>,
    ) -> Result<(), crate::Error> {
        let keys: Vec<_> = lexical.iter().map(|&(d, o, _)| (d, o)).collect();
        let weights = self.lexical.term_weights(query)?;
        // A hit the index no longer holds was deleted since it was found: dropped too.
        let mut keep = self
            .lexical
            .chunk_coverage(&weights, &keys)?
            .into_iter()
            .map(|coverage| coverage.is_some_and(|c| c >= self.settings.lexical_min_coverage));
        lexical.retain(|_| keep.next().unwrap_or(false));
        Ok(())
    }

    /// Term coverage of resolved chunks: from the index, or from the text for a chunk the
    /// index does not hold.
    fn coverage(
        &self,
        weights: &[(String, f32)],
        chunks: &[(crate::store::DocumentRecord, crate::store::ChunkRecord)],
    ) -> Result<Vec<f32>, crate::Error> {
        let keys: Vec<_> = chunks.iter().map(|(document, chunk)| (document.id, chunk.ordinal)).collect();
        let from_index = self.lexical.chunk_coverage(weights, &keys)?;
        Ok(chunks
            .iter()
            .zip(from_index)
            .map(|((document, chunk), coverage)| {
                coverage.unwrap_or_else(|| {
                    let context =
                        format!("{}\n{}\n{}", document.title, chunk.heading_path.join("\n"), chunk.text);
                    self.lexical.coverage(weights, &context)
                })
            })
            .collect())
    }

    /// Share of `query`'s words (weighted by rarity) each stored passage holds.
    pub fn coverage_of(&self, query: &str, keys: &[(DocumentId, u32)]) -> Result<Vec<f32>, crate::Error> {
        let weights = self.lexical.term_weights(query)?;
        let found = self.store.chunks_with_documents(keys)?;
        let present: Vec<_> = found.iter().flatten().cloned().collect();
        let mut coverage = self.coverage(&weights, &present)?.into_iter();
        Ok(found.iter().map(|f| if f.is_some() { coverage.next().unwrap_or(0.0) } else { 0.0 }).collect())
    }

    /// Runs `request` and resolves the top hits through the store (with snippets if asked).
    pub fn search(&self, request: &SearchRequest) -> Result<SearchOutcome, crate::Error> {
        if request.query.trim().is_empty() {
            return Err(SearchError::EmptyQuery.into());
        }
        let mode = request.mode.unwrap_or(self.settings.mode);
        let retrieved = self.retrieve(&request.query, &request.groups, search_depth(request.k), mode)?;
        self.resolve(&request.query, mode, retrieved, request.k, request.snippets)
    }

    /// The top `k` of `retrieved` resolved through the store into hits (with snippets if asked).
    pub fn resolve(
        &self,
        query: &str,
        mode: SearchMode,
        mut retrieved: Retrieved,
        k: usize,
        snippets: bool,
    ) -> Result<SearchOutcome, crate::Error> {
        retrieved.candidates.truncate(k);
        let keys: Vec<_> = retrieved.candidates.iter().map(|c| (c.document, c.ordinal)).collect();
        let resolved = self.store.chunks_with_documents(&keys)?;
        // The indexes are committed after the store, so a chunk can only be missing here if the
        // store changed underneath a long-lived reader; skip it rather than cite nothing.
        let (candidates, found): (Vec<&Candidate>, Vec<_>) =
            retrieved.candidates.iter().zip(resolved).filter_map(|(c, found)| found.map(|f| (c, f))).unzip();
        let snippets: Vec<Option<Snippet>> = if snippets {
            let texts: Vec<&str> = found.iter().map(|(_, chunk)| chunk.text.as_str()).collect();
            let snippets = self.lexical.snippets(query, &texts, self.settings.snippet_chars)?;
            snippets.into_iter().map(Some).collect()
        } else {
            vec![None; found.len()]
        };
        let weights = self.lexical.term_weights(query)?;
        let coverage = self.coverage(&weights, &found)?;
        let hits = candidates
            .into_iter()
            .zip(found)
            .zip(snippets)
            .zip(coverage)
            .enumerate()
            .map(|(i, (((candidate, (document, chunk)), snippet), term_coverage))| SearchHit {
                rank: i + 1,
                score: candidate.score,
                lexical_rank: candidate.lexical_rank,
                dense_rank: candidate.dense_rank,
                lexical_score: candidate.lexical_score,
                dense_score: candidate.dense_score,
                dense_margin: candidate.dense_margin,
                term_coverage,
                document_id: document.id,
                title: document.title,
                heading_path: chunk.heading_path,
                source: document.source,
                language: document.language,
                chunk: chunk.ordinal,
                snippet,
                text: chunk.text,
            })
            .collect();
        Ok(SearchOutcome {
            query: query.to_owned(),
            language: retrieved.language,
            mode,
            dense_skipped: retrieved.dense_skipped,
            hits,
        })
    }
}

/// How deep each leg looks for a request of `k` hits.
pub fn search_depth(k: usize) -> usize {
    (k * 4).max(20)
}

/// Combines two ranked lists of (document, ordinal, score), best first. With one list empty the
/// other passes through with its own scores.
pub fn fuse(
    lexical: &[(DocumentId, u32, f32)],
    dense: &[(DocumentId, u32, f32)],
    settings: &SearchSettings,
) -> Vec<Candidate> {
    let mut merged: Vec<Candidate> = Vec::with_capacity(lexical.len() + dense.len());
    let mut position = std::collections::HashMap::new();
    let legs = [(lexical, true), (dense, false)];
    for (list, is_lexical) in legs {
        for (rank, &(document, ordinal, score)) in list.iter().enumerate() {
            let slot = *position.entry((document, ordinal)).or_insert_with(|| {
                merged.push(Candidate {
                    document,
                    ordinal,
                    score: 0.0,
                    lexical_rank: None,
                    dense_rank: None,
                    lexical_score: None,
                    dense_score: None,
                    dense_margin: None,
                });
                merged.len() - 1
            });
            let candidate = &mut merged[slot];
            if is_lexical {
                candidate.lexical_rank = Some(rank + 1);
                candidate.lexical_score = Some(score);
            } else {
                candidate.dense_rank = Some(rank + 1);
                candidate.dense_score = Some(score);
            }
        }
    }
    let single = lexical.is_empty() || dense.is_empty();
    let normalised = |list: &[(DocumentId, u32, f32)]| -> std::collections::HashMap<(DocumentId, u32), f32> {
        let max = list.iter().map(|x| x.2).fold(f32::MIN, f32::max);
        let min = list.iter().map(|x| x.2).fold(f32::MAX, f32::min);
        let span = (max - min).max(1e-9);
        list.iter().map(|&(d, o, s)| ((d, o), if list.len() == 1 { 1.0 } else { (s - min) / span })).collect()
    };
    let (lexical_norm, dense_norm) = (normalised(lexical), normalised(dense));
    for candidate in &mut merged {
        let key = (candidate.document, candidate.ordinal);
        candidate.score = if single {
            lexical.iter().chain(dense).find(|x| (x.0, x.1) == key).map_or(0.0, |x| x.2)
        } else {
            match settings.fusion {
                Fusion::Rrf => [candidate.lexical_rank, candidate.dense_rank]
                    .iter()
                    .flatten()
                    .map(|&rank| 1.0 / (settings.rrf_k + rank as f32))
                    .sum(),
                Fusion::Weighted => {
                    let w = settings.dense_weight;
                    (1.0 - w) * lexical_norm.get(&key).copied().unwrap_or(0.0)
                        + w * dense_norm.get(&key).copied().unwrap_or(0.0)
                }
            }
        };
    }
    merged.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| {
            let best =
                |c: &Candidate| c.lexical_rank.unwrap_or(usize::MAX).min(c.dense_rank.unwrap_or(usize::MAX));
            best(a).cmp(&best(b))
        })
    });
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement_between_legs() {
        let settings = SearchSettings::default();
        let d = |id| DocumentId(id);
        let lexical = [(d(1), 0, 9.0), (d(2), 0, 8.0), (d(3), 0, 1.0)];
        let dense = [(d(3), 0, 0.9), (d(4), 0, 0.8), (d(2), 0, 0.7)];
        let fused = fuse(&lexical, &dense, &settings);
        let order: Vec<u64> = fused.iter().map(|c| c.document.0).collect();
        // 3 and 2 appear in both lists and beat 1 and 4, which top only one; 3 (ranks 3 and 1)
        // edges out 2 (ranks 2 and 3).
        assert_eq!(&order[..2], &[3, 2]);
        assert_eq!((fused[0].lexical_rank, fused[0].dense_rank), (Some(3), Some(1)));
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn one_empty_leg_passes_the_other_through() {
        let settings = SearchSettings { fusion: Fusion::Weighted, ..SearchSettings::default() };
        let lexical = [(DocumentId(1), 0, 5.0), (DocumentId(2), 0, 3.0)];
        let fused = fuse(&lexical, &[], &settings);
        assert_eq!(fused.iter().map(|c| (c.document.0, c.score)).collect::<Vec<_>>(), [(1, 5.0), (2, 3.0)]);
    }

    #[test]
    fn weighted_fusion_mixes_normalised_scores() {
        let settings =
            SearchSettings { fusion: Fusion::Weighted, dense_weight: 0.8, ..SearchSettings::default() };
        let lexical = [(DocumentId(1), 0, 10.0), (DocumentId(2), 0, 2.0)];
        let dense = [(DocumentId(2), 0, 0.9), (DocumentId(1), 0, 0.1)];
        let fused = fuse(&lexical, &dense, &settings);
        assert_eq!(fused[0].document, DocumentId(2));
        assert!((fused[0].score - 0.8).abs() < 1e-6 && (fused[1].score - 0.2).abs() < 1e-6);
    }
}
