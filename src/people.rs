//! People management shared by the CLI and the admin commands in Telegram: creating employees
//! with invites, and the invite links they join with.
//!
//! An invite code is 128 random bits, shown once (printed for HR, or sent to the admin who asked)
//! and stored only as a hash, so a leaked store never lets anyone join.

use serde::Serialize;

use crate::Error;
use crate::store::{Employee, Invite, NewEmployee, Role, Store, invite_hash};

/// What HR asks for.
#[derive(Debug, Clone)]
pub struct InviteRequest {
    pub name: String,
    pub department: String,
    /// Job title, for choosing an onboarding plan.
    pub position: Option<String>,
    pub role: Role,
    pub groups: Vec<String>,
    /// `YYYY-MM-DD`.
    pub start_date: Option<String>,
    pub lifetime_seconds: i64,
}

/// A created employee and their invite.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CreatedInvite {
    pub employee: Employee,
    pub code: String,
    /// `https://t.me/<bot>?start=<code>`, when the bot's username is known.
    pub link: Option<String>,
    pub expires_at: i64,
}

/// The deep link that opens the bot with `/start <code>`.
pub fn invite_link(bot_username: &str, code: &str) -> Option<String> {
    let bot = bot_username.trim().trim_start_matches('@');
    (!bot.is_empty()).then(|| format!("https://t.me/{bot}?start={code}"))
}

/// A new random invite code: 32 hex characters (Telegram allows up to 64 in a start parameter).
pub fn new_invite_code() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Usage(format!("no randomness available: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a start date given as `YYYY-MM-DD`.
pub fn parse_start_date(text: &str) -> Result<String, Error> {
    let date: jiff::civil::Date = text
        .trim()
        .parse()
        .map_err(|e| Error::Usage(format!("start date {text:?} is not a date like 2026-12-01: {e}")))?;
    Ok(date.to_string())
}

/// Creates the employee and an invite for them.
pub fn invite(
    store: &Store,
    request: &InviteRequest,
    bot_username: &str,
    now: i64,
) -> Result<CreatedInvite, Error> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::Usage("the employee's name must be 1 to 200 characters".into()));
    }
    if request.lifetime_seconds <= 0 {
        return Err(Error::Usage("an invite must be valid for some time".into()));
    }
    let groups = crate::access::parse_groups(&request.groups)?;
    let start_date = request.start_date.as_deref().map(parse_start_date).transpose()?;
    let code = new_invite_code()?;
    let employee = store.create_employee(
        NewEmployee {
            name: name.to_owned(),
            department: request.department.trim().to_owned(),
            position: request.position.as_deref().map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned),
            role: request.role,
            groups,
            start_date,
        },
        now,
    )?;
    let expires_at = now + request.lifetime_seconds;
    store.create_invite(
        &invite_hash(&code),
        &Invite { employee: employee.id, created_at: now, expires_at, used_at: None },
    )?;
    let link = invite_link(bot_username, &code);
    Ok(CreatedInvite { employee, code, link, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_hex_and_links_use_the_bot_name() {
        let a = new_invite_code().unwrap();
        let b = new_invite_code().unwrap();
        assert_ne!(a, b);
        assert!(a.len() == 32 && a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(invite_link("@PolarisBot", "abc").as_deref(), Some("https://t.me/PolarisBot?start=abc"));
        assert_eq!(invite_link("", "abc"), None);
        assert!(parse_start_date("2026-02-30").is_err());
        assert_eq!(parse_start_date(" 2026-12-01 ").unwrap(), "2026-12-01");
    }
}
