//! Employees and invites (the conversation log is in `conversation.rs`).
//!
//! Invariants: an invite code is stored only as its blake3 hash and is redeemed at most once,
//! in the same transaction that binds the Telegram account; one Telegram account belongs to at
//! most one employee.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use super::kv::{Reader, Span};
use super::schema::{EMPLOYEES, INVITES, TELEGRAM_USERS, meta_keys, take_id};
use super::{Language, Store, StoreError, StoreResult, decode, encode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmployeeId(pub u64);

impl std::fmt::Display for EmployeeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A Telegram chat. Sputnik talks to employees in private chats, whose id is the employee's
/// Telegram user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChatId(pub i64);

impl ChatId {
    /// The private chat with a Telegram user.
    pub fn private(user_id: i64) -> ChatId {
        ChatId(user_id)
    }
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Employee,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Employee {
    pub id: EmployeeId,
    pub name: String,
    pub department: String,
    /// Job title, for choosing an onboarding plan ("Backend developer").
    #[serde(default)]
    pub position: Option<String>,
    pub role: Role,
    /// Access groups beyond the public documents.
    pub groups: Vec<String>,
    /// First working day, `YYYY-MM-DD`.
    pub start_date: Option<String>,
    pub active: bool,
    pub telegram_id: Option<i64>,
    /// Language chosen with /lang; otherwise the Telegram client's.
    pub language: Option<Language>,
    pub created_at: i64,
    pub joined_at: Option<i64>,
}

/// A new employee as HR describes them.
#[derive(Debug, Clone)]
pub struct NewEmployee {
    pub name: String,
    pub department: String,
    pub position: Option<String>,
    pub role: Role,
    pub groups: Vec<String>,
    pub start_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    pub employee: EmployeeId,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// Why an invite code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    Unknown,
    Expired,
    Used,
    /// The employee it names was deactivated.
    Deactivated,
}

/// The stored form of an invite code.
pub fn invite_hash(code: &str) -> String {
    blake3::hash(code.trim().as_bytes()).to_hex().to_string()
}

fn read_employee(txn: &impl Reader, id: u64) -> StoreResult<Option<Employee>> {
    match txn.get(&EMPLOYEES, &id)? {
        Some(bytes) => Ok(Some(decode(&bytes, || format!("employee {id}"))?)),
        None => Ok(None),
    }
}

impl Store {
    pub fn create_employee(&self, new: NewEmployee, now: i64) -> StoreResult<Employee> {
        let txn = self.write()?;
        let id = take_id(&txn, meta_keys::NEXT_EMPLOYEE_ID)?;
        let employee = Employee {
            id: EmployeeId(id),
            name: new.name,
            department: new.department,
            position: new.position,
            role: new.role,
            groups: new.groups,
            start_date: new.start_date,
            active: true,
            telegram_id: None,
            language: None,
            created_at: now,
            joined_at: None,
        };
        txn.insert(&EMPLOYEES, &id, &encode(&employee))?;
        self.commit(txn)?;
        Ok(employee)
    }

    pub fn employee(&self, id: EmployeeId) -> StoreResult<Option<Employee>> {
        read_employee(&self.read()?, id.0)
    }

    pub fn employees(&self) -> StoreResult<Vec<Employee>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&EMPLOYEES, Span::all(), |id, bytes| {
            out.push(decode(&bytes, || format!("employee {id}"))?);
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn employee_by_telegram(&self, telegram_id: i64) -> StoreResult<Option<Employee>> {
        let txn = self.read()?;
        let Some(id) = txn.get(&TELEGRAM_USERS, &telegram_id)? else {
            return Ok(None);
        };
        read_employee(&txn, id)
    }

    /// Changes an employee in one transaction; `change` sees the current record.
    pub fn update_employee(
        &self,
        id: EmployeeId,
        change: impl FnOnce(&mut Employee),
    ) -> StoreResult<Employee> {
        let txn = self.write()?;
        let mut employee = read_employee(&txn, id.0)?.ok_or(StoreError::UnknownEmployee(id.0))?;
        change(&mut employee);
        txn.insert(&EMPLOYEES, &id.0, &encode(&employee))?;
        self.commit(txn)?;
        Ok(employee)
    }

    pub fn create_invite(&self, code_hash: &str, invite: &Invite) -> StoreResult<()> {
        let txn = self.write()?;
        txn.insert(&INVITES, &code_hash.to_owned(), &encode(invite))?;
        self.commit(txn)
    }

    /// Redeems an invite for a Telegram account: checks it, marks it used and binds the account
    /// to the employee, all in one transaction.
    pub fn redeem_invite(
        &self,
        code_hash: &str,
        telegram_id: i64,
        now: i64,
    ) -> StoreResult<Result<Employee, InviteRefusal>> {
        let txn = self.write()?;
        let key = code_hash.to_owned();
        let invite: Option<Invite> = match txn.get(&INVITES, &key)? {
            Some(bytes) => Some(decode(&bytes, || "invite".to_owned())?),
            None => None,
        };
        let outcome = match invite {
            None => Err(InviteRefusal::Unknown),
            // The same account redeeming its own invite again — the update that joined it
            // handled a second time after a crash — joins again, changing nothing, so the
            // reply and the plan assignment that the first run did not finish are made now.
            Some(invite) if invite.used_at.is_some() => match read_employee(&txn, invite.employee.0)? {
                Some(employee) if employee.active && employee.telegram_id == Some(telegram_id) => {
                    Ok(employee)
                }
                _ => Err(InviteRefusal::Used),
            },
            Some(invite) if invite.expires_at <= now => Err(InviteRefusal::Expired),
            Some(mut invite) => {
                let id = invite.employee.0;
                let mut employee = read_employee(&txn, id)?.ok_or(StoreError::UnknownEmployee(id))?;
                if !employee.active {
                    Err(InviteRefusal::Deactivated)
                } else {
                    // One account, one employee: a previous binding of either side ends.
                    if let Some(previous) = employee.telegram_id {
                        txn.remove(&TELEGRAM_USERS, &previous)?;
                    }
                    let displaced = txn.get(&TELEGRAM_USERS, &telegram_id)?.filter(|&other| other != id);
                    txn.insert(&TELEGRAM_USERS, &telegram_id, &id)?;
                    if let Some(other) = displaced
                        && let Some(mut other) = read_employee(&txn, other)?
                    {
                        other.telegram_id = None;
                        txn.insert(&EMPLOYEES, &other.id.0, &encode(&other))?;
                    }
                    employee.telegram_id = Some(telegram_id);
                    employee.joined_at = Some(now);
                    txn.insert(&EMPLOYEES, &id, &encode(&employee))?;
                    invite.used_at = Some(now);
                    txn.insert(&INVITES, &key, &encode(&invite))?;
                    Ok(employee)
                }
            }
        };
        self.commit(txn)?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Feedback, QuestionRecord};

    fn anna(store: &Store) -> Employee {
        let new = NewEmployee {
            name: "Анна Иванова".into(),
            department: "Sales".into(),
            position: None,
            role: Role::Employee,
            groups: vec![],
            start_date: None,
        };
        store.create_employee(new, 100).unwrap()
    }

    #[test]
    fn an_invite_is_redeemed_once_and_binds_the_account() {
        crate::store::testing::each_backend(|backend| {
            let store = backend.open();
            let employee = anna(&store);
            let hash = invite_hash("code-1");
            store
                .create_invite(
                    &hash,
                    &Invite { employee: employee.id, created_at: 100, expires_at: 200, used_at: None },
                )
                .unwrap();
            assert_eq!(
                store.redeem_invite(&invite_hash("nope"), 7, 150).unwrap(),
                Err(InviteRefusal::Unknown)
            );
            let joined = store.redeem_invite(&hash, 7, 150).unwrap().unwrap();
            assert_eq!(joined.telegram_id, Some(7));
            assert_eq!(store.employee_by_telegram(7).unwrap().unwrap().id, employee.id);
            assert_eq!(store.redeem_invite(&hash, 8, 151).unwrap(), Err(InviteRefusal::Used));
            // The same account again (its join handled twice after a crash): joined, nothing changes.
            let again = store.redeem_invite(&hash, 7, 152).unwrap().unwrap();
            assert_eq!((again.id, again.telegram_id, again.joined_at), (employee.id, Some(7), Some(150)));

            let late = invite_hash("code-2");
            store
                .create_invite(
                    &late,
                    &Invite { employee: employee.id, created_at: 100, expires_at: 120, used_at: None },
                )
                .unwrap();
            assert_eq!(store.redeem_invite(&late, 9, 150).unwrap(), Err(InviteRefusal::Expired));
        });
    }

    #[test]
    fn an_update_handled_twice_logs_its_question_once_even_after_its_commit() {
        crate::store::testing::each_backend(|backend| {
            let store = backend.open();
            let employee = anna(&store);
            let asked = |at| QuestionRecord {
                id: 0,
                employee: employee.id,
                asked_at: at,
                language: Language::En,
                text: "How many vacation days?".into(),
                answered: true,
                sources: vec![],
                feedback: None,
            };
            let first = store.record_question_once(Some(41), asked(1000)).unwrap();
            // A crash before the commit: handled again, the same question.
            assert_eq!(store.record_question_once(Some(41), asked(1001)).unwrap().id, first.id);
            assert!(!store.update_handled(41).unwrap());
            assert!(store.commit_update(41, &["an answer"]).unwrap());
            assert!(store.update_handled(41).unwrap());
            // A replica that took the update over finishes after that commit.
            let late = store.record_question_once(Some(41), asked(1002)).unwrap();
            assert_eq!((late.id, late.asked_at), (first.id, 1000));
            assert!(!store.commit_update(41, &["the answer again"]).unwrap());
            assert!(store.question(first.id + 1).unwrap().is_none(), "one question in the log");
            // Another update is another question.
            assert_ne!(store.record_question_once(Some(42), asked(1003)).unwrap().id, first.id);
        });
    }

    #[test]
    fn feedback_only_on_ones_own_question_and_purge_by_age() {
        crate::store::testing::each_backend(|backend| {
            let store = backend.open();
            let employee = anna(&store);
            let question = store
                .record_question(QuestionRecord {
                    id: 0,
                    employee: employee.id,
                    asked_at: 1000,
                    language: Language::Ru,
                    text: "Сколько дней отпуска?".into(),
                    answered: true,
                    sources: vec![],
                    feedback: None,
                })
                .unwrap();
            assert_eq!(store.session(employee.id).unwrap().last_question, Some(question.id));
            let feedback = Feedback { helpful: false, reason: None, at: 1001 };
            assert!(
                store.set_feedback(EmployeeId(999), question.id, feedback.clone(), true).unwrap().is_none()
            );
            assert!(store.set_feedback(employee.id, question.id, feedback, true).unwrap().is_some());
            assert_eq!(store.session(employee.id).unwrap().awaiting_reason_for, Some(question.id));
            assert_eq!(store.conversation_counts().unwrap().unhelpful, 1);
            assert_eq!(store.purge_questions_before(500).unwrap(), 0);
            assert_eq!(store.purge_questions_before(2000).unwrap(), 1);
            assert!(store.questions().unwrap().is_empty());
        });
    }
}
