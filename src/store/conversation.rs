//! The conversation log and dialogue sessions: each question with the sources of its answer and
//! the employee's feedback, and what the dialogue awaits. Question text lives only here (never in
//! logs) and is purged after the configured retention.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::people::EmployeeId;
use super::schema::{META, QUESTIONS, SESSIONS, UPDATE_QUESTIONS, meta_keys};
use super::{DocumentId, Language, Store, StoreResult, decode, encode};

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

fn read_session(
    table: &impl ReadableTable<u64, &'static [u8]>,
    employee: EmployeeId,
) -> StoreResult<Session> {
    match table.get(employee.0)? {
        Some(bytes) => decode(bytes.value(), || format!("session of employee {employee}")),
        None => Ok(Session::default()),
    }
}

fn read_question(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> StoreResult<Option<QuestionRecord>> {
    match table.get(id)? {
        Some(bytes) => Ok(Some(decode(bytes.value(), || format!("question {id}"))?)),
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
        let txn = self.db.begin_write()?;
        if let Some(update) = update {
            let logged = txn.open_table(UPDATE_QUESTIONS)?.get(update)?.map(|v| v.value());
            if let Some(existing) =
                logged.map(|id| read_question(&txn.open_table(QUESTIONS)?, id)).transpose()?.flatten()
            {
                txn.abort()?;
                return Ok(existing);
            }
        }
        {
            let mut meta = txn.open_table(META)?;
            let id = meta.get(meta_keys::NEXT_QUESTION_ID)?.map(|v| v.value()).unwrap_or(1);
            meta.insert(meta_keys::NEXT_QUESTION_ID, id + 1)?;
            record.id = id;
            txn.open_table(QUESTIONS)?.insert(id, encode(&record).as_slice())?;
            if let Some(update) = update {
                txn.open_table(UPDATE_QUESTIONS)?.insert(update, id)?;
            }
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut session = read_session(&sessions, record.employee)?;
            session.last_question = Some(id);
            session.awaiting_reason_for = None;
            sessions.insert(record.employee.0, encode(&session).as_slice())?;
        }
        self.commit(txn)?;
        Ok(record)
    }

    pub fn question(&self, id: u64) -> StoreResult<Option<QuestionRecord>> {
        let txn = self.db.begin_read()?;
        read_question(&txn.open_table(QUESTIONS)?, id)
    }

    /// `employee`'s last `limit` questions asked at or after `since`, oldest first. Reads from
    /// the newest back and stops at `since` (ids grow with time), not the whole log.
    pub fn recent_questions(
        &self,
        employee: EmployeeId,
        since: i64,
        limit: usize,
    ) -> StoreResult<Vec<QuestionRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUESTIONS)?;
        let mut out = Vec::new();
        for row in table.iter()?.rev() {
            let (id, bytes) = row?;
            let record: QuestionRecord = decode(bytes.value(), || format!("question {}", id.value()))?;
            if record.asked_at < since || out.len() == limit {
                break;
            }
            if record.employee == employee {
                out.push(record);
            }
        }
        out.reverse();
        Ok(out)
    }

    pub fn questions(&self) -> StoreResult<Vec<QuestionRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUESTIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, bytes) = row?;
            out.push(decode(bytes.value(), || format!("question {}", id.value()))?);
        }
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
        let txn = self.db.begin_write()?;
        let written = {
            let mut table = txn.open_table(QUESTIONS)?;
            match read_question(&table, question)? {
                Some(record) if record.employee != employee => Written::NotTheirs,
                Some(record) if only_first && record.feedback.is_some() => Written::HadFeedback,
                Some(mut record) => {
                    record.feedback = Some(feedback);
                    table.insert(question, encode(&record).as_slice())?;
                    let mut sessions = txn.open_table(SESSIONS)?;
                    let mut session = read_session(&sessions, employee)?;
                    session.awaiting_reason_for = await_reason.then_some(question);
                    sessions.insert(employee.0, encode(&session).as_slice())?;
                    Written::Record(record)
                }
                None => Written::NotTheirs,
            }
        };
        match written {
            Written::Record(_) => self.commit(txn)?,
            _ => txn.abort()?,
        }
        Ok(written)
    }

    pub fn session(&self, employee: EmployeeId) -> StoreResult<Session> {
        let txn = self.db.begin_read()?;
        read_session(&txn.open_table(SESSIONS)?, employee)
    }

    pub fn put_session(&self, employee: EmployeeId, session: &Session) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?.insert(employee.0, encode(session).as_slice())?;
        self.commit(txn)
    }

    /// Deletes conversation-log entries asked before `cutoff` (unix seconds); returns how many.
    pub fn purge_questions_before(&self, cutoff: i64) -> StoreResult<usize> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(QUESTIONS)?;
            let mut removed = 0;
            table.retain(|_, bytes| {
                let keep =
                    serde_json::from_slice::<QuestionRecord>(bytes).map_or(true, |q| q.asked_at >= cutoff);
                removed += usize::from(!keep);
                keep
            })?;
            removed
        };
        self.commit(txn)?;
        Ok(removed)
    }

    pub fn conversation_counts(&self) -> StoreResult<ConversationCounts> {
        let mut counts = ConversationCounts::default();
        for employee in self.employees()? {
            counts.employees += 1;
            counts.joined += u64::from(employee.telegram_id.is_some());
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUESTIONS)?;
        counts.questions = table.len()?;
        for row in table.iter()? {
            let (_, bytes) = row?;
            let q: QuestionRecord = decode(bytes.value(), || "question".to_owned())?;
            counts.answered += u64::from(q.answered);
            match q.feedback {
                Some(Feedback { helpful: true, .. }) => counts.helpful += 1,
                Some(Feedback { helpful: false, .. }) => counts.unhelpful += 1,
                None => {}
            }
        }
        Ok(counts)
    }
}
