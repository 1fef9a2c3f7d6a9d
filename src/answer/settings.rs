//! `[answer]`: how much an answer quotes, and how sure it must be to answer at all.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, refuse};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerSettings {
    /// Longest extract of document text in one answer, in characters.
    pub max_chars: usize,
    /// Most passages one answer quotes and cites.
    pub max_sources: usize,
    /// A passage found by full text must score at least this (BM25) ...
    pub min_bm25: f32,
    /// ... and contain at least this share of the question's words, weighted by rarity, to be
    /// answered from.
    pub min_term_coverage: f32,
    /// A passage found by meaning must be at least this similar (cosine) to be answered from;
    /// unset, the embedding model's calibrated floor (see models/manifest.toml) applies.
    pub min_similarity: Option<f32>,
    /// The same for a passage in another language than the question.
    pub min_similarity_other_language: Option<f32>,
    /// A passage found by meaning must also stand this far above the question's mean similarity
    /// to the passage's language; unset, the model's calibrated margin applies.
    pub min_margin: Option<f32>,
    /// Offered when no answer is found, e.g. "hr@example.com" or "@hr_helpdesk".
    pub hr_contact: String,
}

impl Default for AnswerSettings {
    fn default() -> Self {
        AnswerSettings {
            max_chars: 700,
            max_sources: 3,
            min_bm25: 2.0,
            min_term_coverage: 0.5,
            min_similarity: None,
            min_similarity_other_language: None,
            min_margin: None,
            hr_contact: String::new(),
        }
    }
}

impl AnswerSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_sources == 0 || self.max_chars < 100 {
            return refuse("answer.max_chars", "must be at least 100, with answer.max_sources at least 1");
        }
        if !(0.0..=1.0).contains(&self.min_term_coverage) {
            return refuse("answer.min_term_coverage", "must be between 0 and 1");
        }
        for (key, value) in [
            ("answer.min_similarity", self.min_similarity),
            ("answer.min_similarity_other_language", self.min_similarity_other_language),
            ("answer.min_margin", self.min_margin),
        ] {
            if value.is_some_and(|v| !(-1.0..=1.0).contains(&v)) {
                return refuse(key, "must be between -1 and 1");
            }
        }
        Ok(())
    }
}
