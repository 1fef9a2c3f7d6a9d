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

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::answer::{self, TELEGRAM_MESSAGE_LIMIT};
use crate::i18n::{self, escape_html, message};
use crate::onboarding;
use crate::search::SearchRequest;
use crate::store::{
    CitedChunk, Employee, EmployeeId, Feedback, InviteRefusal, Language, QuestionRecord, Role, invite_hash,
};
use crate::{App, Error};

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
        chat: i64,
        text: String,
    },
    Button {
        from: Sender,
        chat: i64,
        message_id: i32,
        callback_id: String,
        data: String,
    },
    /// A file sent to the bot, already downloaded (see [`Engine::admit_document`]).
    Document {
        from: Sender,
        chat: i64,
        file_name: String,
        content: Vec<u8>,
    },
}

/// An inline button under a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineButton {
    pub label: String,
    pub data: String,
}

/// Something to do in the messenger, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Show "typing…" while an answer is being prepared.
    Typing {
        chat: i64,
    },
    Send {
        chat: i64,
        html: String,
        buttons: Vec<InlineButton>,
    },
    /// One recipient's copy of a broadcast; its delivery is recorded.
    Broadcast {
        broadcast: u64,
        chat: i64,
        html: String,
    },
    /// Replace a message's text and buttons (a checklist after a tick).
    Edit {
        chat: i64,
        message_id: i32,
        html: String,
        buttons: Vec<InlineButton>,
    },
    /// Replace the buttons under a message (none: remove them).
    EditButtons {
        chat: i64,
        message_id: i32,
        buttons: Vec<InlineButton>,
    },
    AnswerButton {
        callback_id: String,
        text: Option<String>,
    },
    /// Write the answer with the language model and stream it into the chat; the extractive
    /// answer inside goes out instead if generation fails.
    Generate(Box<crate::llm::Generation>),
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

const FEEDBACK_PREFIX: &str = "fb";

