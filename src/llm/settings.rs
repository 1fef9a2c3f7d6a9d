//! `[llm]`: the optional OpenAI-compatible endpoint that writes answers from the passages found.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, Secret, refuse};

/// Generated answers from an OpenAI-compatible endpoint (docs/llm.md); off while `url` is empty.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Base URL of the API, the part before `/chat/completions`, e.g. "http://127.0.0.1:8000/v1"
    /// (vLLM, llama.cpp server), "http://127.0.0.1:11434/v1" (Ollama). Empty: extractive answers.
    pub url: String,
    /// Model name as the endpoint knows it.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set; never printed.
    pub api_key: Secret,
    /// Longest wait for a whole answer; past it the extractive answer is sent.
    pub timeout_seconds: u64,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Refuse endpoints that are not on the local network (loopback, private, link-local).
    pub local_only: bool,
    /// Earlier questions of the same employee, within `history_minutes`, used to rewrite a
    /// follow-up into a standalone search query; 0 turns rewriting off.
    pub history_turns: usize,
    pub history_minutes: u64,
    /// Least time between two edits of a streaming answer in Telegram.
    pub edit_interval_ms: u64,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            url: String::new(),
            model: String::new(),
            api_key: Secret::default(),
            timeout_seconds: 30,
            max_tokens: 500,
            temperature: 0.2,
            local_only: true,
            history_turns: 3,
            history_minutes: 10,
            edit_interval_ms: 1500,
        }
    }
}

impl LlmSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.url.trim().is_empty() {
            match self.url.trim().parse::<url::Url>() {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return refuse(
                        "llm.url",
                        format!("{:?} is not an http(s) URL like http://127.0.0.1:8000/v1", self.url),
                    );
                }
            }
            if self.model.trim().is_empty() {
                return refuse("llm.model", "must name the model when llm.url is set");
            }
        }
        if !(1..=600).contains(&self.timeout_seconds) {
            return refuse("llm.timeout_seconds", "must be between 1 and 600");
        }
        if !(16..=8192).contains(&self.max_tokens) {
            return refuse("llm.max_tokens", "must be between 16 and 8192");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return refuse("llm.temperature", "must be between 0 and 2");
        }
        if self.edit_interval_ms < 1000 {
            return refuse("llm.edit_interval_ms", "must be at least 1000 (Telegram's limits)");
        }
        Ok(())
    }
}
