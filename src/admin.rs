//! Admin operations that change things, shared by the two ways an admin command runs: the CLI
//! calls them on the store it opened (the service is stopped), the admin API calls them on the
//! service's own [`App`] (the service runs and the CLI asks it). Requests and results serialise
//! both ways, so the CLI prints the same whichever ran the operation.

use serde::{Deserialize, Serialize};

use crate::i18n::escape_html;
use crate::onboarding::{self, Helpers, Plan};
use crate::people::{self, CreatedInvite};
use crate::reply::Action;
use crate::setting::parse_duration_seconds;
use crate::store::{Assignment, Broadcast, ChatId, DocumentRecord, Employee, EmployeeId, Recipient, Role};
use crate::{App, Error, Result};

/// `users invite`: who to invite and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invite {
    pub name: String,
    pub department: String,
    #[serde(default)]
    pub position: Option<String>,
    #[serde(default = "employee")]
    pub role: Role,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `YYYY-MM-DD`: a new hire, who gets their department's plan on joining.
    #[serde(default)]
    pub start_date: Option<String>,
    /// How long the code is valid, like `7d`; `None`: `chat.invite_lifetime`.
    #[serde(default)]
    pub expires: Option<String>,
}

fn employee() -> Role {
    Role::Employee
}

pub fn invite(app: &App, invite: &Invite, now: i64) -> Result<CreatedInvite> {
    let lifetime = invite.expires.as_deref().unwrap_or(&app.settings().chat.invite_lifetime);
    let lifetime_seconds =
        parse_duration_seconds(lifetime).map_err(|reason| Error::Usage(format!("--expires: {reason}")))?;
    // Without a configured name, use the one Telegram reported when `sputnik serve` last ran.
    let configured = app.settings().telegram.bot_username.trim();
    let bot = if configured.is_empty() {
        app.store().bot_username()?.unwrap_or_default()
    } else {
        configured.to_owned()
    };
    let request = people::InviteRequest {
        name: invite.name.clone(),
        department: invite.department.clone(),
        position: invite.position.clone(),
        role: invite.role,
        groups: invite.groups.clone(),
        start_date: invite.start_date.clone(),
        lifetime_seconds,
    };
    people::invite(app.store(), &request, &bot, now)
}

pub fn employee_by_id(app: &App, id: u64) -> Result<Employee> {
    app.store()
        .employee(EmployeeId(id))?
        .ok_or_else(|| Error::Usage(format!("no employee with id {id}: see `sputnik users list`")))
}

/// `users activate|deactivate|promote|demote`: what to change; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmployeeChange {
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub role: Option<Role>,
}

pub fn change_employee(app: &App, id: u64, change: &EmployeeChange) -> Result<Employee> {
    employee_by_id(app, id)?;
    Ok(app.store().update_employee(EmployeeId(id), |e| {
        if let Some(active) = change.active {
            e.active = active;
        }
        if let Some(role) = change.role {
            e.role = role;
        }
    })?)
}

/// `users assign`: the employee and helpers by id or exact name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assign {
    pub employee: String,
    pub plan: String,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub buddy: Option<String>,
    #[serde(default)]
    pub manager: Option<String>,
    #[serde(default)]
    pub hr: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// The assignment and the name of who got it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assigned {
    pub name: String,
    pub assignment: Assignment,
}

pub fn assign(app: &App, request: &Assign, now: i64) -> Result<Assigned> {
    let store = app.store();
    let employee = onboarding::find_employee(store, &request.employee)?;
    let who = |name: &Option<String>| -> Result<Option<EmployeeId>> {
        name.as_deref().map(|n| onboarding::find_employee(store, n).map(|e| e.id)).transpose()
    };
    let helpers = Helpers {
        buddy: who(&request.buddy)?,
        manager: who(&request.manager)?,
        hr: who(&request.hr)?,
        timezone: request.timezone.clone(),
    };
    let assignment =
        onboarding::assign(store, employee.id, &request.plan, request.start.as_deref(), helpers, now)?;
    Ok(Assigned { name: employee.name, assignment })
}

/// Checks a plan file's text and stores the plan; `Err` lists every problem as `file:line:
/// field: problem`, and then nothing was stored.
pub fn import_plan(app: &App, name: &str, text: &str) -> Result<std::result::Result<Plan, Vec<String>>> {
    let sources: std::collections::HashSet<String> =
        app.store().documents()?.into_iter().map(|d| d.source).collect();
    match onboarding::plan::parse(std::path::Path::new(name), text, &|l| sources.contains(l)) {
        Ok(plan) => {
            app.store().put_plan(&plan.id, &plan)?;
            Ok(Ok(plan))
        }
        Err(errors) => Ok(Err(errors.iter().map(ToString::to_string).collect())),
    }
}

