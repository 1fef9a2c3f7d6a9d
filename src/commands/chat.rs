//! `sputnik chat`: the conversation engine in a terminal, as an employee would see it in
//! Telegram. Buttons are pressed by typing their number, e.g. `/1`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use super::open_existing;
use crate::answer::strip_tags;
use crate::chat::{Action, Engine, EngineSettings, Event, InlineButton, Origin, Sender, system_clock};
use crate::cli::{ChatArgs, exit};
use crate::config::Settings;
use crate::setting::parse_duration_seconds;
use crate::store::{ChatId, EmployeeId, Language, NewEmployee, Role};
use crate::{App, Error};

/// Name of the local admin `sputnik chat` talks as when no `--as` is given.
const TERMINAL_EMPLOYEE: &str = "Terminal";

pub(super) fn run(settings: Settings, args: ChatArgs) -> anyhow::Result<i32> {
    let engine_settings = EngineSettings {
        questions_per_minute: settings.chat.questions_per_minute,
        burst: settings.chat.burst,
        bot_username: settings.telegram.bot_username.clone(),
        invite_lifetime: parse_duration_seconds(&settings.chat.invite_lifetime).map_err(Error::Usage)?,
    };
    let generator = crate::llm::Client::new(&settings.llm).map_err(|e| Error::Usage(e.to_string()))?;
    let _ = GENERATOR.set(generator);
    let app = open_existing(settings)?;
    let employee = match args.employee {
        Some(id) => app
            .store()
            .employee(EmployeeId(id))?
            .ok_or_else(|| Error::Usage(format!("no employee with id {id}: see `sputnik users list`")))?,
        None => terminal_employee(&app)?,
    };
    let language = match args.lang.as_deref() {
        None => None,
        Some("ru") => Some(Language::Ru),
        Some("en") => Some(Language::En),
        Some(other) => return Err(Error::Usage(format!("--lang {other:?}: use ru or en")).into()),
    };
    if let Some(language) = language {
        app.store().update_employee(employee.id, |e| e.language = Some(language))?;
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting as {} (id {}). Ask anything; /help for commands, /1 or /2 to press a button, Ctrl-D to leave.",
            employee.name, employee.id
        );
    }
    let engine = Engine::new(Arc::new(app), engine_settings, system_clock());
    let sender = Sender {
        origin: Origin::Terminal { employee: employee.id },
        first_name: employee.name.clone(),
        language_code: Some(language.unwrap_or(Language::En).code().to_owned()),
    };
    let mut buttons: Vec<InlineButton> = Vec::new();
    let mut message_id = 0;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    loop {
        if interactive {
            write!(out, "\n> ")?;
            out.flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let event = match line.strip_prefix('/').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n >= 1 && n <= buttons.len() => Event::Button {
                from: sender.clone(),
                chat: ChatId(0),
                message_id,
                callback_id: format!("terminal-{message_id}"),
                data: buttons[n - 1].data.clone(),
            },
            _ => Event::Text { from: sender.clone(), chat: ChatId(0), text: line.to_owned() },
        };
        for action in engine.handle(&event) {
            match action {
                Action::Typing { .. } => {}
                Action::Send { html, buttons: new_buttons, .. }
                | Action::Edit { html, buttons: new_buttons, .. } => {
                    message_id += 1;
                    writeln!(out, "{}", render(&html))?;
                    if !new_buttons.is_empty() {
                        let labels: Vec<String> = new_buttons
                            .iter()
                            .enumerate()
                            .map(|(i, b)| format!("/{} {}", i + 1, b.label))
                            .collect();
                        writeln!(out, "[{}]", labels.join("   "))?;
                        buttons = new_buttons;
                    }
                }
                Action::EditButtons { buttons: new_buttons, .. } => buttons = new_buttons,
                Action::Broadcast { html, .. } => writeln!(out, "{}", render(&html))?,
                Action::AnswerButton { text: Some(text), .. } => writeln!(out, "({text})")?,
                Action::AnswerButton { text: None, .. } => {}
                Action::Generate(generation) => {
                    message_id += 1;
                    let html = generate_in_terminal(&generation, &mut out)?;
                    writeln!(out, "{}", render(&html))?;
                    buttons = generation.buttons.clone();
                    let labels: Vec<String> =
                        buttons.iter().enumerate().map(|(i, b)| format!("/{} {}", i + 1, b.label)).collect();
                    writeln!(out, "[{}]", labels.join("   "))?;
                }
            }
        }
    }
    Ok(exit::OK)
}

/// Streams a generated answer into the terminal (the text as it comes, on one line, dimmed
/// when interactive), then returns the finished answer's HTML — or the extractive one when the
/// model fails, with the reason on stderr.
fn generate_in_terminal(
    generation: &crate::reply::Generation,
    out: &mut impl Write,
) -> anyhow::Result<String> {
    let Some(client) = GENERATOR.get().cloned().flatten() else {
        return Ok(generation.fallback.join("\n"));
    };
    let mut shown = 0usize;
    let messages = crate::answer::generate::answer_messages(&generation.request);
    let timeout = generation.time_left(std::time::Duration::from_secs(client.settings().timeout_seconds));
    let streamed = crate::llm::block_on(client.stream(&messages, timeout, |text| {
        let new: String = text.chars().skip(shown).collect();
        shown = text.chars().count();
        let _ = write!(out, "{new}");
        let _ = out.flush();
    }));
    if shown > 0 {
        writeln!(out, "\n")?;
    }
    match streamed.and_then(|text| crate::answer::generate::final_parts(generation, &text)) {
        Ok(parts) => {
            crate::metrics::llm_answer("generated");
            Ok(parts.join("\n"))
        }
        Err(e) => {
            eprintln!("(no generated answer: {e}; the extractive one follows)");
            Ok(generation.fallback.join("\n"))
        }
    }
}

/// The language model the terminal chat streams answers from (set once at start).
static GENERATOR: std::sync::OnceLock<Option<crate::llm::Client>> = std::sync::OnceLock::new();

/// Telegram HTML as terminal text: tags dropped (bold kept on a terminal).
fn render(html: &str) -> String {
    if std::io::stdout().is_terminal() {
        strip_tags(&html.replace("<b>", "\x1b[1m").replace("</b>", "\x1b[0m"))
    } else {
        strip_tags(html)
    }
}

fn terminal_employee(app: &App) -> anyhow::Result<crate::store::Employee> {
    let existing =
        app.store().employees()?.into_iter().find(|e| e.name == TERMINAL_EMPLOYEE && e.department == "local");
    if let Some(employee) = existing {
        return Ok(employee);
    }
    let new = NewEmployee {
        name: TERMINAL_EMPLOYEE.to_owned(),
        department: "local".to_owned(),
        position: None,
        role: Role::Admin,
        groups: Vec::new(),
        start_date: None,
    };
    Ok(app.store().create_employee(new, jiff::Timestamp::now().as_second())?)
}
