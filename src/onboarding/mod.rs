//! Onboarding journeys: HR's plans (see [`plan`]) run in Telegram. This module decides what an
//! employee sees — the checklist behind /plan, ticks, quizzes, a task's linked documents — and
//! what the scheduler sends on its own: day-by-day welcome messages, the buddy introduction on
//! day one, a daily reminder of due and overdue tasks, and the manager's (or HR's) escalation.
//!
//! Time comes in as unix seconds, so tests run weeks of schedule in seconds. Everything the
//! scheduler sends goes through [`Store::send_once`]: recorded and queued in one transaction,
//! never twice, never lost. Reminders are keyed by the employee's local date, so after downtime
//! each employee gets one reminder for today — not one per missed day.

pub mod calendar;
pub mod plan;
mod settings;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::i18n::{escape_html, message};
use crate::reply::{Action, InlineButton};
use crate::store::{Assignment, ChatId, Employee, EmployeeId, Language, QuizAnswer, Store, TaskState};
use crate::{App, Error};
pub use calendar::Calendar;
pub use plan::{Plan, Task};
pub use settings::OnboardingSettings;

/// Callback data prefix of onboarding buttons.
pub const BUTTON_PREFIX: &str = "ob:";
/// Most task rows with buttons under a checklist.
const MAX_TASK_BUTTONS: usize = 12;

/// Where an employee stands in their plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub employee: EmployeeId,
    pub name: String,
    pub department: String,
    pub plan: String,
    pub start_date: String,
    pub done: usize,
    pub total: usize,
    /// Open tasks whose due date has passed.
    pub overdue: Vec<String>,
    pub quizzes_correct: usize,
    pub quizzes_answered: usize,
    /// Unix seconds of the last tick, quiz answer or question; `None`: nothing yet.
    pub last_activity: Option<i64>,
}

/// The plan an employee follows, with their assignment.
pub fn plan_of(store: &Store, employee: EmployeeId) -> Result<Option<(Assignment, Plan)>, Error> {
    let Some(assignment) = store.assignment(employee)? else { return Ok(None) };
    let plan: Option<Plan> = store.plan(&assignment.plan)?;
    Ok(plan.map(|plan| (assignment, plan)))
}

fn start_date(assignment: &Assignment) -> Date {
    assignment.start_date.parse().unwrap_or(Date::constant(2000, 1, 1))
}

fn zone_of(calendar: &Calendar, assignment: &Assignment) -> jiff::tz::TimeZone {
    assignment
        .timezone
        .as_deref()
        .and_then(|name| calendar::parse_zone(name).ok())
        .unwrap_or_else(|| calendar.default_zone.clone())
}

/// Validates an assignment request against the store and records it.
pub fn assign(
    store: &Store,
    employee: EmployeeId,
    plan_id: &str,
    start: Option<&str>,
    helpers: Helpers,
    now: i64,
) -> Result<Assignment, Error> {
    let employee =
        store.employee(employee)?.ok_or_else(|| Error::Usage(format!("no employee {employee}")))?;
    let plan: Plan = store
        .plan(plan_id)?
        .ok_or_else(|| Error::Usage(format!("no plan {plan_id:?} (see `sputnik plans list`)")))?;
    let start_date = match start.or(employee.start_date.as_deref()) {
        Some(date) => crate::people::parse_start_date(date)?,
        None => jiff::Timestamp::from_second(now).map_or_else(
            |_| "2000-01-01".into(),
            |t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string(),
        ),
    };
    if let Some(zone) = &helpers.timezone {
        calendar::parse_zone(zone).map_err(Error::Usage)?;
    }
    let hr = match helpers.hr {
        Some(hr) => Some(hr),
        None => match &plan.hr {
            Some(name) => Some(find_employee(store, name)?.id),
            None => None,
        },
    };
    for helper in [helpers.buddy, helpers.manager, hr].into_iter().flatten() {
        if helper == employee.id {
            return Err(Error::Usage(format!(
                "{} cannot be their own buddy, manager or HR contact",
                employee.name
            )));
        }
        store.employee(helper)?.ok_or_else(|| Error::Usage(format!("no employee {helper}")))?;
    }
    let assignment = Assignment {
        plan: plan.id.clone(),
        start_date,
        buddy: helpers.buddy,
        manager: helpers.manager,
        hr,
        timezone: helpers.timezone,
        assigned_at: now,
    };
    store.assign(employee.id, &assignment)?;
    Ok(assignment)
}

