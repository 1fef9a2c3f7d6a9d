//! Retrieval evaluation: how well the knowledge base answers a set of questions whose right
//! documents are known. Ranking is by distinct documents (a document's best chunk counts), and
//! the metrics are recall@1/3/5/10 and MRR@10, overall and per language.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Retriever;
use crate::Error;
use crate::config::SearchMode;

pub const CUTOFFS: [usize; 4] = [1, 3, 5, 10];

/// One line of a question file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalQuestion {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub lang: Option<String>,
    /// Source paths (relative to the imported directory) of documents that answer it.
    pub expected: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub k: usize,
    pub mode: SearchMode,
    pub overall: Metrics,
    pub by_language: BTreeMap<String, Metrics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub id: String,
    pub lang: Option<String>,
    /// Distinct documents' source paths in rank order.
    pub ranked: Vec<String>,
    /// 1-based rank of the first expected document within `k`, if found.
    pub first_hit: Option<usize>,
}

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
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let question: EvalQuestion = serde_json::from_str(line)
            .map_err(|e| Error::Usage(format!("{}:{}: {e}", path.display(), number + 1)))?;
        if question.expected.is_empty() {
            return Err(Error::Usage(format!(
                "{}:{}: question {:?} lists no expected documents",
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

/// Runs every question once against the open index.
pub fn run(
    retriever: &Retriever<'_>,
    questions: &[EvalQuestion],
    k: usize,
    groups: &[String],
    mode: SearchMode,
) -> Result<EvalReport, Error> {
    let k = k.max(1);
    let mut queries = Vec::with_capacity(questions.len());
    for question in questions {
        let ranked = ranked_documents(retriever, &question.query, k, groups, mode)?;
        let first_hit = ranked.iter().position(|s| question.expected.contains(s)).map(|p| p + 1);
        queries.push(QueryResult { id: question.id.clone(), lang: question.lang.clone(), ranked, first_hit });
    }
    let overall = metrics(questions, &queries, |_| true);
    let mut languages: Vec<String> = questions.iter().filter_map(|q| q.lang.clone()).collect();
    languages.sort();
    languages.dedup();
    let by_language = languages
        .into_iter()
        .map(|lang| {
            let m = metrics(questions, &queries, |q| q.lang.as_deref() == Some(lang.as_str()));
            (lang, m)
        })
        .collect();
    Ok(EvalReport { summary: Summary { k, mode, overall, by_language }, queries })
}

/// Distinct documents in rank order, looking deep enough into the chunk ranking to fill `k`.
fn ranked_documents(
    retriever: &Retriever<'_>,
    query: &str,
    k: usize,
    groups: &[String],
    mode: SearchMode,
) -> Result<Vec<String>, Error> {
    if query.trim().is_empty() {
        return Ok(Vec::new());
    }
    let retrieved = retriever.retrieve(query, groups, k * 5, mode)?;
    let mut ranked: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for hit in retrieved.candidates {
        if !seen.insert(hit.document) {
            continue;
        }
        if let Some(document) = retriever.store.document(hit.document)? {
            ranked.push(document.source);
        }
        if ranked.len() == k {
            break;
        }
    }
    Ok(ranked)
}

fn metrics(
    questions: &[EvalQuestion],
    results: &[QueryResult],
    keep: impl Fn(&EvalQuestion) -> bool,
) -> Metrics {
    let mut m = Metrics::default();
    let mut recall = [0.0f64; CUTOFFS.len()];
    for (question, result) in questions.iter().zip(results) {
        if !keep(question) {
            continue;
        }
        m.questions += 1;
        for (slot, &cutoff) in recall.iter_mut().zip(CUTOFFS.iter()) {
            let top = &result.ranked[..result.ranked.len().min(cutoff)];
            let found = question.expected.iter().filter(|e| top.contains(e)).count();
            *slot += found as f64 / question.expected.len() as f64;
        }
        if let Some(rank) = result.first_hit.filter(|&r| r <= 10) {
            m.mrr_10 += 1.0 / rank as f64;
        }
    }
    if m.questions > 0 {
        let n = m.questions as f64;
        [m.recall_1, m.recall_3, m.recall_5, m.recall_10] = recall.map(|r| r / n);
        m.mrr_10 /= n;
    }
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
            expected: expected.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn r(ranked: &[&str], expected: &[&str]) -> QueryResult {
        let ranked: Vec<String> = ranked.iter().map(|s| s.to_string()).collect();
        let first_hit = ranked.iter().position(|s| expected.contains(&s.as_str())).map(|p| p + 1);
        QueryResult { id: "q".into(), lang: None, ranked, first_hit }
    }

    #[test]
    fn recall_and_mrr() {
        let questions = vec![q("1", "en", &["a.md"]), q("2", "en", &["b.md"]), q("3", "ru", &["c.md"])];
        let results = vec![
            r(&["a.md", "x.md"], &["a.md"]),
            r(&["x.md", "y.md", "b.md"], &["b.md"]),
            r(&["x.md"], &["c.md"]),
        ];
        let all = metrics(&questions, &results, |_| true);
        assert_eq!(all.questions, 3);
        assert!((all.recall_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((all.recall_3 - 2.0 / 3.0).abs() < 1e-9);
        assert!((all.mrr_10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-9);
        let en = metrics(&questions, &results, |q| q.lang.as_deref() == Some("en"));
        assert_eq!(en.questions, 2);
        assert!((en.recall_3 - 1.0).abs() < 1e-9);
    }
}
