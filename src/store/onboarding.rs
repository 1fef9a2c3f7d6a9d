//! Onboarding state: plans (stored as the validated JSON the onboarding module gives), who follows
//! which plan, each employee's task progress, and the ledger of scheduled messages already queued.
//!
//! The ledger is what makes reminders exactly-once: a scheduled message is recorded as sent and
//! appended to the outbox in one transaction, so a restart neither repeats nor loses it, and the
//! outbox's own guarantees carry it to Telegram.

use redb::{ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::outbox::append;
use super::people::EmployeeId;
use super::schema::{ASSIGNMENTS, NOTIFICATIONS, PLANS, TASK_STATES};
use super::{Store, StoreResult, decode, encode};

/// An employee's onboarding: the plan, from when, and who helps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub plan: String,
    /// Day 1 of the plan (or the first working day from it), `YYYY-MM-DD`.
    pub start_date: String,
    pub buddy: Option<EmployeeId>,
    pub manager: Option<EmployeeId>,
    pub hr: Option<EmployeeId>,
    /// IANA time zone; `None`: `onboarding.timezone`.
    pub timezone: Option<String>,
    pub assigned_at: i64,
}

/// One task of one employee.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub done_at: Option<i64>,
    pub quiz: Option<QuizAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizAnswer {
    /// The first answer, from 0: what the quiz says about what the employee knew.
    pub choice: usize,
    pub correct: bool,
    pub at: i64,
    /// Answers given in all (tries after a wrong one included); 0 in records from before tries.
    #[serde(default)]
    pub attempts: u32,
}

impl Store {
    pub fn put_plan<T: Serialize>(&self, id: &str, plan: &T) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(PLANS)?.insert(id, encode(plan).as_slice())?;
        self.commit(txn)
    }

    pub fn plan<T: DeserializeOwned>(&self, id: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PLANS)?;
        table.get(id)?.map(|v| decode(v.value(), || format!("plan {id}"))).transpose()
    }

    pub fn plans<T: DeserializeOwned>(&self) -> StoreResult<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PLANS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, bytes) = row?;
            out.push(decode(bytes.value(), || format!("plan {}", id.value()))?);
        }
        Ok(out)
    }

    pub fn assign(&self, employee: EmployeeId, assignment: &Assignment) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(ASSIGNMENTS)?.insert(employee.0, encode(assignment).as_slice())?;
        self.commit(txn)
    }

    pub fn assignment(&self, employee: EmployeeId) -> StoreResult<Option<Assignment>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ASSIGNMENTS)?;
        table.get(employee.0)?.map(|v| decode(v.value(), || format!("assignment of {employee}"))).transpose()
    }

    pub fn assignments(&self) -> StoreResult<Vec<(EmployeeId, Assignment)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ASSIGNMENTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, bytes) = row?;
            let employee = EmployeeId(id.value());
            out.push((employee, decode(bytes.value(), || format!("assignment of {employee}"))?));
        }
        Ok(out)
    }

    pub fn task_state(&self, employee: EmployeeId, task: &str) -> StoreResult<TaskState> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TASK_STATES)?;
        Ok(table
            .get((employee.0, task))?
            .map(|v| decode(v.value(), || format!("task {task} of {employee}")))
            .transpose()?
            .unwrap_or_default())
    }

    /// Every task state of `employee`, by task id.
    pub fn task_states(&self, employee: EmployeeId) -> StoreResult<Vec<(String, TaskState)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TASK_STATES)?;
        let mut out = Vec::new();
        for row in table.range((employee.0, "")..(employee.0 + 1, ""))? {
            let (key, bytes) = row?;
            let task = key.value().1.to_owned();
            out.push((task.clone(), decode(bytes.value(), || format!("task {task} of {employee}"))?));
        }
        Ok(out)
    }

    pub fn set_task_state(&self, employee: EmployeeId, task: &str, state: &TaskState) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(TASK_STATES)?.insert((employee.0, task), encode(state).as_slice())?;
        self.commit(txn)
    }

    /// Queues `actions` unless the scheduled message `key` of `employee` was queued before; both
    /// in one transaction. Returns whether it queued them.
    pub fn send_once<T: Serialize>(
        &self,
        employee: EmployeeId,
        key: &str,
        actions: &[T],
        now: i64,
    ) -> StoreResult<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut sent = txn.open_table(NOTIFICATIONS)?;
            if sent.get((employee.0, key))?.is_some() {
                drop(sent);
                txn.abort()?;
                return Ok(false);
            }
            sent.insert((employee.0, key), now)?;
        }
        append(&txn, actions)?;
        self.commit(txn)?;
        Ok(true)
    }

    /// When the scheduled message `key` of `employee` was queued, if it was.
    pub fn sent_at(&self, employee: EmployeeId, key: &str) -> StoreResult<Option<i64>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(NOTIFICATIONS)?.get((employee.0, key))?.map(|v| v.value()))
    }
}