/// Who helps a newcomer, for [`assign`].
#[derive(Debug, Clone, Default)]
pub struct Helpers {
    pub buddy: Option<EmployeeId>,
    pub manager: Option<EmployeeId>,
    pub hr: Option<EmployeeId>,
    pub timezone: Option<String>,
}

/// An employee by id or by exact name (case-insensitive); a name two people share is refused.
pub fn find_employee(store: &Store, who: &str) -> Result<Employee, Error> {
    if let Ok(id) = who.trim().parse::<u64>()
        && let Some(employee) = store.employee(EmployeeId(id))?
    {
        return Ok(employee);
    }
    let matches: Vec<Employee> =
        store.employees()?.into_iter().filter(|e| e.name.trim().eq_ignore_ascii_case(who.trim())).collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => Err(Error::Usage(format!("no employee named {who:?} (see `sputnik users list`)"))),
        _ => Err(Error::Usage(format!(
            "several employees are named {who:?}: use the id from `sputnik users list`"
        ))),
    }
}

/// Gives a newly joined new hire the plan of their department (and position), if there is one
/// and they have none yet. A new hire is someone invited with a start date; colleagues invited
/// without one (a manager, a buddy) join without a plan.
pub fn assign_on_join(store: &Store, employee: &Employee, now: i64) -> Result<Option<Assignment>, Error> {
    if employee.start_date.is_none() || store.assignment(employee.id)?.is_some() {
        return Ok(None);
    }
    let plans: Vec<Plan> = store.plans()?;
    // A plan naming the position wins over one for the whole department.
    let chosen = plans
        .iter()
        .filter(|p| p.applies_to(&employee.department, employee.position.as_deref()))
        .max_by_key(|p| !p.positions.is_empty());
    match chosen {
        Some(plan) => Ok(Some(assign(store, employee.id, &plan.id, None, Helpers::default(), now)?)),
        None => Ok(None),
    }
}

/// The status of one employee's onboarding.
pub fn progress(
    store: &Store,
    calendar: &Calendar,
    employee: &Employee,
    now: i64,
) -> Result<Option<Progress>, Error> {
    let asked = last_questions(store)?.get(&employee.id).copied();
    progress_of(store, calendar, employee, now, asked)
}

/// The status of everyone with a plan, in employee order; the conversation log is read once.
pub fn everyone(store: &Store, calendar: &Calendar, now: i64) -> Result<Vec<Progress>, Error> {
    let asked = last_questions(store)?;
    let mut rows = Vec::new();
    for employee in store.employees()? {
        if let Some(progress) =
            progress_of(store, calendar, &employee, now, asked.get(&employee.id).copied())?
        {
            rows.push(progress);
        }
    }
    Ok(rows)
}

/// When each employee last asked a question.
fn last_questions(store: &Store) -> Result<std::collections::HashMap<EmployeeId, i64>, Error> {
    let mut last = std::collections::HashMap::new();
    for question in store.questions()? {
        let at = last.entry(question.employee).or_insert(question.asked_at);
        *at = (*at).max(question.asked_at);
    }
    Ok(last)
}

