//! `sputnik plans …`, `sputnik users assign` and `sputnik onboarding status`.

use std::io::Write;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use reqwest::Method;

use super::print_json;
use super::remote::Source;
use crate::admin;
use crate::cli::{AssignArgs, BroadcastArgs, OnboardingCommand, PlansCommand, StatusArgs, exit};
use crate::config::Settings;
use crate::onboarding::{self, Plan, plan::DayCount};

pub(super) fn plans(settings: Settings, command: PlansCommand) -> anyhow::Result<i32> {
    if let PlansCommand::Show { id, output } = &command {
        let plan: Option<Plan> = match super::remote::open(settings)? {
            Source::Local(app) => app.store().plan(id)?,
            Source::Service(service) => {
                let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
                service.get(&format!("/api/plans/{path}"))?
            }
        };
        return show_plan(id, plan, output.json);
    }
    if let PlansCommand::Preview { id, start, days, output } = &command {
        let forecast: Vec<onboarding::Upcoming> = match super::remote::open(settings)? {
            Source::Local(app) => admin::preview_plan(&app, id, start, *days)?,
            Source::Service(service) => {
                let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
                let start: String = url::form_urlencoded::byte_serialize(start.as_bytes()).collect();
                service.get(&format!("/api/plans/{path}/preview?start={start}&days={days}"))?
            }
        };
        return print_forecast(&forecast, output.json, false);
    }
    if let PlansCommand::List(output) = command {
        let plans: Vec<Plan> = match super::remote::open(settings)? {
            Source::Local(app) => app.store().plans()?,
            Source::Service(service) => service.get("/api/plans")?,
        };
        return list_plans(&plans, output.json);
    }
    match command {
        PlansCommand::Import { files, output } => {
            let source = super::remote::open(settings)?;
            let mut imported = Vec::new();
            let mut failed = 0;
            for file in &files {
                let text = match std::fs::read_to_string(file) {
                    Ok(text) => text,
                    Err(e) => {
                        eprintln!("{}: cannot read: {e}", file.display());
                        failed += 1;
                        continue;
                    }
                };
                let name = file.display().to_string();
                let checked = match &source {
                    Source::Local(app) => admin::import_plan(app, &name, &text)?,
                    Source::Service(service) => {
                        match service.put_bytes_or_refusal(
                            &format!("/api/plans?name={}", super::remote::escape(&name)),
                            text.into_bytes(),
                        )? {
                            Ok(plan) => Ok(plan),
                            Err(refusal) => Err(refusal["errors"]
                                .as_array()
                                .map(|errors| {
                                    errors.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect()
                                })
                                .unwrap_or_else(|| {
                                    vec![refusal["error"].as_str().unwrap_or_default().to_owned()]
                                })),
                        }
                    }
                };
                match checked {
                    Ok(plan) => imported.push(plan),
                    Err(errors) => {
                        for error in &errors {
                            eprintln!("{error}");
                        }
                        failed += 1;
                    }
                }
            }
            if output.json {
                print_json(&serde_json::json!({
                    "imported": imported.iter().map(|p| &p.id).collect::<Vec<_>>(),
                    "failed": failed,
                }))?;
            } else {
                for plan in &imported {
                    println!(
                        "Imported plan {} ({}): {} tasks, {} messages.",
                        plan.id,
                        plan.title,
                        plan.tasks.len(),
                        plan.messages.len()
                    );
                }
                if failed > 0 {
                    eprintln!("{failed} file(s) not imported; nothing of them was stored.");
                }
            }
            Ok(if failed > 0 { exit::PARTIAL } else { exit::OK })
        }
        PlansCommand::List(_) => unreachable!("listed above"),
        PlansCommand::Show { .. } => unreachable!("shown above"),
        PlansCommand::Preview { .. } => unreachable!("previewed above"),
    }
}

