//! `[telegram]`: the Bot API this service talks to and the pace Telegram allows.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, Secret, mask_secrets, refuse};

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
    /// How updates arrive: long polling (one replica polls) or a webhook (Telegram posts each
    /// update to `webhook_url`, which a load balancer spreads over every replica).
    pub mode: UpdateMode,
    /// The public HTTPS address Telegram posts updates to, e.g. `https://bot.example.com/telegram`;
    /// its path is the one this process answers on.
    pub webhook_url: String,
    /// Where this process listens for the webhook's posts (behind the load balancer or reverse
    /// proxy that terminates TLS), e.g. `0.0.0.0:8443`.
    pub webhook_listen: String,
    /// Telegram sends it in the `X-Telegram-Bot-Api-Secret-Token` header of every post; a post
    /// without it is refused. The same on every replica: 1–256 of A–Z, a–z, 0–9, `_`, `-`.
    pub webhook_secret: Secret,
    /// Seconds after which an update that a replica kept but did not answer (it stopped or died
    /// meanwhile) is handled by the leader instead. Longer than the slowest answer (an LLM's
    /// `llm.timeout_seconds`), or the same update is worked on twice — though answered once.
    pub webhook_takeover_seconds: u64,
}

/// How updates arrive from Telegram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    #[default]
    Polling,
    Webhook,
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
            mode: UpdateMode::Polling,
            webhook_url: String::new(),
            webhook_listen: String::new(),
            webhook_secret: Secret::default(),
            webhook_takeover_seconds: 60,
        }
    }
}

impl TelegramSettings {
    /// The path of `webhook_url`, which the webhook receiver answers on.
    pub fn webhook_path(&self) -> String {
        url::Url::parse(&self.webhook_url).map_or_else(|_| "/".to_owned(), |u| u.path().to_owned())
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if url::Url::parse(&self.api_url).is_err() {
            let shown = mask_secrets(&self.api_url, &[self.bot_token.expose().to_owned()]);
            return refuse("telegram.api_url", format!("{shown:?} is not a URL"));
        }
        if self.messages_per_second == 0 {
            return refuse("telegram.messages_per_second", "must be at least 1");
        }
        if self.poll_timeout_seconds > 50 {
            return refuse("telegram.poll_timeout_seconds", "must be at most 50 (Telegram's limit)");
        }
        if !(1..=300).contains(&self.request_timeout_seconds) {
            return refuse("telegram.request_timeout_seconds", "must be from 1 to 300");
        }
        if self.mode == UpdateMode::Webhook {
            let url =
                url::Url::parse(&self.webhook_url).ok().filter(|u| matches!(u.scheme(), "https" | "http"));
            if url.is_none() {
                return refuse(
                    "telegram.webhook_url",
                    format!(
                        "{:?} is not a URL Telegram can post to (https://bot.example.com/telegram)",
                        self.webhook_url
                    ),
                );
            }
            if self.webhook_listen.trim().parse::<std::net::SocketAddr>().is_err() {
                return refuse(
                    "telegram.webhook_listen",
                    format!("{:?} is not an address like 0.0.0.0:8443", self.webhook_listen),
                );
            }
            let secret = self.webhook_secret.expose();
            let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if !(1..=3600).contains(&self.webhook_takeover_seconds) {
                return refuse("telegram.webhook_takeover_seconds", "must be from 1 to 3600");
            }
            if secret.is_empty() || secret.len() > 256 || !secret.chars().all(allowed) {
                return refuse(
                    "telegram.webhook_secret",
                    "webhook mode needs a secret of 1–256 characters A–Z, a–z, 0–9, _ and -, the same on every replica",
                );
            }
        }
        Ok(())
    }
}
