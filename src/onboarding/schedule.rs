//! The scheduler's rules: what goes to whom on which working day. One function decides ([`Journey::due_on`]);
//! the scheduler's pass sends what is due today, `sputnik onboarding upcoming` lists what the
//! coming days will bring, and `sputnik plans preview` shows a plan for a start date before
//! anyone is invited — so what HR reads is what the service will do.
//!
//! Joining late never means a burst: day messages from before the employee could read them come
//! as one catch-up message; nobody is told "starts today" on another day; and a task overdue
//! before the employee joined counts its working days late from the day they joined.

use std::collections::{HashMap, HashSet};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{BUTTON_PREFIX, Calendar, Plan, date_label, start_date, zone_of};
use crate::i18n::{escape_html, message};
use crate::reply::InlineButton;
use crate::store::{Assignment, Employee, Language, Store, TaskState};
use crate::{App, Error};

/// What kind of scheduled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One of the plan's day-by-day messages.
    Day,
    /// The day messages of the days before the employee joined, together.
    CatchUp,
    /// The buddy introduction, to the newcomer and the buddy.
    Introduction,
    /// The day's due and overdue tasks.
    Reminder,
    /// A long-overdue task, to the manager (or HR).
    Escalation,
}

/// One message to one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The recipient's name, as `sputnik users list` shows it.
    pub to: String,
    #[serde(skip)]
    pub telegram: Option<i64>,
    pub html: String,
    #[serde(skip)]
    pub buttons: Vec<InlineButton>,
}

/// A scheduled message: sent once under its key, to one or more people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    pub key: String,
    pub kind: Kind,
    pub messages: Vec<Outgoing>,
}

/// An employee's journey through their plan, with everyone it involves.
#[derive(Debug, Clone)]
pub struct Journey {
    pub employee: Employee,
    pub assignment: Assignment,
    pub plan: Plan,
    pub buddy: Option<Employee>,
    /// Who hears about long-overdue tasks: the manager, else HR.
    pub escalate_to: Option<Employee>,
    pub escalate_after: u32,
}

impl Journey {
    /// The journey of an active employee with a plan; `None` for anyone else.
    pub fn load(app: &App, employee: Employee, assignment: Assignment) -> Result<Option<Journey>, Error> {
        let store = app.store();
        if !employee.active {
            return Ok(None);
        }
        let Some(plan) = store.plan::<Plan>(&assignment.plan)? else { return Ok(None) };
        let buddy = assignment.buddy.map(|b| store.employee(b)).transpose()?.flatten();
        let escalate_to = match assignment.manager.or(assignment.hr) {
            Some(id) => store.employee(id)?.filter(|e| e.active),
            None => None,
        };
        let escalate_after =
            plan.escalate_after_days.unwrap_or(app.settings().onboarding.escalate_after_days);
        Ok(Some(Journey { employee, assignment, plan, buddy, escalate_to, escalate_after }))
    }

    fn language(&self) -> Language {
        self.employee.language.unwrap_or(self.plan.language)
    }

    /// The first local date the employee could read what is sent: assigned a plan and joined.
    pub fn reachable_from(&self, calendar: &Calendar) -> Date {
        let zone = zone_of(calendar, &self.assignment);
        let since =
            self.employee.joined_at.unwrap_or(self.assignment.assigned_at).max(self.assignment.assigned_at);
        calendar.local(since, &zone).date()
    }