thread_local! {
    /// The Telegram update being handled on this thread, if any (see [`Engine::handle_update`]).
    static CURRENT_UPDATE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
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

    /// Decides, before anything is downloaded, whether a file from `from` of `size` bytes will
    /// be imported: only admins may add documents, within the import size limit. `None` means
    /// go ahead; otherwise the replies that explain why not.
    pub fn admit_document(&self, from: &Sender, chat: i64, size: u64) -> Vec<Action> {
        let client_language = i18n::from_telegram_code(from.language_code.as_deref());
        let employee = match self.identify(from) {
            Ok(employee) => employee,
            Err(error) => {
                tracing::error!(%error, "could not identify a sender");
                return vec![send(chat, message(client_language, "error", &[]))];
            }
        };
        let Some(employee) = employee else {
            return vec![send(chat, message(client_language, "not_joined", &[]))];
        };
        if !employee.active {
            return vec![send(chat, message(client_language, "deactivated", &[]))];
        }
        let language = employee.language.unwrap_or(client_language);
        if employee.role != Role::Admin {
            return vec![send(chat, message(language, "admin_only", &[]))];
        }
        let limit = self.app().settings().ingest.max_file_size;
        if size > limit.as_u64() {
            let size = bytesize::ByteSize(size).to_string();
            return vec![send(
                chat,
                message(language, "document_too_large", &[("size", &size), ("limit", &limit.to_string())]),
            )];
        }
        Vec::new()
    }

    fn on_document(
        &self,
        from: &Sender,
        chat: i64,
        file_name: &str,
        content: &[u8],
    ) -> Result<Vec<Action>, Error> {
        let refusal = self.admit_document(from, chat, content.len() as u64);
        if !refusal.is_empty() {
            return Ok(refusal);
        }
        let language = self
            .identify(from)?
            .and_then(|e| e.language)
            .unwrap_or_else(|| i18n::from_telegram_code(from.language_code.as_deref()));
        // Only the file name's last component, so a crafted name cannot leave the uploads folder.
        let name = std::path::Path::new(file_name)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.') && !n.is_empty())
            .unwrap_or("document.txt")
            .to_owned();
        let uploads = self.app().settings().data_dir.join("uploads");
        std::fs::create_dir_all(&uploads)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", uploads.display())))?;
        let path = uploads.join(&name);
        std::fs::write(&path, content)
            .map_err(|e| Error::Usage(format!("cannot save {}: {e}", path.display())))?;
        let request = crate::ingest::ImportRequest { paths: vec![path.clone()], ..Default::default() };
        let report = self.app.import(&request, &mut crate::ingest::Quiet)?;
        tracing::info!(
            added = report.added,
            updated = report.updated,
            failed = report.failed,
            "document received in Telegram"
        );
        let reply = if let Some(failure) = report.failures.first() {
            let _ = std::fs::remove_file(&path);
            message(language, "document_failed", &[("file", &name), ("reason", &failure.reason)])
        } else if report.unchanged > 0 {
            message(language, "document_unchanged", &[])
        } else {
            let app = self.app();
            let title = app
                .store()
                .documents()?
                .into_iter()
                .find(|d| {
                    d.source == name
                        && std::path::Path::new(&d.root) == uploads.canonicalize().unwrap_or(uploads.clone())
                })
                .map_or(name.clone(), |d| d.title);
            message(
                language,
                "document_imported",
                &[("title", &title), ("chunks", &report.chunks_written.to_string())],
            )
        };
        Ok(vec![send(chat, reply)])
    }

    fn app(&self) -> &App {
        &self.app
    }

    fn on_text(&self, from: &Sender, chat: i64, text: &str) -> Result<Vec<Action>, Error> {
        let client_language = i18n::from_telegram_code(from.language_code.as_deref());
        let (command, argument) = split_command(text);
        if command == Some("start")
            && let Some(code) = argument.filter(|c| !c.is_empty())
        {
            return self.join(from, chat, code, client_language);
        }
        let employee = self.identify(from)?;
        let Some(employee) = employee else {
            return Ok(vec![send(chat, message(client_language, "not_joined", &[]))]);
        };
        if !employee.active {
            return Ok(vec![send(chat, message(client_language, "deactivated", &[]))]);
        }
        let language = employee.language.unwrap_or(client_language);
        match command {
            Some("start") => {
                Ok(vec![send(chat, message(language, "already_joined", &[("name", &employee.name)]))])
            }
            Some("help") => {
                let mut help = message(language, "help", &[]);
                if employee.role == Role::Admin {
                    help.push_str(&message(language, "help_admin", &[]));
                }
                Ok(vec![send(chat, help)])
            }
            Some("lang") => self.switch_language(&employee, chat, argument, language),
            Some("plan") => self.plan(&employee, chat, language),
            Some("sources") => self.full_sources(&employee, chat, language),
            Some("skip") => {
                let app = self.app();
                let mut session = app.store().session(employee.id)?;
                session.awaiting_reason_for = None;
                app.store().put_session(employee.id, &session)?;
                Ok(vec![send(chat, message(language, "feedback_skipped", &[]))])
            }
            Some("stats") if employee.role == Role::Admin => self.stats(chat, language),
            Some("invite") if employee.role == Role::Admin => self.invite(chat, argument, language),
            Some("stats" | "invite") => Ok(vec![send(chat, message(language, "admin_only", &[]))]),
            Some(_) => Ok(vec![send(chat, message(language, "help", &[]))]),
            None => self.text_message(from, &employee, chat, text, language),
        }
    }

    /// The employee behind a sender, if any.
    fn identify(&self, from: &Sender) -> Result<Option<Employee>, Error> {
        let app = self.app();
        Ok(match from.origin {
            Origin::Telegram { user_id } => app.store().employee_by_telegram(user_id)?,
            Origin::Terminal { employee } => app.store().employee(employee)?,
        })
    }

    fn join(&self, from: &Sender, chat: i64, code: &str, language: Language) -> Result<Vec<Action>, Error> {
        let Origin::Telegram { user_id } = from.origin else {
            return Ok(vec![send(chat, message(language, "invite_invalid", &[]))]);
        };
        let now = (self.clock)();
        let outcome = self.app().store().redeem_invite(&invite_hash(code), user_id, now)?;
        let key = match outcome {
            Ok(employee) => {
                tracing::info!(employee = %employee.id, "an employee joined");
                if let Some(assignment) = onboarding::assign_on_join(self.app().store(), &employee, now)? {
                    tracing::info!(employee = %employee.id, plan = %assignment.plan, "onboarding plan assigned");
                }
                let language = employee.language.unwrap_or(language);
                return Ok(vec![send(chat, message(language, "welcome", &[("name", &employee.name)]))]);
            }
            Err(InviteRefusal::Unknown) => "invite_invalid",
            Err(InviteRefusal::Expired) => "invite_expired",
            Err(InviteRefusal::Used) => "invite_used",
            Err(InviteRefusal::Deactivated) => "deactivated",
        };
        Ok(vec![send(chat, message(language, key, &[]))])
    }

    fn switch_language(
        &self,
        employee: &Employee,
        chat: i64,
        argument: Option<&str>,
        current: Language,
    ) -> Result<Vec<Action>, Error> {
        let chosen = match argument.map(|a| a.to_ascii_lowercase()) {
            Some(a) if a == "ru" => Language::Ru,
            Some(a) if a == "en" => Language::En,
            _ => return Ok(vec![send(chat, message(current, "lang_choose", &[]))]),
        };
        self.app().store().update_employee(employee.id, |e| e.language = Some(chosen))?;
        Ok(vec![send(chat, message(chosen, "lang_switched", &[]))])
    }

    fn full_sources(&self, employee: &Employee, chat: i64, language: Language) -> Result<Vec<Action>, Error> {
        let app = self.app();
        let store = app.store();
        let question = match store.session(employee.id)?.last_question {
            Some(id) => store.question(id)?,
            None => None,
        };
        let Some(question) = question.filter(|q| q.answered && !q.sources.is_empty()) else {
            return Ok(vec![send(chat, message(language, "no_last_answer", &[]))]);
        };
        let keys: Vec<_> = question.sources.iter().map(|s| (s.document, s.ordinal)).collect();
        let mut html = format!("<b>{}</b>\n", escape_html(&message(language, "sources_full", &[])));
        for (number, found) in store.chunks_with_documents(&keys)?.into_iter().enumerate() {
            // A source removed since the answer is simply no longer shown.
            let Some((document, chunk)) = found else { continue };
            // Access may have changed since: show only what the employee may still see.
            if !document.groups.is_empty() && !document.groups.iter().any(|g| employee.groups.contains(g)) {
                continue;
            }
            let mut citation = escape_html(&document.title);
            for heading in &chunk.heading_path {
                citation.push_str(" › ");
                citation.push_str(&escape_html(heading));
            }
            html.push_str(&format!(
                "\n{}. <b>{citation}</b> — <code>{}</code>\n{}\n",
                number + 1,
                escape_html(&document.source),
                escape_html(&chunk.text.replace('\n', " "))
            ));
        }
        Ok(answer::split_message(&html, TELEGRAM_MESSAGE_LIMIT)
            .into_iter()
            .map(|part| send(chat, part))
            .collect())
    }

    fn stats(&self, chat: i64, language: Language) -> Result<Vec<Action>, Error> {
        let app = self.app();
        let counts = app.store().conversation_counts()?;
        let store_counts = app.store().counts()?;
        let value = |n: u64| n.to_string();
        let text = message(
            language,
            "stats",
            &[
                ("documents", &value(store_counts.documents)),
                ("chunks", &value(store_counts.chunks)),
                ("employees", &value(counts.employees)),
                ("joined", &value(counts.joined)),
                ("questions", &value(counts.questions)),
                ("answered", &value(counts.answered)),
                ("unanswered", &value(counts.questions - counts.answered)),
                ("helpful", &value(counts.helpful)),
                ("unhelpful", &value(counts.unhelpful)),
            ],
        );
        Ok(vec![send(chat, text)])
    }

    fn invite(&self, chat: i64, argument: Option<&str>, language: Language) -> Result<Vec<Action>, Error> {
        let Some((name, department)) = argument.and_then(|a| a.split_once(';')) else {
            return Ok(vec![send(chat, message(language, "invite_usage", &[]))]);
        };
        let (name, department) = (name.trim(), department.trim());
        if name.is_empty() || department.is_empty() {
            return Ok(vec![send(chat, message(language, "invite_usage", &[]))]);
        }
        let request = crate::people::InviteRequest {
            name: name.to_owned(),
            department: department.to_owned(),
            position: None,
            role: Role::Employee,
            groups: Vec::new(),
            start_date: None,
            lifetime_seconds: self.settings.invite_lifetime,
        };
        let created =
            crate::people::invite(self.app().store(), &request, &self.settings.bot_username, (self.clock)())?;
        let expires = jiff::Timestamp::from_second(created.expires_at)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let link = created.link.unwrap_or_else(|| created.code.clone());
        Ok(vec![send(
            chat,
            message(
                language,
                "invite_created",
                &[("name", name), ("department", department), ("expires", &expires), ("link", &link)],
            ),
        )])
    }

    fn text_message(
        &self,
        from: &Sender,
        employee: &Employee,
        chat: i64,
        text: &str,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
        let session = self.app().store().session(employee.id)?;
        if let Some(question) = session.awaiting_reason_for {
            return self.feedback_reason(employee, chat, question, text, language);
        }
        if !text.chars().any(char::is_alphanumeric) {
            return Ok(vec![send(chat, message(language, "empty_question", &[]))]);
        }
        if let Err(not_until) = self.limiter.check_key(&from.limit_key()) {
            let wait = not_until.wait_time_from(DefaultClock::default().now()).as_secs().max(1);
            return Ok(vec![send(
                chat,
                message(language, "rate_limited", &[("seconds", &wait.to_string())]),
            )]);
        }
        let mut actions = vec![Action::Typing { chat }];
        let started = std::time::Instant::now();
        let app = self.app();
        let query = match &self.llm {
            Some(llm) => self.standalone_query(llm, employee, text)?,
            None => text.to_owned(),
        };
        let request = SearchRequest {
            query,
            k: answer::search_k(&app.settings().answer),
            groups: employee.groups.clone(),
            mode: None,
            snippets: false,
        };
        let outcome = app.search(&request)?;
        let answer = {
            let _timer = crate::metrics::time(crate::metrics::Stage::Compose);
            answer::compose(&outcome, language, &app.settings().answer, &app.answer_floors())
        };
        crate::metrics::question(answer.found, started.elapsed().as_secs_f64());
        let update = CURRENT_UPDATE.with(std::cell::Cell::get);
        let record = app.store().record_question_once(
            update,
            QuestionRecord {
                id: 0,
                employee: employee.id,
                asked_at: (self.clock)(),
                language: outcome.language,
                text: text.to_owned(),
                answered: answer.found,
                sources: answer
                    .sources
                    .iter()
                    .map(|s| CitedChunk { document: s.document, ordinal: s.ordinal, score: s.score })
                    .collect(),
                feedback: None,
            },
        )?;
        tracing::debug!(employee = %employee.id, question = record.id, answered = answer.found, "answered a question");
        let parts = answer::split_message(&answer.html, TELEGRAM_MESSAGE_LIMIT);
        if self.llm.is_some() && answer.found {
            // The passages the extractive answer drew on, whole, in the same numbering.
            let passages = answer
                .sources
                .iter()
                .filter_map(|source| {
                    let hit = outcome
                        .hits
                        .iter()
                        .find(|h| h.document_id == source.document && h.chunk == source.ordinal)?;
                    Some(crate::llm::Passage {
                        number: source.number,
                        citation: source.citation(),
                        source: source.source.clone(),
                        text: hit.text.clone(),
                    })
                })
                .collect();
            actions.push(Action::Generate(Box::new(crate::llm::Generation {
                chat,
                request: crate::llm::GenerationRequest { question: text.to_owned(), language, passages },
                fallback: parts,
                sources: answer.sources.iter().map(|s| (s.number, answer::source_line(s))).collect(),
                sources_heading: escape_html(&message(language, "answer_sources", &[])),
                buttons: feedback_buttons(record.id, language),
            })));
            return Ok(actions);
        }
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            let buttons = if i == last { feedback_buttons(record.id, language) } else { Vec::new() };
            actions.push(Action::Send { chat, html: part, buttons });
        }
        Ok(actions)
    }

    /// The question as a standalone search query: a follow-up ("and for managers?") asked within
    /// `llm.history_minutes` of earlier questions is rewritten by the model with them as context.
    /// Any failure keeps the question as asked.
    fn standalone_query(
        &self,
        llm: &crate::llm::Client,
        employee: &Employee,
        text: &str,
    ) -> Result<String, Error> {
        let settings = llm.settings();
        if settings.history_turns == 0 {
            return Ok(text.to_owned());
        }
        let since = (self.clock)() - settings.history_minutes as i64 * 60;
        let previous: Vec<String> = self
            .app()
            .store()
            .recent_questions(employee.id, since, settings.history_turns)?
            .into_iter()
            .map(|q| q.text)
            .collect();
        if previous.is_empty() {
            return Ok(text.to_owned());
        }
        let messages = crate::llm::rewrite_messages(&previous, text);
        let timeout = std::time::Duration::from_secs(settings.timeout_seconds.min(10));
        match crate::llm::block_on(llm.complete(&messages, 64, timeout)) {
            Ok(query) if !query.trim().is_empty() && query.chars().count() <= 500 => {
                Ok(query.trim().trim_matches('"').to_owned())
            }
            Ok(_) => Ok(text.to_owned()),
            Err(e) => {
                crate::metrics::llm_answer(&format!("rewrite_{}", e.kind()));
                tracing::warn!(error = %e, "could not rewrite a follow-up question; searching it as asked");
                Ok(text.to_owned())
            }
        }
    }

    fn feedback_reason(
        &self,
        employee: &Employee,
        chat: i64,
        question: u64,
        reason: &str,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
        let app = self.app();
        let existing = app.store().question(question)?;
        let mut feedback = existing.and_then(|q| q.feedback).unwrap_or(Feedback {
            helpful: false,
            reason: None,
            at: (self.clock)(),
        });
        feedback.reason = Some(reason.chars().take(1000).collect());
        app.store().set_feedback(employee.id, question, feedback, false)?;
        Ok(vec![send(chat, message(language, "feedback_reason_thanks", &[]))])
    }

    fn on_button(
        &self,
        from: &Sender,
        chat: i64,
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
        let Some((helpful, question)) = parse_feedback(data) else {
            return Ok(vec![answer_button]);
        };
        let feedback = Feedback { helpful, reason: None, at: (self.clock)() };
        let recorded = self.app().store().set_feedback(employee.id, question, feedback, !helpful)?;
        if recorded.is_none() {
            return Ok(vec![answer_button]);
        }
        crate::metrics::feedback(helpful);
        let mut actions = vec![
            Action::AnswerButton {
                callback_id: callback_id.to_owned(),
                text: Some(message(language, "feedback_thanks", &[])),
            },
            Action::EditButtons { chat, message_id, buttons: Vec::new() },
        ];
        if !helpful {
            actions.push(send(chat, message(language, "feedback_ask_reason", &[])));
        }
        Ok(actions)
    }
}

