//! Evaluation: how well the knowledge base answers a set of questions whose right documents are
//! known, and how honestly it declines the ones it cannot answer (`"expected": []`).
//!
//! Ranking is by distinct documents (a document's best chunk counts): recall@k is the share of
//! answerable questions with a right document in the first k, and MRR@10. Each question also goes
//! through the answer path employees meet (the same floors and citation rules): whether Sputnik
//! would answer or decline, and which sources it would cite. Figures are given overall, per
//! language, per direction (question language → language of the right documents) and per set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::answer::AnswerSettings;
use crate::answer::{self, Floors};
use crate::search::SearchMode;
use crate::search::{Retriever, search_depth};
use crate::store::{DocumentId, Language};

pub const CUTOFFS: [usize; 4] = [1, 3, 5, 10];

/// One line of a question file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalQuestion {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub lang: Option<String>,
    /// A label to break the figures down by (the kind of document, the source of the set).
    #[serde(default)]
    pub set: Option<String>,
    /// Source paths (relative to the imported directory) of documents that answer it; empty
    /// when the knowledge base holds no answer.
    pub expected: Vec<String>,
}

impl EvalQuestion {
    pub fn answerable(&self) -> bool {
        !self.expected.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    /// Answerable questions; the ranking figures are over these.
    pub questions: usize,
    #[serde(rename = "recall@1")]
    pub recall_1: f64,
    #[serde(rename = "recall@3")]
    pub recall_3: f64,
    #[serde(rename = "recall@5")]
    pub recall_5: f64,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_10: f64,
    /// Questions the knowledge base cannot answer.
    pub unanswerable: usize,
    /// Share of answerable questions answered with a right document among the sources.
    pub answered_right: f64,
    /// Share of unanswerable questions declined.
    pub declined_right: f64,
    /// Share of answers to answerable questions that cite a document that is not a right one.
    pub cited_unrelated: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub k: usize,
    pub mode: SearchMode,
    pub overall: Metrics,
    pub by_language: BTreeMap<String, Metrics>,
    /// "en→ru": English questions whose right documents are all Russian; unanswerable
    /// questions count under their language only.
    pub by_direction: BTreeMap<String, Metrics>,
    pub by_set: BTreeMap<String, Metrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub id: String,
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Question language → language of the right documents, for answerable questions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Distinct documents' source paths in rank order.
    pub ranked: Vec<String>,
    /// 1-based rank of the first expected document within `k`, if found.
    pub first_hit: Option<usize>,
    /// Whether Sputnik would answer (rather than say it does not know).
    pub answered: bool,
    /// Source paths the answer would cite, in citation order.
    pub cited: Vec<String>,
    /// With `--explain`: the fused candidates, best first, with what each leg said of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<ExplainedCandidate>,
}

/// One passage among a question's candidates, as `eval --explain` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedCandidate {
    pub source: String,
    pub chunk: u32,
    pub language: Language,
    pub score: f32,
    pub lexical_rank: Option<usize>,
    pub lexical_score: Option<f32>,
    pub dense_rank: Option<usize>,
    /// Cosine similarity to the question.
    pub dense_score: Option<f32>,
    pub dense_margin: Option<f32>,
    /// Share of the question's words (weighted by rarity) the passage holds.
    pub term_coverage: f32,
}

/// How many candidates `--explain` shows per question.
pub const EXPLAINED: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub summary: Summary,
    pub queries: Vec<QueryResult>,
}

/// Reads a JSONL question file; errors name the line.
pub fn load_questions(path: &Path) -> Result<Vec<EvalQuestion>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut questions = Vec::new();
    let mut ids = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let question: EvalQuestion = serde_json::from_str(line)
            .map_err(|e| Error::Usage(format!("{}:{}: {e}", path.display(), number + 1)))?;
        if !ids.insert(question.id.clone()) {
            return Err(Error::Usage(format!(
                "{}:{}: question id {:?} appears twice",
                path.display(),
                number + 1,
                question.id
            )));
        }
        questions.push(question);
    }
    if questions.is_empty() {
        return Err(Error::Usage(format!("{} contains no questions", path.display())));
    }
    Ok(questions)
}

