//! `sputnik plans …`, `sputnik users assign` and `sputnik onboarding status`.

use std::io::Write;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use super::{open_existing, print_json};
use crate::chat::Action;
use crate::cli::{AssignArgs, BroadcastArgs, OnboardingCommand, PlansCommand, StatusArgs, exit};
use crate::config::Settings;
use crate::i18n::escape_html;
use crate::onboarding::{self, Helpers, Plan, plan::DayCount};
use crate::store::{Broadcast, Recipient};

pub(super) fn plans(settings: Settings, command: PlansCommand) -> anyhow::Result<i32> {
    if let PlansCommand::Show { id, output } = &command {
        let plan: Option<Plan> = match super::remote::open(settings)? {
            super::remote::Source::Local(app) => app.store().plan(id)?,
            super::remote::Source::Service(service) => {
                let path: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
                service.get(&format!("/api/plans/{path}"))?
            }
        };
        return show_plan(id, plan, output.json);
    }
    if let PlansCommand::List(output) = command {
        let plans: Vec<Plan> = match super::remote::open(settings)? {
            super::remote::Source::Local(app) => app.store().plans()?,
            super::remote::Source::Service(service) => service.get("/api/plans")?,
        };
        return list_plans(&plans, output.json);
    }
    let app = open_existing(settings)?;
    let store = app.store();
    match command {
        PlansCommand::Import { files, output } => {
            let sources: std::collections::HashSet<String> =
                store.documents()?.into_iter().map(|d| d.source).collect();
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
                match onboarding::plan::parse(file, &text, &|link| sources.contains(link)) {
                    Ok(plan) => {
                        store.put_plan(&plan.id, &plan)?;
                        imported.push(plan);
                    }
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
    let app = open_existing(settings)?;
    let store = app.store();
    let employee = onboarding::find_employee(store, &args.employee)?;
    let who = |name: &Option<String>| -> anyhow::Result<_> {
        Ok(match name {
            Some(name) => Some(onboarding::find_employee(store, name)?.id),
            None => None,
        })
    };
    let helpers = Helpers {
        buddy: who(&args.buddy)?,
        manager: who(&args.manager)?,
        hr: who(&args.hr)?,
        timezone: args.timezone.clone(),
    };
    let now = jiff::Timestamp::now().as_second();
    let assignment = onboarding::assign(store, employee.id, &args.plan, args.start.as_deref(), helpers, now)?;
    if args.output.json {
        print_json(&assignment)?;
    } else {
        println!("{} follows plan {} from {}.", employee.name, assignment.plan, assignment.start_date);
    }
    Ok(exit::OK)
}

pub(super) fn run(settings: Settings, command: OnboardingCommand) -> anyhow::Result<i32> {
    match command {
        OnboardingCommand::Status(args) => status(settings, args),
    }
}

fn status(settings: Settings, args: StatusArgs) -> anyhow::Result<i32> {
    let all: Vec<onboarding::Progress> = match super::remote::open(settings)? {
        super::remote::Source::Local(app) => {
            onboarding::everyone(app.store(), app.calendar(), jiff::Timestamp::now().as_second())?
        }
        super::remote::Source::Service(service) => service.get("/api/onboarding")?,
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
    let app = open_existing(settings)?;
    let store = app.store();
    if let Some(id) = args.status {
        let Some(broadcast) = store.broadcast(id)? else {
            eprintln!("No broadcast {id}.");
            return Ok(exit::USAGE);
        };
        let deliveries = store.deliveries(id)?;
        let delivered = deliveries.values().filter(|&&d| d).count();
        let refused = deliveries.values().filter(|&&d| !d).count();
        let queued = broadcast.recipients.len() - delivered - refused;
        if args.output.json {
            print_json(&serde_json::json!({
                "id": id,
                "recipients": broadcast.recipients.len(),
                "delivered": delivered,
                "refused": refused,
                "queued": queued,
                "unreachable": broadcast.unreachable,
            }))?;
        } else {
            println!(
                "Broadcast {id}: {delivered} delivered, {refused} refused by Telegram, {queued} still queued \
                 (of {} recipients); {} not in Telegram.",
                broadcast.recipients.len(),
                broadcast.unreachable.len()
            );
        }
        return Ok(exit::OK);
    }
    let text = args.text.unwrap_or_default();
    if text.trim().is_empty() {
        eprintln!("The message is empty.");
        return Ok(exit::USAGE);
    }
    if text.chars().count() > crate::answer::TELEGRAM_MESSAGE_LIMIT {
        eprintln!(
            "The message is longer than Telegram's {} characters.",
            crate::answer::TELEGRAM_MESSAGE_LIMIT
        );
        return Ok(exit::USAGE);
    }
    let groups: Vec<String> =
        args.groups.iter().map(|g| crate::search::normalize_group(g)).collect::<Result<_, _>>()?;
    let matches = |e: &crate::store::Employee| {
        e.active
            && (groups.is_empty() || groups.iter().any(|g| e.groups.contains(g)))
            && (args.departments.is_empty()
                || args.departments.iter().any(|d| e.department.eq_ignore_ascii_case(d.trim())))
    };
    let mut recipients = Vec::new();
    let mut unreachable = Vec::new();
    for employee in store.employees()?.into_iter().filter(matches) {
        match employee.telegram_id {
            Some(chat) => recipients.push(Recipient { employee: employee.id, chat }),
            None => unreachable.push(employee.id),
        }
    }
    let html = escape_html(text.trim());
    let draft = Broadcast {
        id: 0,
        text: text.trim().to_owned(),
        created_at: jiff::Timestamp::now().as_second(),
        recipients,
        unreachable,
    };
    let created = store.create_broadcast(draft, |broadcast, chat| Action::Broadcast {
        broadcast,
        chat,
        html: html.clone(),
    })?;
    if args.output.json {
        print_json(&serde_json::json!({
            "id": created.id,
            "queued": created.recipients.len(),
            "unreachable": created.unreachable,
        }))?;
    } else {
        println!(
            "Broadcast {} queued for {} employees; `sputnik serve` sends it within Telegram's limits. \
             `sputnik broadcast --status {}` reports the deliveries.",
            created.id,
            created.recipients.len(),
            created.id
        );
        if !created.unreachable.is_empty() {
            println!(
                "{} matching employees have not joined Telegram yet and will not get it.",
                created.unreachable.len()
            );
        }
    }
    Ok(exit::OK)
}
