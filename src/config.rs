//! Configuration: raw layers (built-in defaults < TOML file < `SPUTNIK_*` environment < command
//! line flags) merged by figment into one [`Settings`] value, then validated. Anything that
//! leaves this module is known to be consistent: unknown keys, impossible chunk sizes and the
//! like are rejected here with the key's name, never discovered halfway through an import.
//!
//! Each section belongs to the subsystem it configures (`ingest::IngestSettings`,
//! `search::SearchSettings`, …), which defines its keys, defaults and checks; this module only
//! layers the sources, composes the sections and names the file. Nothing below it imports it.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::answer::AnswerSettings;
pub use crate::bot::TelegramSettings;
pub use crate::chat::ChatSettings;
pub use crate::embed::EmbedSettings;
pub use crate::http::HttpSettings;
pub use crate::ingest::IngestSettings;
pub use crate::llm::LlmSettings;
pub use crate::onboarding::OnboardingSettings;
pub use crate::report::ReportSettings;
pub use crate::search::{Fusion, SearchMode, SearchSettings};
use crate::setting::Invalid;
pub use crate::setting::{Secret, mask_secrets, parse_duration_seconds};
pub use crate::store::{StoreBackend, StoreSettings};

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

/// The validated configuration every part of Sputnik is built from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory holding the store (`sputnik.redb`) and the derived indexes.
    pub data_dir: PathBuf,
    pub store: StoreSettings,
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

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("./data"),
            store: StoreSettings::default(),
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
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Value { key: "data_dir", reason: "must not be empty".into() });
        }
        // Each section checks its own keys, in the order of the file's sections.
        [
            self.store.validate(),
            self.ingest.validate(),
            self.embed.validate(),
            self.search.validate(),
            self.answer.validate(),
            self.chat.validate(),
            self.telegram.validate(),
            self.onboarding.validate(),
            self.http.validate(),
            self.report.validate(),
            self.llm.validate(),
        ]
        .into_iter()
        .collect::<Result<(), Invalid>>()
        .map_err(|Invalid { key, reason }| ConfigError::Value { key, reason })
    }

    /// The effective configuration as TOML, secrets masked, for `sputnik config check`. Besides
    /// the secret keys, any value holding a secret or something shaped like a bot token is
    /// masked: a token pasted into the wrong key is still a token.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        let secrets: Vec<String> = [
            &self.store.url,
            &self.telegram.bot_token,
            &self.telegram.webhook_secret,
            &self.http.admin_token,
            &self.llm.api_key,
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.expose().to_owned())
        .collect();
        for secret in [
            &mut shown.store.url,
            &mut shown.telegram.bot_token,
            &mut shown.telegram.webhook_secret,
            &mut shown.http.admin_token,
            &mut shown.llm.api_key,
        ] {
            if !secret.is_empty() {
                *secret = Secret::new("***");
            }
        }
        let mut value = toml::Value::try_from(&shown).expect("settings always serialise to TOML");
        mask_strings(&mut value, &secrets);
        toml::to_string_pretty(&value).expect("settings always serialise to TOML")
    }

    /// The embedded store's file (`store.backend = "redb"`).
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("sputnik.redb")
    }

    /// Opens the configured store: the redb file in `data_dir`, or the PostgreSQL database.
    pub fn open_store(&self) -> crate::store::StoreResult<crate::store::Store> {
        self.store.open(&self.store_path())
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

/// figment's messages name the key and the source; flatten its error list into one line each.
fn describe_figment_error(error: figment::Error) -> String {
    error.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytesize::ByteSize;

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
        settings.store.backend = StoreBackend::Postgres;
        settings.store.url = Secret::new("postgresql://sputnik:very-secret@db.internal/kb");
        assert!(!format!("{settings:?}").contains("very-secret"));
        let shown = settings.to_masked_toml();
        assert!(!shown.contains("very-secret"), "{shown}");
        assert_eq!(shown.matches("\"***\"").count(), 3, "{shown}");
    }

    #[test]
    fn a_postgres_store_needs_a_url_and_a_url_needs_the_postgres_store() {
        let err = load_from("[store]\nbackend = \"postgres\"\n").unwrap_err().to_string();
        assert!(err.contains("store.url") && err.contains("postgresql://"), "{err}");
        let err = load_from("[store]\nbackend = \"postgres\"\nurl = \"postgresql://h:notaport/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url") && err.contains("not a PostgreSQL connection URL"), "{err}");
        let err = load_from("[store]\nurl = \"postgresql://h/db\"\n").unwrap_err().to_string();
        assert!(err.contains("store.backend = \"postgres\""), "{err}");
        let loaded =
            load_from("[store]\nbackend = \"postgres\"\nurl = \"postgresql://u:p@h:5433/db\"\n").unwrap();
        assert_eq!(loaded.settings.store.backend, StoreBackend::Postgres);
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let example = include_str!("../assets/sputnik.example.toml");
        let loaded = load_from(example).unwrap();
        assert_eq!(loaded.settings, Settings::default());
    }
}