/// Removes documents by id or source; all are resolved first, so a typo removes nothing.
pub fn remove_documents(app: &App, references: &[String]) -> Result<Vec<DocumentRecord>> {
    let records = references.iter().map(|d| app.resolve_document(d)).collect::<Result<Vec<_>>>()?;
    records.into_iter().map(|record| app.remove_document(record.id)).collect()
}

/// `broadcast`: the text and who gets it (nobody filtered out: every active employee).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastRequest {
    pub text: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub departments: Vec<String>,
}

/// A queued broadcast: its id, how many copies were queued, who could not get one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub id: u64,
    pub queued: usize,
    pub unreachable: Vec<EmployeeId>,
}

/// Queues one copy per reachable matching employee, with the broadcast's record, in one
/// transaction; the service's sender delivers them within Telegram's limits.
pub fn broadcast(app: &App, request: &BroadcastRequest, now: i64) -> Result<Queued> {
    let text = request.text.trim();
    if text.is_empty() {
        return Err(Error::Usage("the message is empty".into()));
    }
    if text.chars().count() > crate::answer::TELEGRAM_MESSAGE_LIMIT {
        return Err(Error::Usage(format!(
            "the message is longer than Telegram's {} characters",
            crate::answer::TELEGRAM_MESSAGE_LIMIT
        )));
    }
    let groups = crate::access::parse_groups(&request.groups)?;
    let matches = |e: &Employee| {
        e.active
            && (groups.is_empty() || groups.iter().any(|g| e.groups.contains(g)))
            && (request.departments.is_empty()
                || request.departments.iter().any(|d| e.department.eq_ignore_ascii_case(d.trim())))
    };
    let store = app.store();
    let mut recipients = Vec::new();
    let mut unreachable = Vec::new();
    for employee in store.employees()?.into_iter().filter(matches) {
        match employee.telegram_id {
            Some(user) => recipients.push(Recipient { employee: employee.id, chat: ChatId::private(user) }),
            None => unreachable.push(employee.id),
        }
    }
    let html = escape_html(text);
    let draft = Broadcast { id: 0, text: text.to_owned(), created_at: now, recipients, unreachable };
    let created = store.create_broadcast(draft, |broadcast, chat| Action::Broadcast {
        broadcast,
        chat,
        html: html.clone(),
    })?;
    Ok(Queued { id: created.id, queued: created.recipients.len(), unreachable: created.unreachable })
}

/// How a broadcast's deliveries stand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastStatus {
    pub id: u64,
    pub recipients: usize,
    pub delivered: usize,
    /// Telegram refused them (the employee blocked the bot, the chat is gone).
    pub refused: usize,
    pub queued: usize,
    pub unreachable: Vec<EmployeeId>,
}

pub fn broadcast_status(app: &App, id: u64) -> Result<BroadcastStatus> {
    let store = app.store();
    let broadcast = store.broadcast(id)?.ok_or_else(|| Error::Usage(format!("no broadcast {id}")))?;
    let deliveries = store.deliveries(id)?;
    let delivered = deliveries.values().filter(|&&d| d).count();
    let refused = deliveries.values().filter(|&&d| !d).count();
    Ok(BroadcastStatus {
        id,
        recipients: broadcast.recipients.len(),
        delivered,
        refused,
        queued: broadcast.recipients.len().saturating_sub(delivered + refused),
        unreachable: broadcast.unreachable,
    })
}

/// What `reindex` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reindexed {
    pub indexed_chunks: u64,
    pub reembedded: bool,
    /// The model every chunk is embedded with now (`None`: embeddings dropped), after `--reembed`.
    pub model: Option<String>,
}

/// Most days a forecast looks ahead.
pub const MAX_FORECAST_DAYS: u32 = 90;

fn forecast_days(days: u32) -> Result<u32> {
    if !(1..=MAX_FORECAST_DAYS).contains(&days) {
        return Err(Error::Usage(format!("--days must be between 1 and {MAX_FORECAST_DAYS}")));
    }
    Ok(days)
}

/// What the scheduler will send over the next `days` days (`sputnik onboarding upcoming`).
pub fn upcoming(app: &App, now: i64, days: u32) -> Result<Vec<crate::onboarding::Upcoming>> {
    crate::onboarding::schedule::upcoming(app, app.calendar(), now, forecast_days(days)?)
}

/// What plan `id` would send a new hire starting on `start` (`sputnik plans preview`).
pub fn preview_plan(app: &App, id: &str, start: &str, days: u32) -> Result<Vec<crate::onboarding::Upcoming>> {
    let days = forecast_days(days)?;
    let plan: crate::onboarding::Plan = app
        .store()
        .plan(id)?
        .ok_or_else(|| Error::Usage(format!("no plan {id:?} (see `sputnik plans list`)")))?;
    let start: jiff::civil::Date = crate::people::parse_start_date(start)?
        .parse()
        .map_err(|e| Error::Usage(format!("{start:?} is not a date like 2027-01-11: {e}")))?;
    crate::onboarding::schedule::preview(app, app.calendar(), &plan, start, days)
}
