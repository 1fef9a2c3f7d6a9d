//! Copying a whole store into another, across backends: how an embedded store moves into
//! PostgreSQL, and how a PostgreSQL store is written out to a redb file (a backup). The source
//! is read in one snapshot and verified, the destination written in one transaction and verified
//! against it, so a copy either lands whole and checked or leaves the destination as it was.

use super::kv::AnyTable;
use super::schema::{DOCUMENTS, EMPLOYEES, PLANS, QUESTIONS, TABLES, embeddings, meta_keys, meta_text};
use super::{Store, StoreError, StoreResult, Verified};

impl Store {
    /// Copies every record of this store into `dest`, which must hold no documents, employees,
    /// plans or questions yet. `progress` hears (rows copied, rows in all) as the copy goes.
    /// Staged embeddings of an unfinished re-embedding run are not copied; the current model's
    /// are. Returns what the copy holds, verified record by record.
    pub fn copy_into(&self, dest: &Store, mut progress: impl FnMut(u64, u64)) -> StoreResult<Verified> {
        let expected = self.verify()?;
        let from = self.read()?;
        let vectors = meta_text(&from, meta_keys::EMBEDDING_MODEL)?.as_deref().map(embeddings);
        let mut tables: Vec<&dyn AnyTable> = TABLES.to_vec();
        tables.extend(vectors.as_ref().map(|v| v as &dyn AnyTable));
        let mut total = 0;
        for table in &tables {
            total += table.rows(&from)?;
        }

        let to = dest.write()?;
        let occupied: [&dyn AnyTable; 4] = [&DOCUMENTS, &EMPLOYEES, &QUESTIONS, &PLANS];
        for table in occupied {
            if table.rows_in(&to)? > 0 {
                to.abort()?;
                return Err(StoreError::NotEmpty { path: dest.path.clone(), table: table.name().to_owned() });
            }
        }
        let mut copied = 0;
        for table in &tables {
            table.copy(&from, &to, &mut |rows| {
                copied += rows;
                progress(copied, total);
            })?;
        }
        dest.commit(to)?;

        let written = dest.verify()?;
        if written != expected {
            return Err(StoreError::Damaged {
                path: dest.path.clone(),
                reason: format!("the copy holds {written:?}, the original {expected:?}"),
            });
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::{ReadableDatabase, TableHandle};

    use super::super::testing::fresh_database;
    use super::super::*;

    fn new_doc(source: &str, texts: &[&str]) -> NewDocument {
        NewDocument {
            root: "/kb".into(),
            source: source.into(),
            title: source.into(),
            language: Language::Ru,
            groups: vec!["hr".into()],
            content_hash: source.into(),
            pipeline: "test".into(),
            format: Format::Markdown,
            size: 10,
            updated_at: 5,
            chunks: texts
                .iter()
                .enumerate()
                .map(|(i, text)| ChunkRecord {
                    ordinal: i as u32,
                    heading_path: vec!["Отпуск".into()],
                    text: (*text).into(),
                    start: 0,
                    end: text.len() as u64,
                    tokens: 3,
                })
                .collect(),
        }
    }

    /// A store with a record in every table.
    fn populate(store: &Store) {
        let vectors = vec![vec![0.6f32, 0.8], vec![1.0, 0.0]];
        let model = ChunkVectors { model: "m", vectors: &vectors };
        store.put_document(new_doc("a.md", &["один", "два"]), Some(model)).unwrap();
        let single = vec![vec![0.0f32, 1.0]];
        store
            .put_document(new_doc("b.md", &["три"]), Some(ChunkVectors { model: "m", vectors: &single }))
            .unwrap();
        let new = |name: &str| NewEmployee {
            name: name.into(),
            department: "Sales".into(),
            position: Some("Manager".into()),
            role: Role::Employee,
            groups: vec!["hr".into()],
            start_date: Some("2026-12-01".into()),
        };
        let anna = store.create_employee(new("Анна"), 10).unwrap();
        let boris = store.create_employee(new("Boris"), 11).unwrap();
        let invite = Invite { employee: anna.id, created_at: 10, expires_at: 1000, used_at: None };
        store.create_invite(&invite_hash("code"), &invite).unwrap();
        store.redeem_invite(&invite_hash("code"), 777, 20).unwrap().unwrap();
        let question = QuestionRecord {
            id: 0,
            employee: anna.id,
            asked_at: 30,
            language: Language::Ru,
            text: "Сколько дней отпуска?".into(),
            answered: true,
            sources: vec![CitedChunk { document: DocumentId(1), ordinal: 0, score: 0.9 }],
            feedback: None,
        };
        let question = store.record_question_once(Some(41), question).unwrap();
        store
            .set_feedback(anna.id, question.id, Feedback { helpful: true, reason: None, at: 31 }, false)
            .unwrap();
        store.receive_updates(&[(42, b"{\"update_id\":42}".to_vec())]).unwrap();
        store.commit_update(40, &["an answer to update 40".to_owned()]).unwrap();
        store.enqueue(&["a reply".to_owned()]).unwrap();
        store.put_plan("sales", &serde_json::json!({"id": "sales", "tasks": ["laptop"]})).unwrap();
        let assignment = Assignment {
            plan: "sales".into(),
            start_date: "2026-12-01".into(),
            buddy: Some(boris.id),
            manager: None,
            hr: None,
            timezone: Some("Europe/Moscow".into()),
            assigned_at: 12,
        };
        store.assign(anna.id, &assignment).unwrap();
        store.set_task_state(anna.id, "laptop", &TaskState { done_at: Some(40), quiz: None }).unwrap();
        store.send_once(anna.id, "day-1", &["reminder".to_owned()], 50).unwrap();
        let broadcast = Broadcast {
            id: 0,
            text: "Hello".into(),
            created_at: 60,
            recipients: vec![Recipient { employee: anna.id, chat: ChatId(777) }],
            unreachable: vec![boris.id],
        };
        let broadcast =
            store.create_broadcast(broadcast, |id, chat| format!("broadcast {id} to {chat}")).unwrap();
        let queued: Vec<(u64, String)> = store.outbox(10).unwrap();
        store.outbox_delivered(queued.last().unwrap().0, Some((broadcast.id, ChatId(777), true))).unwrap();
        store.set_bot_username("sputnik_bot").unwrap();
    }

    /// Everything a reader of the store sees, as text to compare.
    fn seen(store: &Store) -> String {
        let anna = EmployeeId(1);
        let mut vectors = Vec::new();
        store.for_each_embedding(|d, ordinal, v| vectors.push((d.id, ordinal, v.to_vec()))).unwrap();
        let chunks: Vec<_> = store.documents().unwrap().iter().map(|d| store.chunks(d.id).unwrap()).collect();
        format!(
            "{:?}\n{chunks:?}\n{vectors:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            store.documents().unwrap(),
            store.employees().unwrap(),
            store.employee_by_telegram(777).unwrap(),
            store.questions().unwrap(),
            store.session(anna).unwrap(),
            store.inbox().unwrap(),
            store.outbox::<String>(10).unwrap(),
            store.plans::<serde_json::Value>().unwrap(),
            store.assignments().unwrap(),
            store.task_states(anna).unwrap(),
            store.sent_at(anna, "day-1").unwrap(),
            store.broadcast(1).unwrap(),
            store.deliveries(1).unwrap(),
            store.bot_username().unwrap(),
            (store.instance_id().unwrap(), store.counts().unwrap(), store.telegram_offset().unwrap()),
            store.embedding_model().unwrap(),
        )
    }

    fn redb_tables(store: &Store) -> BTreeSet<String> {
        let Backend::Redb(db) = &store.backend else { panic!("a redb store") };
        db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_owned()).collect()
    }

    /// redb → PostgreSQL → redb: every record arrives, every table of the file is carried (a
    /// table missing from `TABLES` shows up here), and counters go on where they stopped.
    #[test]
    fn a_store_copies_into_postgres_and_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let original = Store::open(&dir.path().join("original.redb")).unwrap();
        populate(&original);
        let postgres = Store::connect(&fresh_database()).unwrap();
        let mut last = (0, 0);
        let copied = original.copy_into(&postgres, |done, total| last = (done, total)).unwrap();
        assert_eq!(copied, original.verify().unwrap());
        assert!(last.0 == last.1 && last.1 > 20, "progress ends at the total: {last:?}");
        assert_eq!(seen(&postgres), seen(&original));

        let back = Store::open(&dir.path().join("back.redb")).unwrap();
        postgres.copy_into(&back, |_, _| {}).unwrap();
        assert_eq!(seen(&back), seen(&original));
        assert_eq!(redb_tables(&back), redb_tables(&original));

        let next = NewEmployee {
            name: "Вера".into(),
            department: "Ops".into(),
            position: None,
            role: Role::Admin,
            groups: vec![],
            start_date: None,
        };
        assert_eq!(postgres.create_employee(next, 99).unwrap().id, EmployeeId(3));
    }

    #[test]
    fn a_copy_into_a_store_with_records_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let original = Store::open(&dir.path().join("original.redb")).unwrap();
        populate(&original);
        let occupied = Store::connect(&fresh_database()).unwrap();
        occupied.put_document(new_doc("mine.md", &["своё"]), None).unwrap();
        let before = seen(&occupied);
        let err = original.copy_into(&occupied, |_, _| {}).unwrap_err();
        assert!(matches!(err, StoreError::NotEmpty { .. }), "{err}");
        assert_eq!(seen(&occupied), before);
    }
}