impl Engine {
    fn plan(&self, employee: &Employee, chat: i64, language: Language) -> Result<Vec<Action>, Error> {
        let app = self.app();
        Ok(match onboarding::checklist(app.store(), app.calendar(), employee, language, (self.clock)())? {
            Some((html, buttons)) => vec![Action::Send { chat, html, buttons }],
            None => vec![send(chat, message(language, "plan_none", &[]))],
        })
    }

    /// A press on a checklist, quiz or reminder button.
    fn on_plan_button(
        &self,
        employee: &Employee,
        chat: i64,
        message_id: i32,
        callback_id: &str,
        press: onboarding::Press,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
        let answer =
            |text: Option<String>| Action::AnswerButton { callback_id: callback_id.to_owned(), text };
        let now = (self.clock)();
        let app = self.app();
        let store = app.store();
        let Some((_, plan)) = onboarding::plan_of(store, employee.id)? else {
            return Ok(vec![answer(None), send(chat, message(language, "plan_none", &[]))]);
        };
        let task_of = |id: &str| plan.task(id).cloned();
        let unknown = || Ok(vec![answer(Some(message(language, "plan_task_unknown", &[])))]);
        match press {
            onboarding::Press::OpenPlan => {
                let mut actions = vec![answer(None)];
                actions.extend(self.plan(employee, chat, language)?);
                Ok(actions)
            }
            onboarding::Press::Done(task) => {
                let Some(task) = task_of(&task) else { return unknown() };
                onboarding::mark_done(store, employee.id, &task, now)?;
                let mut actions =
                    vec![answer(Some(message(language, "plan_task_done", &[("task", &task.title)])))];
                if let Some((html, buttons)) =
                    onboarding::checklist(store, app.calendar(), employee, language, now)?
                {
                    actions.push(Action::Edit { chat, message_id, html, buttons });
                }
                Ok(actions)
            }
            onboarding::Press::Quiz(task) => {
                let Some(task) = task_of(&task) else { return unknown() };
                let Some(quiz) = &task.quiz else { return unknown() };
                if store.task_state(employee.id, &task.id)?.quiz.is_some() {
                    return Ok(vec![answer(Some(message(language, "quiz_answered", &[])))]);
                }
                let html = message(
                    language,
                    "quiz_question",
                    &[("task", &task.title), ("question", &quiz.question)],
                );
                let buttons = quiz
                    .choices
                    .iter()
                    .enumerate()
                    .map(|(i, choice)| InlineButton {
                        label: choice.clone(),
                        data: format!("{}a:{}:{i}", onboarding::BUTTON_PREFIX, task.id),
                    })
                    .collect();
                Ok(vec![answer(None), Action::Send { chat, html, buttons }])
            }
            onboarding::Press::Answer(task, choice) => {
                let Some(task) = task_of(&task) else { return unknown() };
                let Some(quiz) = &task.quiz else { return unknown() };
                let already = store.task_state(employee.id, &task.id)?.quiz.is_some();
                let Some(result) = onboarding::answer_quiz(store, employee.id, &task, choice, now)? else {
                    return unknown();
                };
                let verdict = if already {
                    message(language, "quiz_answered", &[])
                } else if result.correct {
                    message(language, "quiz_correct", &[])
                } else {
                    message(language, "quiz_wrong", &[("answer", &quiz.choices[quiz.answer])])
                };
                let html = format!(
                    "{}

<i>{}</i>",
                    message(
                        language,
                        "quiz_question",
                        &[("task", &task.title), ("question", &quiz.question)]
                    ),
                    verdict
                );
                Ok(vec![answer(Some(verdict)), Action::Edit { chat, message_id, html, buttons: Vec::new() }])
            }
            onboarding::Press::Link(task, index) => {
                let Some(task) = task_of(&task) else { return unknown() };
                let Some(link) = task.links.get(index) else { return unknown() };
                if link.starts_with("http://") || link.starts_with("https://") {
                    let html = message(language, "link_url", &[("task", &task.title), ("url", link)]);
                    return Ok(vec![answer(None), send(chat, html)]);
                }
                let html = match self.document_excerpt(employee, link, language)? {
                    Some(html) => html,
                    None => message(language, "link_unavailable", &[]),
                };
                Ok(vec![answer(None), send(chat, html)])
            }
        }
    }