/// How answers are composed, for measuring them.
#[derive(Debug, Clone, Copy)]
pub struct Answering<'a> {
    pub settings: &'a AnswerSettings,
    pub floors: &'a Floors,
}

/// Runs every question once against the open index.
pub fn run(
    retriever: &Retriever<'_>,
    answering: Answering<'_>,
    questions: &[EvalQuestion],
    k: usize,
    groups: &[String],
    mode: SearchMode,
    explain: bool,
) -> Result<EvalReport, Error> {
    let k = k.max(1);
    let documents: HashMap<DocumentId, (String, Language)> =
        retriever.store.documents()?.into_iter().map(|d| (d.id, (d.source, d.language))).collect();
    let languages: HashMap<&str, Language> =
        documents.values().map(|(source, language)| (source.as_str(), *language)).collect();
    let answer_k = answer::search_k(answering.settings);
    // Rankings look deeper than an answer does; the answer path retrieves as a question in
    // Telegram does, so its figures are what employees meet (fusion depends on the depth).
    let answer_depth = search_depth(answer_k);
    let depth = (k * 5).max(answer_depth);
    let mut queries = Vec::with_capacity(questions.len());
    for question in questions {
        let direction = direction(question, &languages);
        let mut result = QueryResult {
            id: question.id.clone(),
            lang: question.lang.clone(),
            set: question.set.clone(),
            direction,
            ranked: Vec::new(),
            first_hit: None,
            answered: false,
            cited: Vec::new(),
            candidates: Vec::new(),
        };
        if !question.query.trim().is_empty() {
            let retrieved = retriever.retrieve(&question.query, groups, depth, mode)?;
            if explain {
                result.candidates = explained(retriever, &question.query, &retrieved.candidates, &documents)?;
            }
            let mut seen = HashSet::new();
            for candidate in &retrieved.candidates {
                if result.ranked.len() == k {
                    break;
                }
                if seen.insert(candidate.document)
                    && let Some((source, _)) = documents.get(&candidate.document)
                {
                    result.ranked.push(source.clone());
                }
            }
            let retrieved = if depth == answer_depth {
                retrieved
            } else {
                retriever.retrieve(&question.query, groups, answer_depth, mode)?
            };
            let outcome = retriever.resolve(&question.query, mode, retrieved, answer_k, false)?;
            let composed = answer::compose(&outcome, outcome.language, answering.settings, answering.floors);
            result.answered = composed.found;
            result.cited = composed.sources.into_iter().map(|s| s.source).collect();
        }
        result.first_hit = result.ranked.iter().position(|s| question.expected.contains(s)).map(|p| p + 1);
        queries.push(result);
    }
    let group = |label: &dyn Fn(&EvalQuestion, &QueryResult) -> Option<String>| {
        let mut labels: Vec<String> =
            questions.iter().zip(&queries).filter_map(|(q, r)| label(q, r)).collect();
        labels.sort();
        labels.dedup();
        labels
            .into_iter()
            .map(|name| {
                let m = metrics(questions, &queries, |q, r| label(q, r).as_deref() == Some(name.as_str()));
                (name, m)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let summary = Summary {
        k,
        mode,
        overall: metrics(questions, &queries, |_, _| true),
        by_language: group(&|q, _| q.lang.clone()),
        by_direction: group(&|_, r| r.direction.clone()),
        by_set: group(&|q, _| q.set.clone()),
    };
    Ok(EvalReport { summary, queries })
}

/// The first `EXPLAINED` candidates with their legs' ranks and scores and their word coverage.
fn explained(
    retriever: &Retriever<'_>,
    query: &str,
    candidates: &[crate::search::Candidate],
    documents: &HashMap<DocumentId, (String, Language)>,
) -> Result<Vec<ExplainedCandidate>, Error> {
    let shown = &candidates[..candidates.len().min(EXPLAINED)];
    let keys: Vec<_> = shown.iter().map(|c| (c.document, c.ordinal)).collect();
    let coverage = retriever.coverage_of(query, &keys)?;
    Ok(shown
        .iter()
        .zip(coverage)
        .filter_map(|(c, term_coverage)| {
            let (source, language) = documents.get(&c.document)?;
            Some(ExplainedCandidate {
                source: source.clone(),
                chunk: c.ordinal,
                language: *language,
                score: c.score,
                lexical_rank: c.lexical_rank,
                lexical_score: c.lexical_score,
                dense_rank: c.dense_rank,
                dense_score: c.dense_score,
                dense_margin: c.dense_margin,
                term_coverage,
            })
        })
        .collect())
}

/// "en→en" when a right document is in the question's language, "en→ru" when all are in the
/// other; `None` for unanswerable questions and for questions without a language.
fn direction(question: &EvalQuestion, languages: &HashMap<&str, Language>) -> Option<String> {
    let asked = question.lang.as_deref()?;
    let mut found: Vec<&str> =
        question.expected.iter().filter_map(|e| languages.get(e.as_str())).map(|l| l.code()).collect();
    if found.is_empty() {
        return None;
    }
    if found.contains(&asked) {
        return Some(format!("{asked}→{asked}"));
    }
    found.sort();
    found.dedup();
    Some(format!("{asked}→{}", found.join("+")))
}

fn metrics(
    questions: &[EvalQuestion],
    results: &[QueryResult],
    keep: impl Fn(&EvalQuestion, &QueryResult) -> bool,
) -> Metrics {
    let mut m = Metrics::default();
    let mut recall = [0.0f64; CUTOFFS.len()];
    let (mut answered_right, mut declined, mut answers, mut unrelated) = (0usize, 0usize, 0usize, 0usize);
    for (question, result) in questions.iter().zip(results) {
        if !keep(question, result) {
            continue;
        }
        if !question.answerable() {
            m.unanswerable += 1;
            declined += usize::from(!result.answered);
            continue;
        }
        m.questions += 1;
        for (slot, &cutoff) in recall.iter_mut().zip(CUTOFFS.iter()) {
            if result.first_hit.is_some_and(|rank| rank <= cutoff) {
                *slot += 1.0;
            }
        }
        if let Some(rank) = result.first_hit.filter(|&r| r <= 10) {
            m.mrr_10 += 1.0 / rank as f64;
        }
        if result.answered {
            answers += 1;
            answered_right += usize::from(result.cited.iter().any(|c| question.expected.contains(c)));
            unrelated += usize::from(result.cited.iter().any(|c| !question.expected.contains(c)));
        }
    }
    let share = |count: usize, of: usize| if of == 0 { 0.0 } else { count as f64 / of as f64 };
    if m.questions > 0 {
        let n = m.questions as f64;
        [m.recall_1, m.recall_3, m.recall_5, m.recall_10] = recall.map(|r| r / n);
        m.mrr_10 /= n;
    }
    m.answered_right = share(answered_right, m.questions);
    m.declined_right = share(declined, m.unanswerable);
    m.cited_unrelated = share(unrelated, answers);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, lang: &str, expected: &[&str]) -> EvalQuestion {
        EvalQuestion {
            id: id.into(),
            query: "x".into(),
            lang: Some(lang.into()),
            set: None,
            expected: expected.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn r(ranked: &[&str], expected: &[&str]) -> QueryResult {
        let ranked: Vec<String> = ranked.iter().map(|s| s.to_string()).collect();
        let first_hit = ranked.iter().position(|s| expected.contains(&s.as_str())).map(|p| p + 1);
        QueryResult {
            id: "q".into(),
            lang: None,
            set: None,
            direction: None,
            ranked,
            first_hit,
            answered: false,
            cited: Vec::new(),
            candidates: Vec::new(),
        }
    }

    #[test]
    fn recall_and_mrr() {
        let questions = vec![q("1", "en", &["a.md"]), q("2", "en", &["b.md"]), q("3", "ru", &["c.md"])];
        let results = vec![
            r(&["a.md", "x.md"], &["a.md"]),
            r(&["x.md", "y.md", "b.md"], &["b.md"]),
            r(&["x.md"], &["c.md"]),
        ];
        let all = metrics(&questions, &results, |_, _| true);
        assert_eq!(all.questions, 3);
        assert!((all.recall_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((all.recall_3 - 2.0 / 3.0).abs() < 1e-9);
        assert!((all.mrr_10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-9);
        let en = metrics(&questions, &results, |q, _| q.lang.as_deref() == Some("en"));
        assert_eq!(en.questions, 2);
        assert!((en.recall_3 - 1.0).abs() < 1e-9);
    }
}
