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
pub mod schedule;
mod settings;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::i18n::{escape_html, message};
use crate::reply::{Action, InlineButton};
use crate::store::{Assignment, ChatId, Employee, EmployeeId, Language, QuizAnswer, Store, TaskState};
use crate::{App, Error};
pub use calendar::Calendar;
pub use plan::{Plan, Task};
pub use schedule::{Journey, Upcoming};
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

/// What an answer to a task's quiz led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuizOutcome {
    /// Right: the task is done.
    Correct,
    /// Wrong, and the employee may try again (the task stays open).
    TryAgain,
    /// Wrong; the right answer is shown and the task is done (the plan's `on_wrong = "reveal"`).
    Revealed { answer: String },
    /// The task was already done: nothing changes.
    AlreadyDone,
}

/// Records an answer to a task's quiz. The first answer is kept as what the employee knew;
/// tries after a wrong one only count. A right answer completes the task, and so does a wrong
/// one when the plan reveals the answer. `None` when the task has no quiz or no such choice.
pub fn answer_quiz(
    store: &Store,
    employee: EmployeeId,
    task: &Task,
    choice: usize,
    now: i64,
) -> Result<Option<QuizOutcome>, Error> {
    let Some(quiz) = &task.quiz else { return Ok(None) };
    if choice >= quiz.choices.len() {
        return Ok(None);
    }
    let mut state = store.task_state(employee, &task.id)?;
    if state.done_at.is_some() {
        return Ok(Some(QuizOutcome::AlreadyDone));
    }
    let correct = choice == quiz.answer;
    let answer = match state.quiz {
        Some(first) => QuizAnswer { attempts: first.attempts.max(1) + 1, ..first },
        None => QuizAnswer { choice, correct, at: now, attempts: 1 },
    };
    state.quiz = Some(answer);
    let outcome = match (correct, quiz.on_wrong) {
        (true, _) => QuizOutcome::Correct,
        (false, plan::OnWrong::Reveal) => QuizOutcome::Revealed { answer: quiz.choices[quiz.answer].clone() },
        (false, plan::OnWrong::Retry) => QuizOutcome::TryAgain,
    };
    if outcome != QuizOutcome::TryAgain {
        state.done_at = Some(now);
    }
    store.set_task_state(employee, &task.id, &state)?;
    Ok(Some(outcome))
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

/// One scheduler pass at `now`: queues every scheduled message that is due and not yet sent
/// (see [`schedule`]). Nothing goes out outside the recipient's working hours, and nothing to
/// someone who has not joined Telegram yet.
pub fn tick(app: &App, calendar: &Calendar, now: i64) -> Result<TickReport, Error> {
    let store = app.store();
    let mut report = TickReport::default();
    for journey in schedule::journeys(app, store)? {
        let local = calendar.local(now, &zone_of(calendar, &journey.assignment));
        if !calendar.in_working_hours(&local) {
            continue;
        }
        let id = journey.employee.id;
        let states: std::collections::HashMap<String, TaskState> =
            store.task_states(id)?.into_iter().collect();
        let sent = |key: &str| store.sent_at(id, key).ok().flatten().is_some();
        for scheduled in journey.due_on(calendar, &states, local.date(), &sent) {
            let actions: Vec<Action> = scheduled
                .messages
                .into_iter()
                .filter_map(|m| {
                    Some(Action::Send {
                        chat: ChatId::private(m.telegram?),
                        html: m.html,
                        buttons: m.buttons,
                    })
                })
                .collect();
            if actions.is_empty() {
                // Its recipient has not joined yet: it waits for them.
                continue;
            }
            let queued = usize::from(store.send_once(id, &scheduled.key, &actions, now)?);
            match scheduled.kind {
                schedule::Kind::Day | schedule::Kind::CatchUp => report.welcome += queued,
                schedule::Kind::Introduction => report.introductions += queued,
                schedule::Kind::Reminder => report.reminders += queued,
                schedule::Kind::Escalation => report.escalations += queued,
            }
        }
    }
    Ok(report)
}