    /// A linked handbook document as an answer: its opening passages and the source, if the
    /// employee may see it.
    fn document_excerpt(
        &self,
        employee: &Employee,
        source: &str,
        language: Language,
    ) -> Result<Option<String>, Error> {
        let app = self.app();
        let store = app.store();
        // A plan's link names a document by its source path, as `docs show` takes it.
        let Ok(document) = app.resolve_document(source) else { return Ok(None) };
        if !document.groups.is_empty() && !document.groups.iter().any(|g| employee.groups.contains(g)) {
            return Ok(None);
        }
        let budget = app.settings().answer.max_chars;
        let mut text = String::new();
        for chunk in store.chunks(document.id)? {
            if text.chars().count() >= budget {
                break;
            }
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&chunk.text);
        }
        let excerpt: String = if text.chars().count() > budget {
            format!("{}…", text.chars().take(budget).collect::<String>())
        } else {
            text
        };
        Ok(Some(format!(
            "<b>{}</b>\n{}\n\n{}\n1. <b>{}</b> — <code>{}</code>",
            escape_html(&document.title),
            escape_html(&excerpt),
            escape_html(&message(language, "answer_sources", &[])),
            escape_html(&document.title),
            escape_html(&document.source)
        )))
    }
}

fn send(chat: i64, html: String) -> Action {
    Action::Send { chat, html, buttons: Vec::new() }
}

