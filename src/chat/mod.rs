//! The conversation engine: what Sputnik says to whom. It knows nothing of Telegram's API or
//! teloxide: an adapter turns updates into [`Event`]s and carries out the returned [`Action`]s;
//! tests and `sputnik chat` drive it directly.
//!
//! Rules kept here:
//! - strangers and deactivated employees get one polite message in their language and nothing
//!   else — no document text, no hint of what exists;
//! - every answer respects the employee's access groups (they filter inside retrieval);
//! - question text is stored in the conversation log and never logged;
//! - button data is never trusted: feedback only lands on the sender's own question.
//!
//! Each use case has its file: `asking` (questions), `commands` (the command list and what each
//! does), `uploads` (documents sent in the chat), `plan` (the onboarding buttons) and `feedback`.

mod asking;
mod commands;
mod feedback;
mod plan;
mod settings;
mod uploads;

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::i18n::{self, message};
use crate::onboarding;
pub use crate::reply::{Action, InlineButton};
use crate::store::{ChatId, Employee, EmployeeId};
use crate::{App, Error};
pub use commands::{Command, help_text};
pub use settings::ChatSettings;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Telegram user, identified by Telegram; an employee once joined with an invite.
    Telegram { user_id: i64 },
    /// `sputnik chat` on the server, acting as an employee chosen by the admin at the shell.
    Terminal { employee: EmployeeId },
}

/// Who sent an event, as the messenger describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub origin: Origin,
    pub first_name: String,
    /// The client's language (IETF tag), used until the employee picks one with /lang.
    pub language_code: Option<String>,
}

impl Sender {
    /// A key for per-person limits.
    fn limit_key(&self) -> i64 {
        match self.origin {
            Origin::Telegram { user_id } => user_id,
            // Telegram user ids are positive: terminal sessions cannot collide with them.
            Origin::Terminal { employee } => -(employee.0 as i64),
        }
    }
}

/// Something an employee did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text {
        from: Sender,
        chat: ChatId,
        text: String,
    },
    Button {
        from: Sender,
        chat: ChatId,
        message_id: i32,
        callback_id: String,
        data: String,
    },
    /// A file sent to the bot, already downloaded (see [`Engine::admit_document`]).
    Document {
        from: Sender,
        chat: ChatId,
        file_name: String,
        content: Vec<u8>,
    },
}

/// Time in unix seconds; injectable so tests can move it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

/// Settings of the conversation itself.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Questions per minute one employee may ask, and the burst allowed.
    pub questions_per_minute: u32,
    pub burst: u32,
    /// The bot's username, for invite links.
    pub bot_username: String,
    /// Lifetime of invites created with /invite, in seconds.
    pub invite_lifetime: i64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            questions_per_minute: 10,
            burst: 5,
            bot_username: String::new(),
            invite_lifetime: 7 * 86_400,
        }
    }
}

pub struct Engine {
    app: Arc<App>,
    settings: EngineSettings,
    limiter: DefaultKeyedRateLimiter<i64>,
    clock: Clock,
    /// The language model, when `llm.url` is set (and allowed).
    llm: Option<crate::llm::Client>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("settings", &self.settings).finish_non_exhaustive()
    }
}