fn progress_of(
    store: &Store,
    calendar: &Calendar,
    employee: &Employee,
    now: i64,
    asked: Option<i64>,
) -> Result<Option<Progress>, Error> {
    let Some((assignment, plan)) = plan_of(store, employee.id)? else { return Ok(None) };
    let states: std::collections::HashMap<String, TaskState> =
        store.task_states(employee.id)?.into_iter().collect();
    let today = calendar.local(now, &zone_of(calendar, &assignment)).date();
    let start = start_date(&assignment);
    let mut progress = Progress {
        employee: employee.id,
        name: employee.name.clone(),
        department: employee.department.clone(),
        plan: plan.id.clone(),
        start_date: assignment.start_date.clone(),
        done: 0,
        total: plan.tasks.len(),
        overdue: Vec::new(),
        quizzes_correct: 0,
        quizzes_answered: 0,
        last_activity: None,
    };
    for task in &plan.tasks {
        let state = states.get(&task.id).cloned().unwrap_or_default();
        if state.done_at.is_some() {
            progress.done += 1;
        } else if calendar.date_of_day(start, task.due_day, plan.days) < today {
            progress.overdue.push(task.id.clone());
        }
        if let Some(quiz) = state.quiz {
            progress.quizzes_answered += 1;
            progress.quizzes_correct += usize::from(quiz.correct);
        }
        for at in [state.done_at, state.quiz.map(|q| q.at)].into_iter().flatten() {
            progress.last_activity = progress.last_activity.max(Some(at));
        }
    }
    progress.last_activity = progress.last_activity.max(asked);
    Ok(Some(progress))
}

fn date_label(date: Date, language: Language) -> String {
    const EN: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const RU: [&str; 12] =
        ["янв", "фев", "мар", "апр", "мая", "июн", "июл", "авг", "сен", "окт", "ноя", "дек"];
    let month = (date.month() - 1) as usize;
    match language {
        Language::En => format!("{} {}", date.day(), EN[month]),
        Language::Ru => format!("{} {}", date.day(), RU[month]),
    }
}

/// The /plan checklist: the message and its buttons.
pub fn checklist(
    store: &Store,
    calendar: &Calendar,
    employee: &Employee,
    language: Language,
    now: i64,
) -> Result<Option<(String, Vec<InlineButton>)>, Error> {
    let Some((assignment, plan)) = plan_of(store, employee.id)? else { return Ok(None) };
    let states: std::collections::HashMap<String, TaskState> =
        store.task_states(employee.id)?.into_iter().collect();
    let today = calendar.local(now, &zone_of(calendar, &assignment)).date();
    let start = start_date(&assignment);
    let done = plan.tasks.iter().filter(|t| states.get(&t.id).is_some_and(|s| s.done_at.is_some())).count();
    let mut html = format!(
        "<b>{}</b>\n{}\n",
        escape_html(&plan.title),
        escape_html(&message(
            language,
            "plan_progress",
            &[("done", &done.to_string()), ("total", &plan.tasks.len().to_string())]
        ))
    );
    let mut buttons = Vec::new();
    let mut rows = 0;
    for task in &plan.tasks {
        let state = states.get(&task.id).cloned().unwrap_or_default();
        let due = calendar.date_of_day(start, task.due_day, plan.days);
        let (mark, when) = if state.done_at.is_some() {
            ("✅", String::new())
        } else if due < today {
            ("⚠️", message(language, "plan_overdue", &[("date", &date_label(due, language))]))
        } else {
            ("⬜", message(language, "plan_due", &[("date", &date_label(due, language))]))
        };
        html.push_str(&format!("\n{mark} {}", escape_html(&task.title)));
        if !when.is_empty() {
            html.push_str(&format!(" — <i>{}</i>", escape_html(&when)));
        }
        if state.done_at.is_none() && rows < MAX_TASK_BUTTONS {
            rows += 1;
            let label = truncate(&task.title, 40);
            if task.quiz.is_some() {
                buttons.push(InlineButton {
                    label: format!("❓ {label}"),
                    data: format!("{BUTTON_PREFIX}q:{}", task.id),
                });
            } else {
                buttons.push(InlineButton {
                    label: format!("☑️ {label}"),
                    data: format!("{BUTTON_PREFIX}t:{}", task.id),
                });
            }
            for (i, _) in task.links.iter().enumerate().take(2) {
                buttons.push(InlineButton {
                    label: format!("📄 {}", truncate(&task.title, 30)),
                    data: format!("{BUTTON_PREFIX}l:{}:{i}", task.id),
                });
            }
        }
    }
    if done == plan.tasks.len() && !plan.tasks.is_empty() {
        html.push_str(&format!("\n\n{}", escape_html(&message(language, "plan_complete", &[]))));
    }
    Ok(Some((html, buttons)))
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(chars - 1).collect::<String>())
    }
}

