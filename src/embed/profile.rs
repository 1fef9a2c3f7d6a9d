//! Model profiles: what Sputnik knows about each embedding model it can load — dimension,
//! maximum tokens, the prefixes queries and passages need, and the languages it serves well.
//! They come from `models/manifest.toml`, compiled into the binary so a model directory is
//! only weights and tokenizer.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::store::Language;

static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| {
    toml::from_str(include_str!("../../models/manifest.toml")).expect("models/manifest.toml is valid")
});

#[derive(Debug, Deserialize)]
struct Manifest {
    model: Vec<ModelProfile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelProfile {
    pub name: String,
    pub upstream: String,
    pub licence: String,
    pub package: String,
    pub package_version: String,
    pub architecture: String,
    pub dimension: usize,
    pub max_tokens: usize,
    pub pooling: String,
    pub query_prefix: String,
    pub passage_prefix: String,
    pub languages: Vec<String>,
    /// Answer floor (cosine) for a passage found by meaning in the question's language ...
    pub min_similarity: f32,
    /// ... and in another language.
    pub min_similarity_other_language: f32,
    /// Answer floor on the *margin*: how far a passage found by meaning must stand above the
    /// question's mean similarity to its language (0: no such floor).
    #[serde(default)]
    pub min_margin: f32,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelFile {
    pub path: String,
    pub sha256: String,
}

impl ModelFile {
    /// Whether Sputnik reads this file to embed; the rest (`reference/`: the upstream engine
    /// and image the parity tests compare against) are not installed by the packages.
    pub fn used_at_run_time(&self) -> bool {
        !self.path.starts_with("reference/")
    }
}

/// Why a model's files cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ModelFilesError {
    #[error("{path}: {source}")]
    Unreadable { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path} is damaged (its checksum does not match the manifest)")]
    Damaged { path: std::path::PathBuf },
}

impl ModelProfile {
    /// Checks every file Sputnik reads of this model, in `models_dir`, against the manifest's
    /// SHA-256: `(files, bytes)` when all match. A file damaged in place keeps its size, and the
    /// model is mapped from disk, so only the checksum tells.
    pub fn verify_files(&self, models_dir: &std::path::Path) -> Result<(usize, u64), ModelFilesError> {
        use sha2::{Digest, Sha256};
        let files = self.run_time_files(models_dir);
        let mut bytes = 0u64;
        for (file, path) in &files {
            let path = path.clone();
            let unreadable = |source| ModelFilesError::Unreadable { path: path.clone(), source };
            let mut reader = std::fs::File::open(&path).map_err(unreadable)?;
            let mut hasher = Sha256::new();
            bytes += std::io::copy(&mut reader, &mut hasher).map_err(unreadable)?;
            let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if digest != file.sha256 {
                return Err(ModelFilesError::Damaged { path });
            }
        }
        Ok((files.len(), bytes))
    }

    /// The files Sputnik reads of this model, with where they lie under `models_dir`.
    pub fn run_time_files(&self, models_dir: &std::path::Path) -> Vec<(&ModelFile, std::path::PathBuf)> {
        let dir = models_dir.join(&self.name);
        self.files.iter().filter(|f| f.used_at_run_time()).map(|f| (f, dir.join(&f.path))).collect()
    }

    /// The profile of a model Sputnik knows by name.
    pub fn named(name: &str) -> Option<&'static ModelProfile> {
        MANIFEST.model.iter().find(|m| m.name == name)
    }

    pub fn known_names() -> Vec<&'static str> {
        MANIFEST.model.iter().map(|m| m.name.as_str()).collect()
    }

    /// Whether the model was trained on many languages (and so can match across them).
    pub fn is_multilingual(&self) -> bool {
        self.languages.iter().any(|l| l == "many")
    }

    /// Whether the model understands text in `language` well enough for the dense leg.
    pub fn serves(&self, language: Language) -> bool {
        self.languages.iter().any(|l| l == "many" || l == language.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_multilingual_with_prefixes_and_512_tokens() {
        let name = crate::embed::EmbedSettings::default().model;
        let profile = ModelProfile::named(&name).unwrap();
        assert_eq!(profile.name, "multilingual-e5-small");
        assert_eq!((profile.dimension, profile.max_tokens), (384, 512));
        assert_eq!(
            (profile.query_prefix.as_str(), profile.passage_prefix.as_str()),
            ("query: ", "passage: ")
        );
        assert!(profile.serves(Language::En) && profile.serves(Language::Ru) && profile.is_multilingual());
        assert!(profile.files.iter().any(|f| f.path == "model.gguf" && f.sha256.len() == 64));
    }

    #[test]
    fn minilm_is_english_only_with_256_tokens() {
        let profile = ModelProfile::named("all-minilm-l6-v2").unwrap();
        assert_eq!((profile.dimension, profile.max_tokens), (384, 256));
        assert!(profile.serves(Language::En));
        assert!(!profile.serves(Language::Ru));
        assert!(profile.files.iter().any(|f| f.path == "model.safetensors" && f.sha256.len() == 64));
    }
}