fn show_plan(id: &str, plan: Option<Plan>, json: bool) -> anyhow::Result<i32> {
    let Some(plan) = plan else {
        eprintln!("No plan {id:?}; see `sputnik plans list`.");
        return Ok(exit::USAGE);
    };
    if json {
        print_json(&plan)?;
        return Ok(exit::OK);
    }
    let days = match plan.days {
        DayCount::Working => "working days",
        DayCount::Calendar => "calendar days",
    };
    println!("{} — {} ({}, counted in {days})", plan.id, plan.title, plan.language.code());
    println!("  from        {}", plan.source);
    if !plan.departments.is_empty() {
        println!("  for         {}", plan.departments.join(", "));
    }
    if !plan.positions.is_empty() {
        println!("  positions   {}", plan.positions.join(", "));
    }
    for message in &plan.messages {
        println!("  day {:>3}  message: {}", message.day, first_line(&message.text));
    }
    for task in &plan.tasks {
        let quiz = if task.quiz.is_some() { " [quiz]" } else { "" };
        println!("  day {:>3}  task {}: {}{quiz}", task.due_day, task.id, task.title);
        for link in &task.links {
            println!("            → {link}");
        }
    }
    Ok(exit::OK)
}

fn list_plans(plans: &[Plan], json: bool) -> anyhow::Result<i32> {
    if json {
        print_json(&plans)?;
    } else if plans.is_empty() {
        println!("No plans yet: sputnik plans import FILE (examples in assets/plans/)");
    } else {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header(["id", "title", "language", "departments", "tasks", "messages"]);
        for plan in plans {
            table.add_row([
                plan.id.clone(),
                plan.title.clone(),
                plan.language.code().to_owned(),
                if plan.departments.is_empty() { "—".into() } else { plan.departments.join(", ") },
                plan.tasks.len().to_string(),
                plan.messages.len().to_string(),
            ]);
        }
        println!("{table}");
    }
    Ok(exit::OK)
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 70 {
        format!("{}…", line.chars().take(69).collect::<String>())
    } else {
        line.to_owned()
    }
}

pub(super) fn assign(settings: Settings, args: AssignArgs) -> anyhow::Result<i32> {
    let request = admin::Assign {
        employee: args.employee,
        plan: args.plan,
        start: args.start,
        buddy: args.buddy,
        manager: args.manager,
        hr: args.hr,
        timezone: args.timezone,
    };
    let assigned: admin::Assigned = match super::remote::open(settings)? {
        Source::Local(app) => admin::assign(&app, &request, jiff::Timestamp::now().as_second())?,
        Source::Service(service) => service.send(Method::POST, "/api/assignments", &request)?,
    };
    if args.output.json {
        print_json(&assigned.assignment)?;
    } else {
        println!(
            "{} follows plan {} from {}.",
            assigned.name, assigned.assignment.plan, assigned.assignment.start_date
        );
    }
    Ok(exit::OK)
}

pub(super) fn run(settings: Settings, command: OnboardingCommand) -> anyhow::Result<i32> {
    match command {
        OnboardingCommand::Status(args) => status(settings, args),
        OnboardingCommand::Upcoming { days, output } => {
            let forecast: Vec<onboarding::Upcoming> = match super::remote::open(settings)? {
                Source::Local(app) => admin::upcoming(&app, jiff::Timestamp::now().as_second(), days)?,
                Source::Service(service) => service.get(&format!("/api/onboarding/upcoming?days={days}"))?,
            };
            print_forecast(&forecast, output.json, true)
        }
    }
}