    /// Everything due on `today` (a working day, in the employee's zone), given the task states
    /// and which keys went out already (`sent`). Includes what downtime held back.
    pub fn due_on(
        &self,
        calendar: &Calendar,
        states: &HashMap<String, TaskState>,
        today: Date,
        sent: &dyn Fn(&str) -> bool,
    ) -> Vec<Scheduled> {
        let plan = &self.plan;
        let start = start_date(&self.assignment);
        // Never after `today`: an assignment stamped later than now (a clock set differently)
        // must not hide today's messages.
        let reachable = self.reachable_from(calendar).min(today);
        let language = self.language();
        let me = |html: String, buttons: Vec<InlineButton>| Outgoing {
            to: self.employee.name.clone(),
            telegram: self.employee.telegram_id,
            html,
            buttons,
        };
        let mut due = Vec::new();

        // Day messages: one each from the day the employee could read them; those of earlier
        // days (a late joiner's) together in one catch-up message.
        let mut missed = Vec::new();
        for (i, day_message) in plan.messages.iter().enumerate() {
            let date = calendar.date_of_day(start, day_message.day, plan.days);
            let key = format!("welcome/{}/{i}", day_message.day);
            if date > today || sent(&key) {
                continue;
            }
            if date < reachable {
                missed.push(day_message);
            } else {
                due.push(Scheduled {
                    key,
                    kind: Kind::Day,
                    messages: vec![me(escape_html(&day_message.text), Vec::new())],
                });
            }
        }
        if !missed.is_empty() && !sent("catch-up") {
            // Catalogue messages are HTML already, their placeholders escaped.
            let mut html = message(
                language,
                "catch_up_intro",
                &[("plan", &plan.title), ("date", &date_label(start, language))],
            );
            for day_message in missed {
                let day = message(language, "catch_up_day", &[("day", &day_message.day.to_string())]);
                html.push_str(&format!("\n\n<b>{day}</b>\n{}", escape_html(&day_message.text)));
            }
            due.push(Scheduled {
                key: "catch-up".into(),
                kind: Kind::CatchUp,
                messages: vec![me(html, Vec::new())],
            });
        }

        // The buddy introduction, from day one; "starts today" only on the day it is true.
        if let Some(buddy) = &self.buddy
            && calendar.date_of_day(start, 1, plan.days) <= today
            && !sent("intro")
        {
            let on_time = today == start;
            let started = date_label(start, buddy.language.unwrap_or(plan.language));
            let mut messages = vec![me(
                message(
                    language,
                    if on_time { "buddy_intro_newcomer" } else { "buddy_intro_newcomer_late" },
                    &[("buddy", &buddy.name)],
                ),
                Vec::new(),
            )];
            if buddy.active {
                let buddy_language = buddy.language.unwrap_or(plan.language);
                messages.push(Outgoing {
                    to: buddy.name.clone(),
                    telegram: buddy.telegram_id,
                    html: message(
                        buddy_language,
                        if on_time { "buddy_intro_buddy" } else { "buddy_intro_buddy_late" },
                        &[
                            ("name", &self.employee.name),
                            ("department", &self.employee.department),
                            ("date", &started),
                        ],
                    ),
                    buttons: Vec::new(),
                });
            }
            due.push(Scheduled { key: "intro".into(), kind: Kind::Introduction, messages });
        }

        // Today's reminder of due and overdue tasks.
        let open: Vec<(&super::Task, Date)> = plan
            .tasks
            .iter()
            .filter(|task| states.get(&task.id).is_none_or(|s| s.done_at.is_none()))
            .map(|task| (task, calendar.date_of_day(start, task.due_day, plan.days)))
            .filter(|(_, due)| *due <= today)
            .collect();
        let reminder_key = format!("remind/{today}");
        if !open.is_empty() && !sent(&reminder_key) {
            let mut html = escape_html(&message(language, "reminder_intro", &[]));
            for (task, due) in &open {
                if *due == today {
                    html.push_str(&format!("\n⬜ {}", escape_html(&task.title)));
                }
            }
            for (task, due) in open.iter().filter(|(_, due)| *due < today) {
                let late = message(language, "plan_overdue", &[("date", &date_label(*due, language))]);
                html.push_str(&format!("\n⚠️ {} — <i>{}</i>", escape_html(&task.title), escape_html(&late)));
            }
            let button = InlineButton {
                label: message(language, "reminder_open_plan", &[]),
                data: format!("{BUTTON_PREFIX}p"),
            };
            due.push(Scheduled {
                key: reminder_key,
                kind: Kind::Reminder,
                messages: vec![me(html, vec![button])],
            });
        }

        // Escalations: working days late are counted from the day the employee could see the
        // task, so nobody is reported for what was overdue before they joined.
        if let Some(target) = &self.escalate_to {
            let target_language = target.language.unwrap_or(plan.language);
            for (task, due_date) in open.iter().filter(|(_, due)| *due < today) {
                let key = format!("escalate/{}", task.id);
                let late = calendar.working_days_late((*due_date).max(reachable), today);
                if late < self.escalate_after || sent(&key) {
                    continue;
                }
                let html = message(
                    target_language,
                    "escalation",
                    &[
                        ("name", &self.employee.name),
                        ("task", &task.title),
                        ("days", &late.to_string()),
                        ("plan", &plan.title),
                    ],
                );
                due.push(Scheduled {
                    key,
                    kind: Kind::Escalation,
                    messages: vec![Outgoing {
                        to: target.name.clone(),
                        telegram: target.telegram_id,
                        html,
                        buttons: Vec::new(),
                    }],
                });
            }
        }
        due
    }
}

