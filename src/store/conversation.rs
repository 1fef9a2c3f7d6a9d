//! The conversation log and dialogue sessions: each question with the sources of its answer and
//! the employee's feedback, and what the dialogue awaits. Question text lives only here (never in
//! logs) and is purged after the configured retention.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use super::kv::{Reader, Span};
use super::people::EmployeeId;
use super::schema::{QUESTIONS, SESSIONS, UPDATE_QUESTIONS, meta_keys, take_id};
use super::{DocumentId, Language, Store, StoreError, StoreResult, decode, encode};

/// One source an answer cited, with the scores that put it there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitedChunk {
    pub document: DocumentId,
    pub ordinal: u32,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub helpful: bool,
    pub reason: Option<String>,
    pub at: i64,
}

/// A question as the conversation log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub id: u64,
    pub employee: EmployeeId,
    pub asked_at: i64,
    pub language: Language,
    pub text: String,
    pub answered: bool,
    pub sources: Vec<CitedChunk>,
    pub feedback: Option<Feedback>,
}

/// Dialogue state kept per employee across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The last answered question, for /sources.
    pub last_question: Option<u64>,
    /// Set after 👎: the next text is the reason, not a question.
    pub awaiting_reason_for: Option<u64>,
}

/// Totals for /stats and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConversationCounts {
    pub employees: u64,
    pub joined: u64,
    pub questions: u64,
    pub answered: u64,
    pub helpful: u64,
    pub unhelpful: u64,
}

/// What writing feedback did.
enum Written {
    Record(QuestionRecord),
    /// Not the employee's question, or no such question.
    NotTheirs,
    HadFeedback,
}

fn read_session(txn: &impl Reader, employee: EmployeeId) -> StoreResult<Session> {
    match txn.get(&SESSIONS, &employee.0)? {
        Some(bytes) => decode(&bytes, || format!("session of employee {employee}")),
        None => Ok(Session::default()),
    }
}

fn read_question(txn: &impl Reader, id: u64) -> StoreResult<Option<QuestionRecord>> {
    match txn.get(&QUESTIONS, &id)? {
        Some(bytes) => Ok(Some(decode(&bytes, || format!("question {id}"))?)),
        None => Ok(None),
    }
}

impl Store {
    /// Appends a question to the conversation log and makes it the employee's last question.
    pub fn record_question(&self, record: QuestionRecord) -> StoreResult<QuestionRecord> {
        self.record_question_once(None, record)
    }

    /// Logs a question asked in Telegram update `update`; when that update was already handled
    /// (the process died before [`Store::commit_update`]), returns the record logged then.
    pub fn record_question_once(
        &self,
        update: Option<u64>,
        mut record: QuestionRecord,
    ) -> StoreResult<QuestionRecord> {
        let txn = self.write()?;
        if let Some(update) = update
            && let Some(logged) = txn.get(&UPDATE_QUESTIONS, &update)?
            && let Some(existing) = read_question(&txn, logged)?
        {
            txn.abort()?;
            return Ok(existing);
        }
        let id = take_id(&txn, meta_keys::NEXT_QUESTION_ID)?;
        record.id = id;
        txn.insert(&QUESTIONS, &id, &encode(&record))?;
        if let Some(update) = update {
            txn.insert(&UPDATE_QUESTIONS, &update, &id)?;
        }
        let mut session = read_session(&txn, record.employee)?;
        session.last_question = Some(id);
        session.awaiting_reason_for = None;
        txn.insert(&SESSIONS, &record.employee.0, &encode(&session))?;
        self.commit(txn)?;
        Ok(record)
    }

    pub fn question(&self, id: u64) -> StoreResult<Option<QuestionRecord>> {
        read_question(&self.read()?, id)
    }

    /// `employee`'s last `limit` questions asked at or after `since`, oldest first. Reads from
    /// the newest back and stops at `since` (ids grow with time), not the whole log.
    pub fn recent_questions(
        &self,
        employee: EmployeeId,
        since: i64,
        limit: usize,
    ) -> StoreResult<Vec<QuestionRecord>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&QUESTIONS, Span::all().rev(), |id, bytes| {
            let record: QuestionRecord = decode(&bytes, || format!("question {id}"))?;
            if record.asked_at < since || out.len() == limit {
                return Ok(ControlFlow::Break(()));
            }
            if record.employee == employee {
                out.push(record);
            }
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        out.reverse();
        Ok(out)
    }