/// A forecast as a table (when, to whom, what, the first line) or JSON.
fn print_forecast(forecast: &[onboarding::Upcoming], json: bool, per_employee: bool) -> anyhow::Result<i32> {
    if json {
        print_json(&forecast)?;
        return Ok(exit::OK);
    }
    if forecast.is_empty() {
        println!("Nothing is scheduled in that time.");
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    let mut header = vec!["when (local)", "to", "what", "message"];
    if per_employee {
        header.insert(1, "plan of");
    }
    table.set_header(header);
    for item in forecast {
        for message in &item.scheduled.messages {
            let what = match item.scheduled.kind {
                onboarding::schedule::Kind::Day => "day message",
                onboarding::schedule::Kind::CatchUp => "catch-up",
                onboarding::schedule::Kind::Introduction => "introduction",
                onboarding::schedule::Kind::Reminder => "reminder",
                onboarding::schedule::Kind::Escalation => "escalation",
            };
            let text = crate::answer::strip_tags(&message.html);
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let mut row =
                vec![item.at.clone(), message.to.clone(), what.to_owned(), first_line(&lines.join(" · "))];
            if per_employee {
                row.insert(1, item.employee.clone());
            }
            table.add_row(row);
        }
    }
    println!("{table}");
    Ok(exit::OK)
}

fn status(settings: Settings, args: StatusArgs) -> anyhow::Result<i32> {
    let all: Vec<onboarding::Progress> = match super::remote::open(settings)? {
        Source::Local(app) => {
            onboarding::everyone(app.store(), app.calendar(), jiff::Timestamp::now().as_second())?
        }
        Source::Service(service) => service.get("/api/onboarding")?,
    };
    let rows: Vec<onboarding::Progress> = all
        .into_iter()
        .filter(|p| args.department.as_deref().is_none_or(|d| p.department.eq_ignore_ascii_case(d.trim())))
        .filter(|p| !args.overdue || !p.overdue.is_empty())
        .collect();
    let last = |at: Option<i64>| {
        at.and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map_or_else(String::new, |t| t.strftime("%Y-%m-%d %H:%M").to_string())
    };
    if args.json {
        print_json(&rows)?;
    } else if args.csv {
        let mut out = csv::Writer::from_writer(std::io::stdout().lock());
        out.write_record([
            "employee",
            "name",
            "department",
            "plan",
            "start_date",
            "done",
            "total",
            "overdue",
            "quizzes_correct",
            "quizzes_answered",
            "last_activity",
        ])?;
        for p in &rows {
            out.write_record([
                p.employee.to_string(),
                p.name.clone(),
                p.department.clone(),
                p.plan.clone(),
                p.start_date.clone(),
                p.done.to_string(),
                p.total.to_string(),
                p.overdue.join(" "),
                p.quizzes_correct.to_string(),
                p.quizzes_answered.to_string(),
                last(p.last_activity),
            ])?;
        }
        out.flush()?;
    } else if rows.is_empty() {
        println!("Nobody is onboarding{}.", if args.overdue { " with overdue tasks" } else { "" });
    } else {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header([
            "id",
            "name",
            "department",
            "plan",
            "start",
            "done",
            "overdue",
            "quizzes",
            "last activity",
        ]);
        for p in &rows {
            table.add_row([
                p.employee.to_string(),
                p.name.clone(),
                p.department.clone(),
                p.plan.clone(),
                p.start_date.clone(),
                format!("{}/{}", p.done, p.total),
                if p.overdue.is_empty() { "—".into() } else { p.overdue.join(", ") },
                format!("{}/{}", p.quizzes_correct, p.quizzes_answered),
                last(p.last_activity),
            ]);
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{table}")?;
    }
    Ok(exit::OK)
}

pub(super) fn broadcast(settings: Settings, args: BroadcastArgs) -> anyhow::Result<i32> {
    let source = super::remote::open(settings)?;
    if let Some(id) = args.status {
        let status: admin::BroadcastStatus = match &source {
            Source::Local(app) => admin::broadcast_status(app, id)?,
            Source::Service(service) => service.get(&format!("/api/broadcasts/{id}"))?,
        };
        if args.output.json {
            print_json(&status)?;
        } else {
            println!(
                "Broadcast {id}: {} delivered, {} refused by Telegram, {} still queued \
                 (of {} recipients); {} not in Telegram.",
                status.delivered,
                status.refused,
                status.queued,
                status.recipients,
                status.unreachable.len()
            );
        }
        return Ok(exit::OK);
    }
    let request = admin::BroadcastRequest {
        text: args.text.unwrap_or_default(),
        groups: args.groups,
        departments: args.departments,
    };
    let queued: admin::Queued = match &source {
        Source::Local(app) => admin::broadcast(app, &request, jiff::Timestamp::now().as_second())?,
        Source::Service(service) => service.send(Method::POST, "/api/broadcasts", &request)?,
    };
    if args.output.json {
        print_json(&queued)?;
    } else {
        println!(
            "Broadcast {} queued for {} employees; `sputnik serve` sends it within Telegram's limits. \
             `sputnik broadcast --status {}` reports the deliveries.",
            queued.id, queued.queued, queued.id
        );
        if !queued.unreachable.is_empty() {
            println!(
                "{} matching employees have not joined Telegram yet and will not get it.",
                queued.unreachable.len()
            );
        }
    }
    Ok(exit::OK)
}