/// A scheduled message in a forecast: when it goes out, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upcoming {
    /// Local date and time it goes out (the start of working hours, or now if that has passed).
    pub at: String,
    /// The employee whose plan it belongs to.
    pub employee: String,
    pub plan: String,
    #[serde(flatten)]
    pub scheduled: Scheduled,
}

/// What the scheduler will send over the next `days` days, assuming nobody ticks anything off
/// meanwhile: per working day, what is due and not yet sent. For everyone with a plan who has
/// joined (messages wait for those who have not).
pub fn upcoming(app: &App, calendar: &Calendar, now: i64, days: u32) -> Result<Vec<Upcoming>, Error> {
    let store = app.store();
    let mut out = Vec::new();
    for journey in journeys(app, store)? {
        let id = journey.employee.id;
        let states: HashMap<String, TaskState> = store.task_states(id)?.into_iter().collect();
        let already = |key: &str| store.sent_at(id, key).ok().flatten().is_some();
        out.extend(forecast(&journey, calendar, &states, now, days, &already));
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.employee.cmp(&b.employee)));
    Ok(out)
}

/// What a plan would send a new hire starting on `start` (with a buddy and a manager), day by
/// day over `days` days from the start: a preview before anyone is invited.
pub fn preview(
    app: &App,
    calendar: &Calendar,
    plan: &Plan,
    start: Date,
    days: u32,
) -> Result<Vec<Upcoming>, Error> {
    let zone = calendar.default_zone.clone();
    let morning = start
        .to_datetime(calendar.work_start)
        .to_zoned_datetime(zone)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let person = |name: &str, id: u64| Employee {
        id: crate::store::EmployeeId(id),
        name: name.to_owned(),
        department: plan.departments.first().cloned().unwrap_or_default(),
        position: None,
        role: crate::store::Role::Employee,
        groups: Vec::new(),
        start_date: Some(start.to_string()),
        active: true,
        telegram_id: Some(0),
        language: Some(plan.language),
        created_at: morning.timestamp().as_second(),
        joined_at: Some(morning.timestamp().as_second()),
    };
    let (hire, buddy, manager) = match plan.language {
        Language::Ru => (person("Новый сотрудник", 0), person("Бадди", 0), person("Руководитель", 0)),
        Language::En => (person("New hire", 0), person("Buddy", 0), person("Manager", 0)),
    };
    let journey = Journey {
        assignment: Assignment {
            plan: plan.id.clone(),
            start_date: start.to_string(),
            buddy: Some(buddy.id),
            manager: Some(manager.id),
            hr: None,
            timezone: None,
            assigned_at: morning.timestamp().as_second(),
        },
        employee: hire,
        plan: plan.clone(),
        buddy: Some(buddy),
        escalate_to: Some(manager),
        escalate_after: plan.escalate_after_days.unwrap_or(app.settings().onboarding.escalate_after_days),
    };
    Ok(forecast(&journey, calendar, &HashMap::new(), morning.timestamp().as_second(), days, &|_| false))
}

/// Walks the working days from `now` for `days` days, collecting what each would send.
fn forecast(
    journey: &Journey,
    calendar: &Calendar,
    states: &HashMap<String, TaskState>,
    now: i64,
    days: u32,
    already: &dyn Fn(&str) -> bool,
) -> Vec<Upcoming> {
    let zone = zone_of(calendar, &journey.assignment);
    let local = calendar.local(now, &zone);
    let mut listed: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut date = local.date();
    for _ in 0..days {
        if calendar.is_working_day(date) && !(date == local.date() && local.time() >= calendar.work_end) {
            let at = if date == local.date() && local.time() > calendar.work_start {
                local.time()
            } else {
                calendar.work_start
            };
            let sent = |key: &str| already(key) || listed.contains(key);
            let due = journey.due_on(calendar, states, date, &sent);
            for scheduled in due {
                listed.insert(scheduled.key.clone());
                out.push(Upcoming {
                    at: format!("{date} {}", at.strftime("%H:%M")),
                    employee: journey.employee.name.clone(),
                    plan: journey.plan.id.clone(),
                    scheduled,
                });
            }
        }
        date = date.tomorrow().expect("dates stay far from the end of time");
    }
    out
}

/// Reads everyone's journeys for the scheduler's pass.
pub(super) fn journeys(app: &App, store: &Store) -> Result<Vec<Journey>, Error> {
    let mut out = Vec::new();
    for (employee_id, assignment) in store.assignments()? {
        let Some(employee) = store.employee(employee_id)? else { continue };
        if employee.telegram_id.is_none() {
            continue;
        }
        if let Some(journey) = Journey::load(app, employee, assignment)? {
            out.push(journey);
        }
    }
    Ok(out)
}
