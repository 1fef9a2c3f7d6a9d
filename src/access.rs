//! Who may see what. Documents and employees carry access groups; a document with none is for
//! everyone, one with groups only for members of at least one of them. Every group name that
//! enters Sputnik (import flags, invites, the admin API, broadcasts) passes through
//! [`AccessGroup::parse`], and every check outside the indexes is [`may_see`]; the full-text and
//! vector indexes apply the same rule inside retrieval, so nothing unseen is ever ranked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A group name refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid access group {0:?}: use letters, digits, '-' and '_' (at most 64)")]
pub struct InvalidGroup(pub String);

/// A checked access group: trimmed, lower-case, 1–64 letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccessGroup(String);

impl AccessGroup {
    pub fn parse(text: &str) -> Result<AccessGroup, InvalidGroup> {
        let trimmed = text.trim();
        let valid = !trimmed.is_empty()
            && trimmed.chars().count() <= 64
            && trimmed.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(InvalidGroup(text.to_owned()));
        }
        Ok(AccessGroup(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccessGroup {
    type Error = InvalidGroup;

    fn try_from(text: String) -> Result<Self, InvalidGroup> {
        AccessGroup::parse(&text)
    }
}

impl From<AccessGroup> for String {
    fn from(group: AccessGroup) -> String {
        group.0
    }
}

impl fmt::Display for AccessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a list of group names as typed: each normalised, duplicates dropped, sorted.
pub fn parse_groups(groups: &[String]) -> Result<Vec<String>, InvalidGroup> {
    let mut out: Vec<String> =
        groups.iter().map(|g| AccessGroup::parse(g).map(String::from)).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The one rule: a document without groups is for everyone; one with groups is for those who
/// belong to at least one of them.
pub fn may_see(document_groups: &[String], reader_groups: &[String]) -> bool {
    document_groups.is_empty() || document_groups.iter().any(|g| reader_groups.contains(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_normalised_or_refused() {
        assert_eq!(AccessGroup::parse(" Managers ").unwrap().as_str(), "managers");
        assert_eq!(AccessGroup::parse("отдел-продаж_2").unwrap().as_str(), "отдел-продаж_2");
        for bad in ["", "  ", "a b", "hr;drop", "../x", &"x".repeat(65)] {
            assert!(AccessGroup::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_groups(&["HR".into(), "hr".into(), "dev".into()]).unwrap(), ["dev", "hr"]);
        assert!(serde_json::from_str::<AccessGroup>("\"no way\"").is_err());
    }

    #[test]
    fn public_documents_are_for_everyone_and_grouped_ones_for_members() {
        let managers = vec!["managers".to_owned()];
        assert!(may_see(&[], &[]));
        assert!(may_see(&[], &managers));
        assert!(may_see(&managers, &managers));
        assert!(!may_see(&managers, &[]));
        assert!(!may_see(&managers, &["dev".to_owned()]));
    }
}
