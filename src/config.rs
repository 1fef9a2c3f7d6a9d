//! Configuration: raw layers (built-in defaults < TOML file < `SPUTNIK_*` environment < command
//! line flags) merged by figment into one [`Settings`] value, then validated. Anything that
//! leaves this module is known to be consistent: unknown keys, impossible chunk sizes and the
//! like are rejected here with the key's name, never discovered halfway through an import.

use std::fmt;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Where the packaged service keeps its configuration; used when no file is named explicitly.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/sputnik/sputnik.toml";

/// Environment variables that carry command-line options rather than config keys.
const NON_CONFIG_ENV: &[&str] = &["CONFIG", "LOG", "TELEGRAM_TOKEN", "TELEGRAM_API_URL", "HTTP_LISTEN"];

/// Short environment names for the settings every deployment sets, besides the general
/// `SPUTNIK_SECTION__KEY` form.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("SPUTNIK_TELEGRAM_TOKEN", "telegram.bot_token"),
    ("SPUTNIK_TELEGRAM_API_URL", "telegram.api_url"),
    ("SPUTNIK_HTTP_LISTEN", "http.listen"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: `{key}` {reason}")]
    Value { key: &'static str, reason: String },
}

/// A value that must never reach a log line or a terminal: `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The validated configuration every part of Sputnik is built from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory holding the store (`sputnik.redb`) and the derived indexes.
    pub data_dir: PathBuf,
    pub ingest: IngestSettings,
    pub embed: EmbedSettings,
    pub search: SearchSettings,
    pub answer: AnswerSettings,
    pub chat: ChatSettings,
    pub telegram: TelegramSettings,
    pub onboarding: OnboardingSettings,
    pub http: HttpSettings,
    pub report: ReportSettings,
    pub llm: LlmSettings,
}

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

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// The weekday admins get last week's digest in Telegram (at the start of working hours,
    /// `onboarding.timezone`; the next working day if that day is off); "off" sends none.
    pub weekly_digest: String,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings { weekly_digest: "monday".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address `sputnik serve` answers HTTP on (/livez, /readyz, /metrics, /api/); "" turns it off.
    pub listen: String,
    /// Bearer token of the admin API; empty: the one in `<data_dir>/admin.token`, created
    /// (mode 0600) on first start.
    pub admin_token: Secret,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { listen: "127.0.0.1:8080".into(), admin_token: Secret::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnboardingSettings {
    /// Time zone of employees whose assignment names none (IANA name, e.g. "Europe/Moscow").
    pub timezone: String,
    /// Working hours, local time: messages and reminders go out only between these.
    pub work_start: String,
    pub work_end: String,
    /// Days off every week ("saturday", "sunday", …).
    pub weekend: Vec<String>,
    /// Public holidays ("2027-01-01"): no messages, and they do not count as working days.
    pub holidays: Vec<String>,
    /// Working days a task may be overdue before the manager (or HR) is told.
    pub escalate_after_days: u32,
}

impl Default for OnboardingSettings {
    fn default() -> Self {
        OnboardingSettings {
            timezone: "Europe/Moscow".into(),
            work_start: "09:00".into(),
            work_end: "18:00".into(),
            weekend: vec!["saturday".into(), "sunday".into()],
            holidays: Vec::new(),
            escalate_after_days: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Files larger than this are refused before they are read.
    pub max_file_size: ByteSize,
    /// Most bytes one DOCX/ODT part may expand to; protects against zip bombs.
    pub max_unpacked_size: ByteSize,
    /// Largest expansion ratio (uncompressed / compressed) accepted for an archive member.
    pub max_compression_ratio: u32,
    /// PDFs with more pages than this are refused.
    pub max_pdf_pages: u32,
    /// Chunks aim for this many tokens (estimated) ...
    pub chunk_target_tokens: usize,
    /// ... and never exceed this many.
    pub chunk_max_tokens: usize,
    /// Tokens of trailing context repeated at the start of the next chunk of the same section.
    pub chunk_overlap_tokens: usize,
    /// Glob patterns (relative to the imported directory); when set, only matching files import.
    pub include: Vec<String>,
    /// Glob patterns of files to leave out.
    pub exclude: Vec<String>,
}

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

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramSettings {
    /// Bot API token from @BotFather, used by the Telegram bot.
    pub bot_token: Secret,
    /// The bot's username (without @), for invite links `https://t.me/<bot>?start=<code>`;
    /// learned from Telegram when empty.
    pub bot_username: String,
    /// Bot API server: Telegram's, or a local Bot API server.
    pub api_url: String,
    /// Seconds one long-polling request waits for updates.
    pub poll_timeout_seconds: u32,
    /// Seconds any request to the Bot API may take before it is abandoned and retried (a long
    /// poll gets its own wait on top).
    pub request_timeout_seconds: u64,
    /// Least time between two messages to one chat, in milliseconds (Telegram: about 1 s).
    pub per_chat_interval_ms: u64,
    /// Most messages per second overall (Telegram: about 30).
    pub messages_per_second: u32,
}

impl Default for TelegramSettings {
    fn default() -> Self {
        TelegramSettings {
            bot_token: Secret::default(),
            bot_username: String::new(),
            api_url: "https://api.telegram.org".into(),
            poll_timeout_seconds: 10,
            request_timeout_seconds: 15,
            per_chat_interval_ms: 1000,
            messages_per_second: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSettings {
    /// Questions one employee may ask per minute ...
    pub questions_per_minute: u32,
    /// ... and how many in a quick burst.
    pub burst: u32,
    /// How long invites stay valid unless `--expires` says otherwise, e.g. "7d", "36h".
    pub invite_lifetime: String,
    /// Days questions and feedback are kept in the conversation log; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings { questions_per_minute: 10, burst: 5, invite_lifetime: "7d".into(), retention_days: 365 }
    }
}

/// Parses a human duration like "7d" or "36h" into seconds.
pub fn parse_duration_seconds(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 7d or 36h: {e}"))?;
    i64::try_from(duration.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} must be longer than zero"))
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            ingest: IngestSettings::default(),
            embed: EmbedSettings::default(),
            answer: AnswerSettings::default(),
            chat: ChatSettings::default(),
            search: SearchSettings::default(),
            telegram: TelegramSettings::default(),
            onboarding: OnboardingSettings::default(),
            http: HttpSettings::default(),
            report: ReportSettings::default(),
            llm: LlmSettings::default(),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_file_size: ByteSize::mib(20),
            max_unpacked_size: ByteSize::mib(64),
            max_compression_ratio: 100,
            max_pdf_pages: 2000,
            chunk_target_tokens: 300,
            chunk_max_tokens: 400,
            chunk_overlap_tokens: 40,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
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

/// Overrides that come from command-line flags, the top layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// Settings together with where they came from, for `config check` and the service's log.
#[derive(Debug, Clone)]
pub struct LoadedSettings {
    pub settings: Settings,
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Loads the layered configuration. `explicit_file` is `--config` / `SPUTNIK_CONFIG`; without
    /// it the system file is read when present, and defaults apply otherwise.
    pub fn load(explicit_file: Option<&Path>, flags: &FlagOverrides) -> Result<LoadedSettings, ConfigError> {
        let file = match explicit_file {
            Some(path) if !path.is_file() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(SYSTEM_CONFIG_PATH)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("SPUTNIK_").ignore(NON_CONFIG_ENV).split("__"));
        for (variable, key) in ENV_ALIASES {
            if let Ok(value) = std::env::var(variable) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        figment = figment.merge(Serialized::defaults(flags));
        let settings: Settings =
            figment.extract().map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(LoadedSettings { settings, file })
    }

    /// Settings from a configuration file's text alone (defaults underneath, no environment),
    /// validated as [`Settings::load`] validates them; for checks and fuzzing.
    pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Builds settings for a data directory with every other value at its default (tests, benches).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Settings {
        Settings { data_dir: data_dir.into(), ..Settings::default() }
    }

    /// Like [`Settings::for_data_dir`], with embeddings turned off: full-text search only.
    pub fn lexical_only(data_dir: impl Into<PathBuf>) -> Settings {
        let mut settings = Settings::for_data_dir(data_dir);
        settings.embed.model = "none".into();
        settings.search.mode = SearchMode::Lexical;
        settings
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ingest = &self.ingest;
        let fail = |key, reason: String| Err(ConfigError::Value { key, reason });
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty".into());
        }
        if ingest.max_file_size.as_u64() == 0 {
            return fail("ingest.max_file_size", "must be greater than zero".into());
        }
        if ingest.max_compression_ratio < 2 {
            return fail("ingest.max_compression_ratio", "must be at least 2".into());
        }
        if ingest.chunk_max_tokens < 32 {
            return fail("ingest.chunk_max_tokens", "must be at least 32".into());
        }
        if ingest.chunk_target_tokens == 0 || ingest.chunk_target_tokens > ingest.chunk_max_tokens {
            return fail(
                "ingest.chunk_target_tokens",
                format!("must be between 1 and chunk_max_tokens ({})", ingest.chunk_max_tokens),
            );
        }
        if ingest.chunk_overlap_tokens * 2 > ingest.chunk_target_tokens {
            return fail(
                "ingest.chunk_overlap_tokens",
                format!("must be at most half of chunk_target_tokens ({})", ingest.chunk_target_tokens),
            );
        }
        for (key, patterns) in [("ingest.include", &ingest.include), ("ingest.exclude", &ingest.exclude)] {
            for pattern in patterns {
                if let Err(e) = globset::Glob::new(pattern) {
                    return fail(key, format!("has an invalid glob {pattern:?}: {e}"));
                }
            }
        }
        let llm = &self.llm;
        if !llm.url.trim().is_empty() {
            match llm.url.trim().parse::<url::Url>() {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return fail(
                        "llm.url",
                        format!("{:?} is not an http(s) URL like http://127.0.0.1:8000/v1", llm.url),
                    );
                }
            }
            if llm.model.trim().is_empty() {
                return fail("llm.model", "must name the model when llm.url is set".into());
            }
        }
        if !(1..=600).contains(&llm.timeout_seconds) {
            return fail("llm.timeout_seconds", "must be between 1 and 600".into());
        }
        if !(16..=8192).contains(&llm.max_tokens) {
            return fail("llm.max_tokens", "must be between 16 and 8192".into());
        }
        if !(0.0..=2.0).contains(&llm.temperature) {
            return fail("llm.temperature", "must be between 0 and 2".into());
        }
        if llm.edit_interval_ms < 1000 {
            return fail("llm.edit_interval_ms", "must be at least 1000 (Telegram's limits)".into());
        }
        let digest = self.report.weekly_digest.trim();
        if !digest.eq_ignore_ascii_case("off") && crate::onboarding::calendar::weekday(digest).is_none() {
            return fail(
                "report.weekly_digest",
                format!("{digest:?} is neither a weekday like \"monday\" nor \"off\""),
            );
        }
        if self.search.default_k == 0 || self.search.default_k > 100 {
            return fail("search.default_k", "must be between 1 and 100".into());
        }
        if self.search.snippet_chars < 40 {
            return fail("search.snippet_chars", "must be at least 40".into());
        }
        if self.search.rrf_k.is_nan() || self.search.rrf_k <= 0.0 {
            return fail("search.rrf_k", "must be greater than zero".into());
        }
        if !(0.0..=1.0).contains(&self.search.language_balance) {
            return fail("search.language_balance", "must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.search.dense_weight) {
            return fail("search.dense_weight", "must be between 0 and 1".into());
        }
        if self.embed.model != "none" && crate::embed::ModelProfile::named(&self.embed.model).is_none() {
            let known = crate::embed::ModelProfile::known_names().join(", ");
            return fail(
                "embed.model",
                format!("{:?} is not a known model ({known}, or \"none\")", self.embed.model),
            );
        }
        if !matches!(self.embed.device.as_str(), "cpu" | "cuda") {
            return fail("embed.device", "must be \"cpu\" or \"cuda\"".into());
        }
        if let Err(reason) = parse_duration_seconds(&self.chat.invite_lifetime) {
            return fail("chat.invite_lifetime", reason);
        }
        if self.chat.questions_per_minute == 0 || self.chat.burst == 0 {
            return fail("chat.questions_per_minute", "and chat.burst must be at least 1".into());
        }
        if self.answer.max_sources == 0 || self.answer.max_chars < 100 {
            return fail(
                "answer.max_chars",
                "must be at least 100, with answer.max_sources at least 1".into(),
            );
        }
        if url::Url::parse(&self.telegram.api_url).is_err() {
            let shown = mask_secrets(&self.telegram.api_url, &[self.telegram.bot_token.expose().to_owned()]);
            return fail("telegram.api_url", format!("{shown:?} is not a URL"));
        }
        if self.telegram.messages_per_second == 0 {
            return fail("telegram.messages_per_second", "must be at least 1".into());
        }
        if self.telegram.poll_timeout_seconds > 50 {
            return fail("telegram.poll_timeout_seconds", "must be at most 50 (Telegram's limit)".into());
        }
        if !(1..=300).contains(&self.telegram.request_timeout_seconds) {
            return fail("telegram.request_timeout_seconds", "must be from 1 to 300".into());
        }
        if self.embed.query_cache == 0 {
            return fail("embed.query_cache", "must be at least 1".into());
        }
        // What `serve` builds from the settings is built here too, so `config check`, `doctor`
        // and `serve` accept and refuse the same files.
        if let Err(e) = crate::onboarding::Calendar::new(&self.onboarding) {
            return Err(ConfigError::Value { key: e.field_key(), reason: e.message });
        }
        // Empty turns HTTP off.
        if !self.http.listen.trim().is_empty()
            && self.http.listen.trim().parse::<std::net::SocketAddr>().is_err()
        {
            return fail(
                "http.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.http.listen),
            );
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked, for `sputnik config check`. Besides
    /// the secret keys, any value holding a secret or something shaped like a bot token is
    /// masked: a token pasted into the wrong key is still a token.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        let secrets: Vec<String> = [&self.telegram.bot_token, &self.http.admin_token, &self.llm.api_key]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.expose().to_owned())
            .collect();
        for secret in [&mut shown.telegram.bot_token, &mut shown.http.admin_token, &mut shown.llm.api_key] {
            if !secret.is_empty() {
                *secret = Secret::new("***");
            }
        }
        let mut value = toml::Value::try_from(&shown).expect("settings always serialise to TOML");
        mask_strings(&mut value, &secrets);
        toml::to_string_pretty(&value).expect("settings always serialise to TOML")
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("sputnik.redb")
    }

    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }
}

fn mask_strings(value: &mut toml::Value, secrets: &[String]) {
    match value {
        toml::Value::String(text) => *text = mask_secrets(text, secrets),
        toml::Value::Array(items) => items.iter_mut().for_each(|item| mask_strings(item, secrets)),
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, item)| mask_strings(item, secrets)),
        _ => {}
    }
}

/// `text` with every occurrence of a secret, and every word shaped like a Telegram bot token
/// (digits, a colon, 30 or more token characters), replaced by `***`.
pub fn mask_secrets(text: &str, secrets: &[String]) -> String {
    let mut masked = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        masked = masked.replace(secret.as_str(), "***");
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(masked.len());
    let mut rest = masked.as_str();
    while let Some(colon) = rest.find(':') {
        let digits = rest[..colon].chars().rev().take_while(char::is_ascii_digit).count();
        let tail = rest[colon + 1..].chars().take_while(|&c| token_char(c)).count();
        if digits >= 5 && tail >= 30 {
            out.push_str(&rest[..colon - digits]);
            out.push_str("***");
            rest = &rest[colon + 1 + tail..];
        } else {
            out.push_str(&rest[..=colon]);
            rest = &rest[colon + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// figment's messages name the key and the source; flatten its error list into one line each.
fn describe_figment_error(error: figment::Error) -> String {
    error.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(toml: &str) -> Result<LoadedSettings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sputnik.toml");
        std::fs::write(&path, toml).unwrap();
        Settings::load(Some(&path), &FlagOverrides::default())
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = load_from("[ingest]\nmax_file_sise = \"1 MiB\"\n").unwrap_err().to_string();
        assert!(err.contains("max_file_sise"), "{err}");
    }

    #[test]
    fn file_values_override_defaults_and_flags_override_the_file() {
        let loaded = load_from("data_dir = \"/srv/kb\"\n[ingest]\nmax_file_size = \"3 MiB\"\n").unwrap();
        assert_eq!(loaded.settings.data_dir, PathBuf::from("/srv/kb"));
        assert_eq!(loaded.settings.ingest.max_file_size, ByteSize::mib(3));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sputnik.toml");
        std::fs::write(&path, "data_dir = \"/srv/kb\"\n").unwrap();
        let flags = FlagOverrides { data_dir: Some("/tmp/flag".into()) };
        let loaded = Settings::load(Some(&path), &flags).unwrap();
        assert_eq!(loaded.settings.data_dir, PathBuf::from("/tmp/flag"));
    }

    #[test]
    fn impossible_chunk_sizes_are_rejected_with_the_key() {
        let err = load_from("[ingest]\nchunk_target_tokens = 500\nchunk_max_tokens = 400\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.chunk_target_tokens"), "{err}");
    }

    #[test]
    fn telegram_timeouts_are_bounded() {
        for (toml, key) in [
            ("[telegram]\nrequest_timeout_seconds = 0\n", "telegram.request_timeout_seconds"),
            ("[telegram]\nrequest_timeout_seconds = 301\n", "telegram.request_timeout_seconds"),
            ("[telegram]\npoll_timeout_seconds = 51\n", "telegram.poll_timeout_seconds"),
            ("[telegram]\nmessages_per_second = 0\n", "telegram.messages_per_second"),
        ] {
            let err = load_from(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let loaded =
            load_from("[telegram]\npoll_timeout_seconds = 50\nrequest_timeout_seconds = 5\n").unwrap();
        assert_eq!(loaded.settings.telegram.request_timeout_seconds, 5);
    }

    #[test]
    fn config_check_refuses_what_serve_refuses() {
        // Each passed `config check` and `doctor`, then stopped `serve` and `users list`.
        for (toml, key) in [
            ("[onboarding]\ntimezone = \"Mars/Olympus\"", "onboarding.timezone"),
            ("[onboarding]\nwork_start = \"25:00\"", "onboarding.work_start"),
            ("[onboarding]\nholidays = [\"nope\"]", "onboarding.holidays"),
            ("[onboarding]\nweekend = [\"funday\"]", "onboarding.weekend"),
            ("[http]\nlisten = \"garbage\"", "http.listen"),
        ] {
            match Settings::from_toml_str(toml) {
                Err(ConfigError::Value { key: found, .. }) => assert_eq!(found, key, "{toml}"),
                other => panic!("{toml}: expected a refusal naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_token_in_the_wrong_key_is_masked_too() {
        let token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        let settings = Settings::from_toml_str(&format!(
            "[telegram]\nbot_token = \"{token}\"\nbot_username = \"{token}\"\napi_url = \"https://api.telegram.org/bot{token}\""
        ))
        .unwrap();
        let shown = settings.to_masked_toml();
        assert!(!shown.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{shown}");
        assert!(shown.contains("https://api.telegram.org/bot***"), "{shown}");
        // A token nobody configured as one is still recognised by its shape.
        assert_eq!(mask_secrets(&format!("x {token} y"), &[]), "x *** y");
        assert_eq!(mask_secrets("09:00 and 12345:short", &[]), "09:00 and 12345:short");
    }

    #[test]
    fn secrets_never_print() {
        let mut settings = Settings::default();
        settings.telegram.bot_token = Secret::new("123:very-secret");
        settings.http.admin_token = Secret::new("admin-very-secret");
        assert!(!format!("{settings:?}").contains("very-secret"));
        let shown = settings.to_masked_toml();
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(shown.matches("\"***\"").count(), 2, "{shown}");
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let example = include_str!("../assets/sputnik.example.toml");
        let loaded = load_from(example).unwrap();
        assert_eq!(loaded.settings, Settings::default());
    }
}
