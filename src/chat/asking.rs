//! Questions: a text that is not a command is searched within the employee's access groups,
//! answered from the passages found (or declined honestly), logged without being logged, and
//! handed to the language model when one is configured.

use governor::clock::{Clock as _, DefaultClock};

use super::feedback::feedback_buttons;
use super::{CURRENT_UPDATE, Engine, Sender, send};
use crate::Error;
use crate::answer::{self, TELEGRAM_MESSAGE_LIMIT};
use crate::i18n::{escape_html, message};
use crate::reply::Action;
use crate::search::SearchRequest;
use crate::store::{ChatId, CitedChunk, Employee, Language, QuestionRecord};

impl Engine {
    pub(super) fn text_message(
        &self,
        from: &Sender,
        employee: &Employee,
        chat: ChatId,
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
        // With a model, one deadline covers the whole answer: the rewrite of a follow-up and the
        // generated answer share `llm.timeout_seconds` from now.
        let deadline_ms = self.llm.as_ref().map(|llm| {
            jiff::Timestamp::now().as_millisecond() + llm.settings().timeout_seconds as i64 * 1000
        });
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
                    Some(crate::reply::Passage {
                        number: source.number,
                        citation: source.citation(),
                        source: source.source.clone(),
                        text: hit.text.clone(),
                    })
                })
                .collect();
            actions.push(Action::Generate(Box::new(crate::reply::Generation {
                chat,
                request: crate::reply::GenerationRequest { question: text.to_owned(), language, passages },
                fallback: parts,
                sources: answer.sources.iter().map(|s| (s.number, answer::source_line(s))).collect(),
                sources_heading: escape_html(&message(language, "answer_sources", &[])),
                buttons: feedback_buttons(record.id, language),
                deadline_ms,
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
    pub(super) fn standalone_query(
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
        let messages = crate::answer::generate::rewrite_messages(&previous, text);
        match crate::llm::block_on(llm.complete(&messages, 64, rewrite_budget(settings.timeout_seconds))) {
            Ok(rewrite) => match crate::answer::generate::checked_rewrite(&rewrite, text, &previous) {
                Some(query) => Ok(query),
                None => {
                    crate::metrics::llm_answer("rewrite_dropped");
                    tracing::info!(
                        "the model's rewrite of a follow-up was not a query about it; searching it as asked"
                    );
                    Ok(text.to_owned())
                }
            },
            Err(e) => {
                crate::metrics::llm_answer(&format!("rewrite_{}", e.kind()));
                tracing::warn!(error = %e, "could not rewrite a follow-up question; searching it as asked");
                Ok(text.to_owned())
            }
        }
    }
}

/// The share of `llm.timeout_seconds` a follow-up's rewrite may take (a third, at most 10 s), so
/// that the answer keeps the rest of the one deadline.
fn rewrite_budget(timeout_seconds: u64) -> std::time::Duration {
    std::time::Duration::from_millis((timeout_seconds * 1000 / 3).min(10_000))
}
