//! `[onboarding]`: the working calendar plans are scheduled on.

use serde::{Deserialize, Serialize};

use super::Calendar;
use crate::setting::Invalid;

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

impl OnboardingSettings {
    /// What `serve` builds from these settings is built here, so `config check`, `doctor` and
    /// `serve` accept and refuse the same files.
    pub fn validate(&self) -> Result<(), Invalid> {
        Calendar::new(self).map(|_| ()).map_err(|e| Invalid::new(e.field_key(), e.message))
    }
}
