//! Building blocks every subsystem's settings use: a secret that never prints, the refusal that
//! names a key, durations as people write them. Each subsystem owns its own section (its
//! `Settings` type, defaults and checks); the `config` module only layers and composes them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A setting that cannot be used, named by its full key (`section.key`) so the admin can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Invalid { key, reason: reason.into() }
    }
}

/// Shorthand for a section's check: `Err(Invalid)` naming the key.
pub fn refuse<T>(key: &'static str, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid::new(key, reason))
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

/// Parses a human duration like "7d" or "36h" into seconds.
pub fn parse_duration_seconds(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 7d or 36h: {e}"))?;
    i64::try_from(duration.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?} must be longer than zero"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shaped_word_is_masked_without_being_named() {
        let token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        assert_eq!(mask_secrets(&format!("x {token} y"), &[]), "x *** y");
        assert_eq!(mask_secrets("09:00 and 12345:short", &[]), "09:00 and 12345:short");
        assert_eq!(mask_secrets("key=hunter22", &["hunter22".into()]), "key=***");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration_seconds("36h"), Ok(36 * 3600));
        assert_eq!(parse_duration_seconds(" 7d "), Ok(7 * 86_400));
        assert!(parse_duration_seconds("0s").is_err());
        assert!(parse_duration_seconds("soon").is_err());
    }
}
