//! Onboarding state: plans (stored as the validated JSON the onboarding module gives), who follows
//! which plan, each employee's task progress, and the ledger of scheduled messages already queued.
//!
//! The ledger is what makes reminders exactly-once: a scheduled message is recorded as sent and
//! appended to the outbox in one transaction, so a restart neither repeats nor loses it, and the
//! outbox's own guarantees carry it to Telegram.

use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::kv::{Reader, Span};
use super::outbox::append;
use super::people::EmployeeId;
use super::schema::{ASSIGNMENTS, NOTIFICATIONS, PLANS, TASK_STATES};
use super::{Store, StoreError, StoreResult, decode, encode};

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
        let txn = self.write()?;
        txn.insert(&PLANS, &id.to_owned(), &encode(plan))?;
        self.commit(txn)
    }

    pub fn plan<T: DeserializeOwned>(&self, id: &str) -> StoreResult<Option<T>> {
        let bytes = self.read()?.get(&PLANS, &id.to_owned())?;
        bytes.map(|v| decode(&v, || format!("plan {id}"))).transpose()
    }

    pub fn plans<T: DeserializeOwned>(&self) -> StoreResult<Vec<T>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&PLANS, Span::all(), |id, bytes| {
            out.push(decode(&bytes, || format!("plan {id}"))?);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn assign(&self, employee: EmployeeId, assignment: &Assignment) -> StoreResult<()> {
        let txn = self.write()?;
        txn.insert(&ASSIGNMENTS, &employee.0, &encode(assignment))?;
        self.commit(txn)
    }

    pub fn assignment(&self, employee: EmployeeId) -> StoreResult<Option<Assignment>> {
        let bytes = self.read()?.get(&ASSIGNMENTS, &employee.0)?;
        bytes.map(|v| decode(&v, || format!("assignment of {employee}"))).transpose()
    }

    pub fn assignments(&self) -> StoreResult<Vec<(EmployeeId, Assignment)>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&ASSIGNMENTS, Span::all(), |id, bytes| {
            let employee = EmployeeId(id);
            out.push((employee, decode(&bytes, || format!("assignment of {employee}"))?));
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn task_state(&self, employee: EmployeeId, task: &str) -> StoreResult<TaskState> {
        let bytes = self.read()?.get(&TASK_STATES, &(employee.0, task.to_owned()))?;
        Ok(bytes
            .map(|v| decode(&v, || format!("task {task} of {employee}")))
            .transpose()?
            .unwrap_or_default())
    }

    /// Every task state of `employee`, by task id.
    pub fn task_states(&self, employee: EmployeeId) -> StoreResult<Vec<(String, TaskState)>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        let span = Span::from_until((employee.0, String::new()), (employee.0 + 1, String::new()));
        txn.scan(&TASK_STATES, span, |(_, task), bytes| {
            let state = decode(&bytes, || format!("task {task} of {employee}"))?;
            out.push((task, state));
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn set_task_state(&self, employee: EmployeeId, task: &str, state: &TaskState) -> StoreResult<()> {
        let txn = self.write()?;
        txn.insert(&TASK_STATES, &(employee.0, task.to_owned()), &encode(state))?;
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
        let txn = self.write()?;
        let entry = (employee.0, key.to_owned());
        if txn.get(&NOTIFICATIONS, &entry)?.is_some() {
            txn.abort()?;
            return Ok(false);
        }
        txn.insert(&NOTIFICATIONS, &entry, &now)?;
        append(&txn, actions)?;
        self.commit(txn)?;
        Ok(true)
    }

    /// When the scheduled message `key` of `employee` was queued, if it was.
    pub fn sent_at(&self, employee: EmployeeId, key: &str) -> StoreResult<Option<i64>> {
        self.read()?.get(&NOTIFICATIONS, &(employee.0, key.to_owned()))
    }
}
