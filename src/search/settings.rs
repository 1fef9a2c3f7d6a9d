//! `[search]`: which retrieval legs run and how their lists are combined.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, refuse};

/// How the lexical and dense result lists are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal rank fusion: Σ 1 / (rrf_k + rank).
    Rrf,
    /// Weighted sum of min-max normalised scores.
    Weighted,
}

/// Which retrieval legs a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Lexical,
    Dense,
    Hybrid,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// Number of results `sputnik search` shows when `--k` is not given.
    pub default_k: usize,
    /// Longest snippet shown per hit, in characters.
    pub snippet_chars: usize,
    /// Default retrieval: "hybrid", "lexical" or "dense".
    pub mode: SearchMode,
    /// "rrf" (reciprocal rank fusion) or "weighted".
    pub fusion: Fusion,
    /// The k of reciprocal rank fusion.
    pub rrf_k: f32,
    /// Share of the dense leg in weighted fusion (0..1).
    pub dense_weight: f32,
    /// Up to this many vectors the dense leg scans exactly; above it, an HNSW graph is used.
    pub exact_scan_limit: usize,
    /// In hybrid search, a full-text hit counts only if it holds at least this share of the
    /// question's words (weighted by rarity); weaker word matches are left to the meaning leg.
    /// 0 keeps every full-text hit.
    pub lexical_min_coverage: f32,
    /// With a multilingual model, how much of each language's shared component the meaning leg
    /// takes off questions and passages before comparing them (0–1; 0 keeps the raw cosine).
    /// Centred, a question meets the passage that answers it whatever its language, and
    /// passages made mostly of their language's common ground stop crowding out specific ones.
    /// See docs/quality.md for what each strength measured.
    pub language_balance: f32,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            default_k: 5,
            snippet_chars: 220,
            mode: SearchMode::Hybrid,
            fusion: Fusion::Rrf,
            rrf_k: 60.0,
            dense_weight: 0.5,
            exact_scan_limit: 200_000,
            lexical_min_coverage: 0.5,
            language_balance: 0.75,
        }
    }
}

impl SearchSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.default_k == 0 || self.default_k > 100 {
            return refuse("search.default_k", "must be between 1 and 100");
        }
        if self.snippet_chars < 40 {
            return refuse("search.snippet_chars", "must be at least 40");
        }
        if self.rrf_k.is_nan() || self.rrf_k <= 0.0 {
            return refuse("search.rrf_k", "must be greater than zero");
        }
        if !(0.0..=1.0).contains(&self.language_balance) {
            return refuse("search.language_balance", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.dense_weight) {
            return refuse("search.dense_weight", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.lexical_min_coverage) {
            return refuse("search.lexical_min_coverage", "must be between 0 and 1");
        }
        Ok(())
    }
}