/// What a press on an onboarding button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    /// Mark the task done (buttons carry the intended state, so a replay changes nothing).
    Done(String),
    Quiz(String),
    Answer(String, usize),
    Link(String, usize),
    OpenPlan,
}

pub fn parse_press(data: &str) -> Option<Press> {
    let rest = data.strip_prefix(BUTTON_PREFIX)?;
    let (kind, args) = rest.split_once(':').unwrap_or((rest, ""));
    let mut parts = args.split(':');
    let task = parts.next().unwrap_or_default().to_owned();
    let number = parts.next().and_then(|n| n.parse::<usize>().ok());
    match (kind, number) {
        ("p", _) => Some(Press::OpenPlan),
        ("t", None) if !task.is_empty() => Some(Press::Done(task)),
        ("q", None) if !task.is_empty() => Some(Press::Quiz(task)),
        ("a", Some(n)) if !task.is_empty() => Some(Press::Answer(task, n)),
        ("l", Some(n)) if !task.is_empty() => Some(Press::Link(task, n)),
        _ => None,
    }
}

/// Marks a task done (idempotent). Returns whether it changed anything.
pub fn mark_done(store: &Store, employee: EmployeeId, task: &Task, now: i64) -> Result<bool, Error> {
    let mut state = store.task_state(employee, &task.id)?;
    if state.done_at.is_some() {
        return Ok(false);
    }
    state.done_at = Some(now);
    store.set_task_state(employee, &task.id, &state)?;
    Ok(true)
}

/// Records the first answer to a task's quiz (later ones change nothing); a right answer
/// completes the task. Returns the recorded answer.
pub fn answer_quiz(
    store: &Store,
    employee: EmployeeId,
    task: &Task,
    choice: usize,
    now: i64,
) -> Result<Option<QuizAnswer>, Error> {
    let Some(quiz) = &task.quiz else { return Ok(None) };
    if choice >= quiz.choices.len() {
        return Ok(None);
    }
    let mut state = store.task_state(employee, &task.id)?;
    if let Some(previous) = state.quiz {
        return Ok(Some(previous));
    }
    let answer = QuizAnswer { choice, correct: choice == quiz.answer, at: now };
    state.quiz = Some(answer);
    if answer.correct && state.done_at.is_none() {
        state.done_at = Some(now);
    }
    store.set_task_state(employee, &task.id, &state)?;
    Ok(Some(answer))
}

/// What one scheduler pass queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub welcome: usize,
    pub introductions: usize,
    pub reminders: usize,
    pub escalations: usize,
}

impl TickReport {
    pub fn total(&self) -> usize {
        self.welcome + self.introductions + self.reminders + self.escalations
    }
}

/// A message to the private chat of the Telegram user `telegram_id`.
fn send(telegram_id: i64, html: String, buttons: Vec<InlineButton>) -> Action {
    Action::Send { chat: ChatId::private(telegram_id), html, buttons }
}