fn feedback_buttons(question: u64, language: Language) -> Vec<InlineButton> {
    vec![
        InlineButton {
            label: message(language, "button_helpful", &[]),
            data: format!("{FEEDBACK_PREFIX}:1:{question}"),
        },
        InlineButton {
            label: message(language, "button_unhelpful", &[]),
            data: format!("{FEEDBACK_PREFIX}:0:{question}"),
        },
    ]
}

/// "fb:1:42" → (helpful, question 42); anything else → None.
fn parse_feedback(data: &str) -> Option<(bool, u64)> {
    let mut parts = data.splitn(3, ':');
    if parts.next()? != FEEDBACK_PREFIX {
        return None;
    }
    let helpful = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    Some((helpful, parts.next()?.parse().ok()?))
}

/// "/lang@SputnikBot en" → (Some("lang"), Some("en")); plain text → (None, None).
fn split_command(text: &str) -> (Option<&str>, Option<&str>) {
    let Some(rest) = text.strip_prefix('/') else { return (None, None) };
    let (head, argument) = match rest.split_once(char::is_whitespace) {
        Some((head, argument)) => (head, Some(argument.trim())),
        None => (rest, None),
    };
    let command = head.split('@').next().unwrap_or(head);
    (Some(command), argument)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_button_data_parse_strictly() {
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
