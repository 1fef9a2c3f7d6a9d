//! Feedback on answers: 👍 / 👎 under each answer, and an optional reason after 👎. Button
//! data is never trusted: feedback lands only on the sender's own question.

use super::{Engine, send};
use crate::Error;
use crate::i18n::message;
use crate::reply::{Action, InlineButton};
use crate::store::{ChatId, Employee, Feedback, Language};

const FEEDBACK_PREFIX: &str = "fb";

impl Engine {
    /// A press on 👍 or 👎 under an answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_feedback(
        &self,
        employee: &Employee,
        chat: ChatId,
        message_id: i32,
        callback_id: &str,
        helpful: bool,
        question: u64,
        language: Language,
    ) -> Result<Vec<Action>, Error> {
        let answer_button = Action::AnswerButton { callback_id: callback_id.to_owned(), text: None };
        let feedback = Feedback { helpful, reason: None, at: (self.clock)() };
        match self.app().store().first_feedback(employee.id, question, feedback, !helpful)? {
            // Not their question: nothing to say.
            None => return Ok(vec![answer_button]),
            // Pressed again (before the buttons went away): thanked, not counted, not edited.
            Some(false) => {
                let thanks = message(language, "feedback_thanks", &[]);
                return Ok(vec![Action::AnswerButton {
                    callback_id: callback_id.to_owned(),
                    text: Some(thanks),
                }]);
            }
            Some(true) => {}
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

    pub(super) fn feedback_reason(
        &self,
        employee: &Employee,
        chat: ChatId,
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
}

pub(super) fn feedback_buttons(question: u64, language: Language) -> Vec<InlineButton> {
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
pub(super) fn parse_feedback(data: &str) -> Option<(bool, u64)> {
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