    pub fn questions(&self) -> StoreResult<Vec<QuestionRecord>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&QUESTIONS, Span::all(), |id, bytes| {
            out.push(decode(&bytes, || format!("question {id}"))?);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Records feedback on a question asked by `employee`; `None` when the question is not theirs
    /// (or is gone), so forged button data changes nothing.
    pub fn set_feedback(
        &self,
        employee: EmployeeId,
        question: u64,
        feedback: Feedback,
        await_reason: bool,
    ) -> StoreResult<Option<QuestionRecord>> {
        match self.write_feedback(employee, question, feedback, await_reason, false)? {
            Written::Record(record) => Ok(Some(record)),
            Written::NotTheirs | Written::HadFeedback => Ok(None),
        }
    }

    /// Records `feedback` on `employee`'s own `question` unless it has some already (the first
    /// press counts; a second, or a replayed one, changes nothing). `None`: not their question;
    /// `Some(false)`: it had feedback already.
    pub fn first_feedback(
        &self,
        employee: EmployeeId,
        question: u64,
        feedback: Feedback,
        await_reason: bool,
    ) -> StoreResult<Option<bool>> {
        Ok(match self.write_feedback(employee, question, feedback, await_reason, true)? {
            Written::Record(_) => Some(true),
            Written::HadFeedback => Some(false),
            Written::NotTheirs => None,
        })
    }

    /// Writes `feedback` and the session's awaited reason in one transaction; with `only_first`,
    /// leaves a question that has feedback already untouched.
    fn write_feedback(
        &self,
        employee: EmployeeId,
        question: u64,
        feedback: Feedback,
        await_reason: bool,
        only_first: bool,
    ) -> StoreResult<Written> {
        let txn = self.write()?;
        let written = match read_question(&txn, question)? {
            Some(record) if record.employee != employee => Written::NotTheirs,
            Some(record) if only_first && record.feedback.is_some() => Written::HadFeedback,
            Some(mut record) => {
                record.feedback = Some(feedback);
                txn.insert(&QUESTIONS, &question, &encode(&record))?;
                let mut session = read_session(&txn, employee)?;
                session.awaiting_reason_for = await_reason.then_some(question);
                txn.insert(&SESSIONS, &employee.0, &encode(&session))?;
                Written::Record(record)
            }
            None => Written::NotTheirs,
        };
        match written {
            Written::Record(_) => self.commit(txn)?,
            _ => txn.abort()?,
        }
        Ok(written)
    }

    pub fn session(&self, employee: EmployeeId) -> StoreResult<Session> {
        read_session(&self.read()?, employee)
    }

    pub fn put_session(&self, employee: EmployeeId, session: &Session) -> StoreResult<()> {
        let txn = self.write()?;
        txn.insert(&SESSIONS, &employee.0, &encode(session))?;
        self.commit(txn)
    }

    /// Deletes conversation-log entries asked before `cutoff` (unix seconds); returns how many.
    pub fn purge_questions_before(&self, cutoff: i64) -> StoreResult<usize> {
        let txn = self.write()?;
        let removed = txn.retain(&QUESTIONS, |_, bytes| {
            serde_json::from_slice::<QuestionRecord>(bytes).map_or(true, |q| q.asked_at >= cutoff)
        })?;
        self.commit(txn)?;
        Ok(removed as usize)
    }

    pub fn conversation_counts(&self) -> StoreResult<ConversationCounts> {
        let mut counts = ConversationCounts::default();
        for employee in self.employees()? {
            counts.employees += 1;
            counts.joined += u64::from(employee.telegram_id.is_some());
        }
        let txn = self.read()?;
        txn.scan(&QUESTIONS, Span::all(), |id, bytes| {
            let q: QuestionRecord = decode(&bytes, || format!("question {id}"))?;
            counts.questions += 1;
            counts.answered += u64::from(q.answered);
            match q.feedback {
                Some(Feedback { helpful: true, .. }) => counts.helpful += 1,
                Some(Feedback { helpful: false, .. }) => counts.unhelpful += 1,
                None => {}
            }
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(counts)
    }
}
