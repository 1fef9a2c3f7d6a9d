//! `[embed]`: which model turns text into vectors, and where it runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ModelProfile;
use crate::setting::{Invalid, refuse};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedSettings {
    /// Embedding model name from models/manifest.toml, or "none" for full-text search only.
    pub model: String,
    /// Directory holding installed models (one subdirectory per model).
    pub models_dir: PathBuf,
    /// "cpu", or "cuda" in a build with the `cuda` feature.
    pub device: String,
    /// How many recent query embeddings to keep.
    pub query_cache: usize,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            model: "multilingual-e5-small".into(),
            models_dir: PathBuf::from("./models"),
            device: "cpu".into(),
            query_cache: 1024,
        }
    }
}

impl EmbedSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.model != "none" && ModelProfile::named(&self.model).is_none() {
            let known = ModelProfile::known_names().join(", ");
            return refuse(
                "embed.model",
                format!("{:?} is not a known model ({known}, or \"none\")", self.model),
            );
        }
        if !matches!(self.device.as_str(), "cpu" | "cuda") {
            return refuse("embed.device", "must be \"cpu\" or \"cuda\"");
        }
        if self.query_cache == 0 {
            return refuse("embed.query_cache", "must be at least 1");
        }
        Ok(())
    }
}
