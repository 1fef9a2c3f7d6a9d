//! `sputnik users invite|list|show|deactivate|activate|promote|demote`.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{open_existing, print_json};
use crate::cli::{InviteArgs, UsersCommand, exit};
use crate::config::{Settings, parse_duration_seconds};
use crate::people::{self, InviteRequest};
use crate::store::{Employee, EmployeeId, Role};
use crate::{App, Error};

pub(super) fn run(settings: Settings, command: UsersCommand) -> anyhow::Result<i32> {
    match command {
        UsersCommand::Invite(args) => invite(settings, args),
        UsersCommand::Assign(args) => super::onboarding::assign(settings, args),
        UsersCommand::List(output) => {
            let employees: Vec<crate::store::Employee> = match super::remote::open(settings)? {
                super::remote::Source::Local(app) => app.store().employees()?,
                super::remote::Source::Service(service) => service.get("/api/users")?,
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
            let app = open_existing(settings)?;
            let employee = find(&app, id)?;
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
        UsersCommand::Deactivate { id } => change(settings, id, "Deactivated", |e| e.active = false),
        UsersCommand::Activate { id } => change(settings, id, "Activated", |e| e.active = true),
        UsersCommand::Promote { id } => change(settings, id, "Promoted to admin:", |e| e.role = Role::Admin),
        UsersCommand::Demote { id } => {
            change(settings, id, "Made an ordinary employee:", |e| e.role = Role::Employee)
        }
    }
}

fn invite(settings: Settings, args: InviteArgs) -> anyhow::Result<i32> {
    let lifetime = args.expires.as_deref().unwrap_or(&settings.chat.invite_lifetime);
    let lifetime_seconds =
        parse_duration_seconds(lifetime).map_err(|reason| Error::Usage(format!("--expires: {reason}")))?;
    let configured = settings.telegram.bot_username.clone();
    let app = App::open(settings)?;
    // Without a configured name, use the one Telegram reported when `sputnik serve` last ran.
    let bot =
        if configured.is_empty() { app.store().bot_username()?.unwrap_or_default() } else { configured };
    let request = InviteRequest {
        name: args.name,
        department: args.department,
        position: args.position,
        role: args.role,
        groups: args.groups,
        start_date: args.start_date,
        lifetime_seconds,
    };
    let created = people::invite(app.store(), &request, &bot, jiff::Timestamp::now().as_second())?;
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

fn change(settings: Settings, id: u64, done: &str, apply: impl FnOnce(&mut Employee)) -> anyhow::Result<i32> {
    let app = open_existing(settings)?;
    find(&app, id)?;
    let employee = app.store().update_employee(EmployeeId(id), apply)?;
    println!("{done} {} (id {}).", employee.name, employee.id);
    Ok(exit::OK)
}

fn find(app: &App, id: u64) -> anyhow::Result<Employee> {
    app.store()
        .employee(EmployeeId(id))?
        .ok_or_else(|| Error::Usage(format!("no employee with id {id}: see `sputnik users list`")).into())
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
