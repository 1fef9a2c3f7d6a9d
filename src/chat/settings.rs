//! `[chat]`: how often an employee may ask, how long invites last, how long questions are kept.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, parse_duration_seconds, refuse};

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

impl ChatSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Err(reason) = parse_duration_seconds(&self.invite_lifetime) {
            return refuse("chat.invite_lifetime", reason);
        }
        if self.questions_per_minute == 0 || self.burst == 0 {
            return refuse("chat.questions_per_minute", "and chat.burst must be at least 1");
        }
        Ok(())
    }
}
