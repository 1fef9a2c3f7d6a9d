//! `sputnik users invite|list|show|deactivate|activate|promote|demote`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use reqwest::Method;

use super::print_json;
use super::remote::Source;
use crate::admin::{self, EmployeeChange};
use crate::cli::{InviteArgs, UsersCommand, exit};
use crate::config::Settings;
use crate::people::CreatedInvite;
use crate::store::{Employee, Role};

pub(super) fn run(settings: Settings, command: UsersCommand) -> anyhow::Result<i32> {
    match command {
        UsersCommand::Invite(args) => invite(settings, args),
        UsersCommand::Assign(args) => super::onboarding::assign(settings, args),
        UsersCommand::List(output) => {
            let employees: Vec<crate::store::Employee> = match super::remote::open(settings)? {
                Source::Local(app) => app.store().employees()?,
                Source::Service(service) => service.get("/api/users")?,
            };
            if output.json {
                print_json(&employees)?;
            } else if employees.is_empty() {
                println!("No employees yet: sputnik users invite --name NAME --department DEPT");
            } else {
                let mut table = Table::new();
                table.load_style(UTF8_FULL_CONDENSED);
                table.set_header(["id", "name", "department", "role", "groups", "start", "status"]);
                for e in &employees {
                    table.add_row([
                        e.id.to_string(),
                        e.name.clone(),
                        e.department.clone(),
                        role(e.role).to_owned(),
                        if e.groups.is_empty() { "—".to_owned() } else { e.groups.join(", ") },
                        e.start_date.clone().unwrap_or_else(|| "—".to_owned()),
                        status(e).to_owned(),
                    ]);
                }
                println!("{table}");
            }
            Ok(exit::OK)
        }
        UsersCommand::Show { id, output } => {
            let employee: Employee = match super::remote::open(settings)? {
                Source::Local(app) => admin::employee_by_id(&app, id)?,
                Source::Service(service) => service.get(&format!("/api/users/{id}"))?,
            };
            if output.json {
                print_json(&employee)?;
            } else {
                println!("{} (id {})", employee.name, employee.id);
                println!("  department  {}", employee.department);
                println!("  role        {}", role(employee.role));
                println!(
                    "  groups      {}",
                    if employee.groups.is_empty() { "—".to_owned() } else { employee.groups.join(", ") }
                );
                println!("  start date  {}", employee.start_date.as_deref().unwrap_or("—"));
                println!("  status      {}", status(&employee));
                if let Some(language) = employee.language {
                    println!("  language    {language}");
                }
            }
            Ok(exit::OK)
        }
        UsersCommand::Deactivate { id } => {
            change(settings, id, "Deactivated", EmployeeChange { active: Some(false), role: None })
        }
        UsersCommand::Activate { id } => {
            change(settings, id, "Activated", EmployeeChange { active: Some(true), role: None })
        }
        UsersCommand::Promote { id } => change(
            settings,
            id,
            "Promoted to admin:",
            EmployeeChange { active: None, role: Some(Role::Admin) },
        ),
        UsersCommand::Demote { id } => change(
            settings,
            id,
            "Made an ordinary employee:",
            EmployeeChange { active: None, role: Some(Role::Employee) },
        ),
    }
}

fn invite(settings: Settings, args: InviteArgs) -> anyhow::Result<i32> {
    let request = admin::Invite {
        name: args.name,
        department: args.department,
        position: args.position,
        role: args.role,
        groups: args.groups,
        start_date: args.start_date,
        expires: args.expires,
    };
    let created: CreatedInvite = match super::remote::open_or_create(settings)? {
        Source::Local(app) => admin::invite(&app, &request, jiff::Timestamp::now().as_second())?,
        Source::Service(service) => service.send(Method::POST, "/api/invites", &request)?,
    };
    if args.output.json {
        print_json(&serde_json::json!({
            "code": created.code,
            "link": created.link,
            "employee": created.employee.id,
            "expires_at": created.expires_at,
        }))?;
        return Ok(exit::OK);
    }
    let expires = jiff::Timestamp::from_second(created.expires_at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())?;
    println!(
        "Invited {} (id {}), valid until {expires}, single use.",
        created.employee.name, created.employee.id
    );
    match &created.link {
        Some(link) => println!("Link: {link}"),
        None => println!(
            "Link: set telegram.bot_username in the configuration to print it; meanwhile they can send the bot:"
        ),
    }
    println!("Code: {}", created.code);
    if created.link.is_none() {
        println!("      /start {}", created.code);
    }
    Ok(exit::OK)
}

fn change(settings: Settings, id: u64, done: &str, change: EmployeeChange) -> anyhow::Result<i32> {
    let employee: Employee = match super::remote::open(settings)? {
        Source::Local(app) => admin::change_employee(&app, id, &change)?,
        Source::Service(service) => service.send(Method::PATCH, &format!("/api/users/{id}"), &change)?,
    };
    println!("{done} {} (id {}).", employee.name, employee.id);
    Ok(exit::OK)
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Employee => "employee",
        Role::Admin => "admin",
    }
}

fn status(e: &Employee) -> &'static str {
    match (e.active, e.telegram_id.is_some()) {
        (false, _) => "deactivated",
        (true, true) => "joined",
        (true, false) => "invited",
    }
}
