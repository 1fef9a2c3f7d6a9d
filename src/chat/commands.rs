//! Commands: the one list every part reads (parsing here, `/help`, and the menu `bot` publishes
//! with setMyCommands), and what each does.

use super::{Engine, Origin, Sender, send};
use crate::Error;
use crate::answer::{self, TELEGRAM_MESSAGE_LIMIT};
use crate::i18n::{self, escape_html, message};
use crate::onboarding;
use crate::reply::Action;
use crate::store::{ChatId, Employee, InviteRefusal, Language, Role, invite_hash};

/// Every command the bot understands. Parsing, `/help` and the menu Telegram shows all read
/// this list; each command's description is the catalogue key `command_<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `/start <code>` joins with an invite; plain `/start` greets.
    Start,
    Help,
    Plan,
    Sources,
    Lang,
    /// Declines to say why an answer did not help.
    Skip,
    Stats,
    Invite,
}

impl Command {
    pub const ALL: [Command; 8] = [
        Command::Start,
        Command::Help,
        Command::Plan,
        Command::Sources,
        Command::Lang,
        Command::Skip,
        Command::Stats,
        Command::Invite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Help => "help",
            Command::Plan => "plan",
            Command::Sources => "sources",
            Command::Lang => "lang",
            Command::Skip => "skip",
            Command::Stats => "stats",
            Command::Invite => "invite",
        }
    }

    pub fn parse(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Only admins may use it (and only admins see it in the menu and in `/help`).
    pub fn admin_only(self) -> bool {
        matches!(self, Command::Stats | Command::Invite)
    }

    /// Offered in the menu and in `/help`: `/start` comes with the invite link and `/skip` is
    /// offered where it applies.
    pub fn offered(self) -> bool {
        !matches!(self, Command::Start | Command::Skip)
    }

    /// What the command does, in `language`.
    pub fn description(self, language: Language) -> String {
        message(language, &format!("command_{}", self.name()), &[])
    }

    /// The commands offered to an employee (and, for admins, the admin ones), in menu order.
    pub fn menu(admin: bool) -> impl Iterator<Item = Command> {
        Command::ALL.into_iter().filter(move |c| c.offered() && (admin || !c.admin_only()))
    }
}

/// The `/help` text: what to do, then each offered command with its description.
pub fn help_text(language: Language, admin: bool) -> String {
    let line = |c: Command| format!("/{} — {}", c.name(), escape_html(&c.description(language)));
    let mut help = message(language, "help", &[]);
    help.push('\n');
    for command in Command::menu(false) {
        help.push_str(&format!("\n{}", line(command)));
    }
    if admin {
        help.push_str(&format!("\n\n{}", message(language, "help_admin", &[])));
        for command in Command::menu(true).filter(|c| c.admin_only()) {
            help.push_str(&format!("\n{}", line(command)));
        }
        help.push_str(&format!("\n{}", message(language, "help_admin_upload", &[])));
    }
    help
}

impl Engine {
    pub(super) fn on_text(&self, from: &Sender, chat: ChatId, text: &str) -> Result<Vec<Action>, Error> {
        let client_language = i18n::from_telegram_code(from.language_code.as_deref());
        let (command, argument) = split_command(text);
        if command.and_then(Command::parse) == Some(Command::Start)
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
        let Some(name) = command else {
            return self.text_message(from, &employee, chat, text, language);
        };
        let admin = employee.role == Role::Admin;
        match Command::parse(name) {
            Some(Command::Start) => {
                Ok(vec![send(chat, message(language, "already_joined", &[("name", &employee.name)]))])
            }
            Some(Command::Help) => Ok(vec![send(chat, help_text(language, admin))]),
            Some(Command::Lang) => self.switch_language(&employee, chat, argument, language),
            Some(Command::Plan) => self.plan(&employee, chat, language),
            Some(Command::Sources) => self.full_sources(&employee, chat, language),
            Some(Command::Skip) => {
                let app = self.app();
                let mut session = app.store().session(employee.id)?;
                session.awaiting_reason_for = None;
                app.store().put_session(employee.id, &session)?;
                Ok(vec![send(chat, message(language, "feedback_skipped", &[]))])
            }
            Some(c) if c.admin_only() && !admin => Ok(vec![send(chat, message(language, "admin_only", &[]))]),
            Some(Command::Stats) => self.stats(chat, language),
            Some(Command::Invite) => self.invite(chat, argument, language),
            None => Ok(vec![send(chat, help_text(language, admin))]),
        }
    }

    pub(super) fn join(
        &self,
        from: &Sender,
        chat: ChatId,
        code: &str,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
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

    pub(super) fn switch_language(
        &self,
        employee: &Employee,
        chat: ChatId,
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

    pub(super) fn full_sources(
        &self,
        employee: &Employee,
        chat: ChatId,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
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
            if !crate::access::may_see(&document.groups, &employee.groups) {
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

    pub(super) fn stats(&self, chat: ChatId, language: Language) -> Result<Vec<Action>, Error> {
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

    pub(super) fn invite(
        &self,
        chat: ChatId,
        argument: Option<&str>,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
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
}

/// "/lang@SputnikBot en" → (Some("lang"), Some("en")); plain text → (None, None).
pub(super) fn split_command(text: &str) -> (Option<&str>, Option<&str>) {
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
    fn every_command_parses_by_its_name_and_is_described_in_both_languages() {
        for command in Command::ALL {
            assert_eq!(Command::parse(command.name()), Some(command));
            for language in [Language::En, Language::Ru] {
                let description = command.description(language);
                assert_ne!(description, format!("command_{}", command.name()), "{command:?} {language:?}");
                // Telegram's limits for a menu entry.
                assert!((3..=256).contains(&description.chars().count()), "{description}");
            }
        }
        assert_eq!(Command::parse("nope"), None);
    }

    #[test]
    fn help_offers_what_the_menu_offers_and_admin_commands_only_to_admins() {
        let employee = help_text(Language::En, false);
        let admin = help_text(Language::En, true);
        let offered: Vec<Command> = Command::menu(false).collect();
        assert!(!offered.is_empty());
        for command in &offered {
            assert!(employee.contains(&format!("/{} — ", command.name())), "{employee}");
        }
        for command in Command::ALL.into_iter().filter(|c| c.admin_only()) {
            assert!(!employee.contains(&format!("/{} — ", command.name())), "{employee}");
            assert!(admin.contains(&format!("/{} — ", command.name())), "{admin}");
        }
        assert!(!employee.contains("/start — ") && !employee.contains("/skip — "));
    }
}
