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

impl TelegramSettings {
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
        Ok(())
    }
}
