//! The onboarding plan in the chat: the checklist, ticks, quizzes, and the documents a task
//! links to (shown only to those who may see them).

use super::{Engine, send};
use crate::Error;
use crate::i18n::{escape_html, message};
use crate::onboarding::{self, QuizOutcome};
use crate::reply::{Action, InlineButton};
use crate::store::{ChatId, Employee, Language};

impl Engine {
    pub(super) fn plan(
        &self,
        employee: &Employee,
        chat: ChatId,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
        let app = self.app();
        Ok(match onboarding::checklist(app.store(), app.calendar(), employee, language, (self.clock)())? {
            Some((html, buttons)) => vec![Action::Send { chat, html, buttons }],
            None => vec![send(chat, message(language, "plan_none", &[]))],
        })
    }

    /// A press on a checklist, quiz or reminder button.
    pub(super) fn on_plan_button(
        &self,
        employee: &Employee,
        chat: ChatId,
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
                if store.task_state(employee.id, &task.id)?.done_at.is_some() {
                    return Ok(vec![answer(Some(message(language, "quiz_answered", &[])))]);
                }
                let html = message(
                    language,
                    "quiz_question",
                    &[("task", &task.title), ("question", &quiz.question)],
                );
                Ok(vec![answer(None), Action::Send { chat, html, buttons: quiz_buttons(&task) }])
            }
            onboarding::Press::Answer(task, choice) => {
                let Some(task) = task_of(&task) else { return unknown() };
                let Some(quiz) = &task.quiz else { return unknown() };
                let Some(outcome) = onboarding::answer_quiz(store, employee.id, &task, choice, now)? else {
                    return unknown();
                };
                let (verdict, buttons) = match outcome {
                    QuizOutcome::Correct => (message(language, "quiz_correct", &[]), Vec::new()),
                    // The choices stay under the question for the next try.
                    QuizOutcome::TryAgain => (message(language, "quiz_try_again", &[]), quiz_buttons(&task)),
                    QuizOutcome::Revealed { answer } => {
                        (message(language, "quiz_wrong", &[("answer", &answer)]), Vec::new())
                    }
                    QuizOutcome::AlreadyDone => {
                        return Ok(vec![answer(Some(message(language, "quiz_answered", &[])))]);
                    }
                };
                let question = message(
                    language,
                    "quiz_question",
                    &[("task", &task.title), ("question", &quiz.question)],
                );
                let html = format!("{question}\n\n<i>{verdict}</i>");
                Ok(vec![answer(Some(verdict)), Action::Edit { chat, message_id, html, buttons }])
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
    pub(super) fn document_excerpt(
        &self,
        employee: &Employee,
        source: &str,
        language: Language,
    ) -> Result<Option<String>, Error> {
        let app = self.app();
        let store = app.store();
        // A plan's link names a document by its source path, as `docs show` takes it.
        let Ok(document) = app.resolve_document(source) else { return Ok(None) };
        if !crate::access::may_see(&document.groups, &employee.groups) {
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

/// A quiz's choices as buttons, one per row.
fn quiz_buttons(task: &onboarding::Task) -> Vec<InlineButton> {
    let Some(quiz) = &task.quiz else { return Vec::new() };
    quiz.choices
        .iter()
        .enumerate()
        .map(|(i, choice)| InlineButton {
            label: choice.clone(),
            data: format!("{}a:{}:{i}", onboarding::BUTTON_PREFIX, task.id),
        })
        .collect()
}