/// One scheduler pass at `now`: queues every scheduled message that is due and not yet sent.
/// Nothing goes out outside the recipient's working hours.
pub fn tick(app: &App, calendar: &Calendar, now: i64) -> Result<TickReport, Error> {
    let store = app.store();
    let mut report = TickReport::default();
    for (employee_id, assignment) in store.assignments()? {
        let Some(employee) = store.employee(employee_id)? else { continue };
        let (true, Some(chat)) = (employee.active, employee.telegram_id) else { continue };
        let Some(plan) = store.plan::<Plan>(&assignment.plan)? else { continue };
        let zone = zone_of(calendar, &assignment);
        let local = calendar.local(now, &zone);
        if !calendar.in_working_hours(&local) {
            continue;
        }
        let today = local.date();
        let start = start_date(&assignment);
        let language = employee.language.unwrap_or(plan.language);
        let assigned = calendar.local(assignment.assigned_at, &zone).date();

        // Day-by-day messages: today's, and any earlier one since the assignment that downtime held back.
        for (i, day_message) in plan.messages.iter().enumerate() {
            let date = calendar.date_of_day(start, day_message.day, plan.days);
            if date <= today && date >= assigned.min(start) {
                let key = format!("welcome/{}/{i}", day_message.day);
                let action = send(chat, escape_html(&day_message.text), Vec::new());
                report.welcome += usize::from(store.send_once(employee.id, &key, &[action], now)?);
            }
        }

        // The buddy introduction, from day one.
        if let Some(buddy) = assignment.buddy.map(|b| store.employee(b)).transpose()?.flatten()
            && calendar.date_of_day(start, 1, plan.days) <= today
        {
            let mut actions = vec![send(
                chat,
                message(language, "buddy_intro_newcomer", &[("buddy", &buddy.name)]),
                Vec::new(),
            )];
            if let (true, Some(buddy_chat)) = (buddy.active, buddy.telegram_id) {
                let buddy_language = buddy.language.unwrap_or(plan.language);
                actions.push(send(
                    buddy_chat,
                    message(
                        buddy_language,
                        "buddy_intro_buddy",
                        &[("name", &employee.name), ("department", &employee.department)],
                    ),
                    Vec::new(),
                ));
            }
            report.introductions += usize::from(store.send_once(employee.id, "intro", &actions, now)?);
        }

        // Today's reminder of due and overdue tasks, and escalations of long-overdue ones.
        let states: std::collections::HashMap<String, TaskState> =
            store.task_states(employee.id)?.into_iter().collect();
        let mut due_today = Vec::new();
        let mut overdue = Vec::new();
        for task in &plan.tasks {
            if states.get(&task.id).is_some_and(|s| s.done_at.is_some()) {
                continue;
            }
            let due = calendar.date_of_day(start, task.due_day, plan.days);
            if due == today {
                due_today.push(task);
            } else if due < today {
                overdue.push((task, due));
            }
        }
        if !due_today.is_empty() || !overdue.is_empty() {
            let mut html = escape_html(&message(language, "reminder_intro", &[]));
            for task in &due_today {
                html.push_str(&format!("\n⬜ {}", escape_html(&task.title)));
            }
            for (task, due) in &overdue {
                let late = message(language, "plan_overdue", &[("date", &date_label(*due, language))]);
                html.push_str(&format!("\n⚠️ {} — <i>{}</i>", escape_html(&task.title), escape_html(&late)));
            }
            let button = InlineButton {
                label: message(language, "reminder_open_plan", &[]),
                data: format!("{BUTTON_PREFIX}p"),
            };
            let key = format!("remind/{today}");
            report.reminders +=
                usize::from(store.send_once(employee.id, &key, &[send(chat, html, vec![button])], now)?);
        }
        let escalate_after =
            plan.escalate_after_days.unwrap_or(app.settings().onboarding.escalate_after_days);
        let target = match assignment.manager.or(assignment.hr) {
            Some(id) => store.employee(id)?.filter(|e| e.active),
            None => None,
        };
        if let Some(target) = target
            && let Some(target_chat) = target.telegram_id
        {
            let target_language = target.language.unwrap_or(plan.language);
            for (task, due) in &overdue {
                let late = calendar.working_days_late(*due, today);
                if late < escalate_after {
                    continue;
                }
                let html = message(
                    target_language,
                    "escalation",
                    &[
                        ("name", &employee.name),
                        ("task", &task.title),
                        ("days", &late.to_string()),
                        ("plan", &plan.title),
                    ],
                );
                let key = format!("escalate/{}", task.id);
                report.escalations += usize::from(store.send_once(
                    employee.id,
                    &key,
                    &[send(target_chat, html, Vec::new())],
                    now,
                )?);
            }
        }
    }
    Ok(report)
}