thread_local! {
    /// The Telegram update being handled on this thread, if any (see [`Engine::handle_update`]).
    pub(super) static CURRENT_UPDATE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

impl Engine {
    pub fn new(app: Arc<App>, settings: EngineSettings, clock: Clock) -> Engine {
        let per_minute = NonZeroU32::new(settings.questions_per_minute.max(1)).expect("at least one");
        let burst = NonZeroU32::new(settings.burst.max(1)).expect("at least one");
        let limiter = governor::RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst));
        let llm = {
            match crate::llm::Client::new(&app.settings().llm) {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!(error = %e, "generated answers are off");
                    None
                }
            }
        };
        Engine { app, settings, limiter, clock, llm }
    }

    /// Handles the event of Telegram update `update`. Handling it again (the process died before
    /// the update was committed) logs its question once, not twice.
    pub fn handle_update(&self, update: u64, event: &Event) -> Vec<Action> {
        CURRENT_UPDATE.with(|current| current.set(Some(update)));
        let actions = self.handle(event);
        CURRENT_UPDATE.with(|current| current.set(None));
        actions
    }

    /// Handles one event. Internal failures become a translated apology; the error is logged
    /// once here, without the employee's text.
    pub fn handle(&self, event: &Event) -> Vec<Action> {
        let (from, chat) = match event {
            Event::Text { from, chat, .. }
            | Event::Button { from, chat, .. }
            | Event::Document { from, chat, .. } => (from, *chat),
        };
        match self.try_handle(event) {
            Ok(actions) => actions,
            Err(error) => {
                tracing::error!(sender = from.limit_key(), %error, "could not handle a message");
                let language = i18n::from_telegram_code(from.language_code.as_deref());
                let mut actions = Vec::new();
                if let Event::Button { callback_id, .. } = event {
                    actions.push(Action::AnswerButton { callback_id: callback_id.clone(), text: None });
                }
                actions.push(send(chat, message(language, "error", &[])));
                actions
            }
        }
    }

    fn try_handle(&self, event: &Event) -> Result<Vec<Action>, Error> {
        match event {
            Event::Text { from, chat, text } => self.on_text(from, *chat, text.trim()),
            Event::Button { from, chat, message_id, callback_id, data } => {
                self.on_button(from, *chat, *message_id, callback_id, data)
            }
            Event::Document { from, chat, file_name, content } => {
                self.on_document(from, *chat, file_name, content)
            }
        }
    }

    fn app(&self) -> &App {
        &self.app
    }

    /// The employee behind a sender, if any.
    fn identify(&self, from: &Sender) -> Result<Option<Employee>, Error> {
        let app = self.app();
        Ok(match from.origin {
            Origin::Telegram { user_id } => app.store().employee_by_telegram(user_id)?,
            Origin::Terminal { employee } => app.store().employee(employee)?,
        })
    }

    fn on_button(
        &self,
        from: &Sender,
        chat: ChatId,
        message_id: i32,
        callback_id: &str,
        data: &str,
    ) -> Result<Vec<Action>, Error> {
        let answer_button = Action::AnswerButton { callback_id: callback_id.to_owned(), text: None };
        let client_language = i18n::from_telegram_code(from.language_code.as_deref());
        let Some(employee) = self.identify(from)?.filter(|e| e.active) else {
            return Ok(vec![answer_button]);
        };
        let language = employee.language.unwrap_or(client_language);
        if let Some(press) = onboarding::parse_press(data) {
            return self.on_plan_button(&employee, chat, message_id, callback_id, press, language);
        }
        match feedback::parse_feedback(data) {
            Some((helpful, question)) => {
                self.on_feedback(&employee, chat, message_id, callback_id, helpful, question, language)
            }
            None => Ok(vec![answer_button]),
        }
    }
}

pub(super) fn send(chat: ChatId, html: String) -> Action {
    Action::Send { chat, html, buttons: Vec::new() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn commands_and_button_data_parse_strictly() {
        use super::commands::split_command;
        use super::feedback::parse_feedback;
        assert_eq!(split_command("/start abc"), (Some("start"), Some("abc")));
        assert_eq!(split_command("/lang@SputnikBot  en "), (Some("lang"), Some("en")));
        assert_eq!(split_command("how do I /start?"), (None, None));
        assert_eq!(parse_feedback("fb:1:42"), Some((true, 42)));
        assert_eq!(parse_feedback("fb:0:7"), Some((false, 7)));
        for forged in ["fb:2:1", "fb:1:-1", "xx:1:1", "fb:1:", "fb", ""] {
            assert_eq!(parse_feedback(forged), None, "{forged}");
        }
    }
}
