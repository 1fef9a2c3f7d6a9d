//! The conversation engine, driven in-process with a controllable clock: joining, answering,
//! feedback, access, limits — exactly what the Telegram adapter will carry.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sputnik::chat::{Action, Engine, EngineSettings, Event, Origin, Sender};
use sputnik::ingest::ImportRequest;
use sputnik::people::{self, InviteRequest};
use sputnik::store::{ChatId, Role};

use crate::common::*;

struct Harness {
    engine: Engine,
    app: Arc<sputnik::App>,
    now: Arc<AtomicI64>,
    _tmp: tempfile::TempDir,
}

const START: i64 = 1_790_000_000;

fn harness(settings: EngineSettings) -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let app = open_app(&tmp.path().join("data"));
    import(&app, &[&repo_path("assets/handbook")], Default::default());
    let managers = repo_path("assets/handbook-managers");
    import(&app, &[&managers], ImportRequest { groups: vec!["managers".into()], ..Default::default() });
    let app = Arc::new(app);
    let now = Arc::new(AtomicI64::new(START));
    let clock_now = now.clone();
    let engine = Engine::new(app.clone(), settings, Arc::new(move || clock_now.load(Ordering::SeqCst)));
    Harness { engine, app, now, _tmp: tmp }
}

impl Harness {
    fn invite(&self, name: &str, role: Role, groups: &[&str]) -> String {
        let request = InviteRequest {
            name: name.into(),
            department: "Sales".into(),
            position: None,
            role,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            start_date: None,
            lifetime_seconds: 3600,
        };
        let app = &*self.app;
        people::invite(app.store(), &request, "PolarisBot", self.now.load(Ordering::SeqCst)).unwrap().code
    }

    fn say(&self, user: i64, lang: &str, text: &str) -> Vec<Action> {
        let from = Sender {
            origin: Origin::Telegram { user_id: user },
            first_name: "X".into(),
            language_code: Some(lang.into()),
        };
        self.engine.handle(&Event::Text { from, chat: ChatId(user), text: text.into() })
    }

    fn press(&self, user: i64, data: &str) -> Vec<Action> {
        let from = Sender {
            origin: Origin::Telegram { user_id: user },
            first_name: "X".into(),
            language_code: Some("en".into()),
        };
        self.engine.handle(&Event::Button {
            from,
            chat: ChatId(user),
            message_id: 77,
            callback_id: "cb".into(),
            data: data.into(),
        })
    }

    fn join(&self, user: i64, role: Role, groups: &[&str]) {
        let code = self.invite("Test Person", role, groups);
        let reply = texts(&self.say(user, "en", &format!("/start {code}")));
        assert!(reply[0].starts_with("Welcome"), "{reply:?}");
    }
}

fn texts(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| if let Action::Send { html, .. } = a { Some(html.clone()) } else { None })
        .collect()
}

fn feedback_data(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| if let Action::Send { buttons, .. } = a { Some(buttons) } else { None })
        .flatten()
        .map(|b| b.data.clone())
        .collect()
}

#[test]
fn joining_with_valid_expired_reused_and_bogus_codes() {
    let h = harness(EngineSettings::default());
    let code = h.invite("Анна Иванова", Role::Employee, &[]);
    assert!(texts(&h.say(10, "ru", "/start 00000000000000000000000000000000"))[0].contains("не работает"));
    let welcome = texts(&h.say(10, "ru", &format!("/start {code}")));
    assert!(welcome[0].contains("Добро пожаловать, <b>Анна Иванова</b>"), "{welcome:?}");
    assert!(texts(&h.say(11, "en", &format!("/start {code}")))[0].contains("already been used"));
    // The same account with its own link again — the join handled a second time after a crash
    // between the join and its reply — is welcomed again, not refused.
    let again = texts(&h.say(10, "ru", &format!("/start {code}")));
    assert!(again[0].contains("Добро пожаловать, <b>Анна Иванова</b>"), "{again:?}");
    assert!(texts(&h.say(10, "ru", "/start"))[0].contains("уже подключены"));

    let late = h.invite("Late Person", Role::Employee, &[]);
    h.now.fetch_add(3601, Ordering::SeqCst);
    assert!(texts(&h.say(12, "en", &format!("/start {late}")))[0].contains("expired"));
}

#[test]
fn strangers_and_deactivated_employees_get_one_polite_message_and_nothing_else() {
    let h = harness(EngineSettings::default());
    for (user, lang, expected) in [(20, "en", "invite link from HR"), (21, "ru", "приглашению от HR")]
    {
        let actions = h.say(user, lang, "How many vacation days do I get?");
        assert_eq!(actions.len(), 1, "{actions:?}");
        let reply = &texts(&actions)[0];
        assert!(reply.contains(expected), "{reply}");
        assert!(!reply.contains("28") && !reply.contains("vacation"), "no content for strangers: {reply}");
    }
    assert_eq!(h.press(20, "fb:1:1").len(), 1, "buttons of strangers only get acknowledged");

    h.join(22, Role::Employee, &[]);
    let id = h.app.store().employee_by_telegram(22).unwrap().unwrap().id;
    h.app.store().update_employee(id, |e| e.active = false).unwrap();
    let actions = h.say(22, "en", "How do I get a laptop?");
    assert_eq!(
        texts(&actions),
        ["Your access to the assistant is switched off. If you think this is a mistake, contact HR."]
    );
}

#[test]
fn questions_in_both_languages_are_answered_with_sources_and_logged() {
    let h = harness(EngineSettings::default());
    h.join(30, Role::Employee, &[]);
    let actions = h.say(30, "ru", "Сколько дней отпуска положено в году?");
    assert!(matches!(actions[0], Action::Typing { chat: ChatId(30) }));
    let answer = texts(&actions).join("\n");
    assert!(answer.contains("28"), "{answer}");
    assert!(answer.contains("Источники:") && answer.contains("<code>ru/otpusk.md</code>"), "{answer}");
    assert_eq!(feedback_data(&actions).len(), 2);

    let answer = texts(&h.say(30, "en", "My laptop stopped charging, what should I do?")).join("\n");
    assert!(
        answer.contains("<code>en/it-equipment.md</code>") && answer.contains("Replacing a broken laptop"),
        "{answer}"
    );

    let sources = texts(&h.say(30, "en", "/sources")).join("\n");
    assert!(sources.contains("Sources of the last answer") && sources.contains("spare pool"), "{sources}");

    let unknown =
        texts(&h.say(30, "en", "Which quantum chromodynamics lattice should we simulate?")).join("\n");
    assert!(unknown.starts_with("Sorry, I could not find an answer"), "{unknown}");

    let log = h.app.store().questions().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().map(|q| q.answered).collect::<Vec<_>>(), [true, true, false]);
    assert!(log[0].sources.iter().any(|s| s.score > 0.0));
}

#[test]
fn feedback_buttons_record_helpful_and_unhelpful_with_a_reason() {
    let h = harness(EngineSettings::default());
    h.join(40, Role::Employee, &[]);
    h.join(41, Role::Employee, &[]);
    let data = feedback_data(&h.say(40, "en", "How do I book a meeting room?"));
    let (up, down) = (&data[0], &data[1]);

    // Someone else's question: forged data changes nothing.
    assert_eq!(h.press(41, up).len(), 1);
    assert!(h.app.store().questions().unwrap()[0].feedback.is_none());

    let actions = h.press(40, down);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::EditButtons { message_id: 77, buttons, .. } if buttons.is_empty()))
    );
    assert!(texts(&actions)[0].contains("What was wrong"));
    let thanks = texts(&h.say(40, "en", "The room names are outdated"));
    assert!(thanks[0].contains("HR will see your comment"), "{thanks:?}");
    let question = h.app.store().questions().unwrap().remove(0);
    let feedback = question.feedback.unwrap();
    assert!(!feedback.helpful);
    assert_eq!(feedback.reason.as_deref(), Some("The room names are outdated"));

    let data = feedback_data(&h.say(40, "en", "Does the company pay for lunch?"));
    h.press(40, &data[0]);
    assert_eq!(h.app.store().conversation_counts().unwrap().helpful, 1);
    for forged in ["fb:1:999", "fb:x:1", "garbage"] {
        assert_eq!(h.press(40, forged).len(), 1, "{forged}");
    }
}

#[test]
fn access_groups_shape_answers() {
    let h = harness(EngineSettings::default());
    h.join(50, Role::Employee, &[]);
    h.join(51, Role::Employee, &["managers"]);
    let question = "What is the salary review budget for my team?";
    let employee = texts(&h.say(50, "en", question)).join("\n");
    assert!(!employee.contains("salary-review.md") && !employee.contains("8 percent"), "{employee}");
    let manager = texts(&h.say(51, "en", question)).join("\n");
    assert!(manager.contains("salary-review.md") && manager.contains("8 percent"), "{manager}");
}

#[test]
fn the_rate_limit_answers_politely() {
    let h = harness(EngineSettings { questions_per_minute: 2, burst: 2, ..EngineSettings::default() });
    h.join(60, Role::Employee, &[]);
    for _ in 0..2 {
        assert!(texts(&h.say(60, "en", "How do I book a meeting room?"))[0].contains("Google Calendar"));
    }
    let limited = texts(&h.say(60, "en", "How do I book a meeting room?"));
    assert!(limited[0].starts_with("You are asking very quickly"), "{limited:?}");
    assert_eq!(h.app.store().questions().unwrap().len(), 2, "limited questions are not answered");
}

#[test]
fn commands_language_and_admin_only_features() {
    let h = harness(EngineSettings { bot_username: "PolarisBot".into(), ..EngineSettings::default() });
    h.join(70, Role::Employee, &[]);
    h.join(71, Role::Admin, &[]);
    assert!(texts(&h.say(70, "en", "/lang ru"))[0].contains("по-русски"));
    assert!(texts(&h.say(70, "en", "/help"))[0].starts_with("Напишите любой вопрос"));
    assert!(!texts(&h.say(70, "en", "/help"))[0].contains("/invite"));
    assert!(texts(&h.say(71, "en", "/help"))[0].contains("/invite"));
    assert!(texts(&h.say(70, "en", "/stats"))[0].contains("только для администраторов"));
    assert!(texts(&h.say(71, "en", "/stats"))[0].contains("Documents: 22"));
    let invite = texts(&h.say(71, "en", "/invite Пётр Сидоров; Logistics"))[0].clone();
    assert!(invite.contains("https://t.me/PolarisBot?start="), "{invite}");
    let code = invite.rsplit("start=").next().unwrap().trim().to_owned();
    assert!(texts(&h.say(72, "ru", &format!("/start {code}")))[0].contains("Пётр Сидоров"));
    assert!(texts(&h.say(71, "en", "/invite nobody"))[0].starts_with("Usage"));
}

/// A process that dies after handling an update but before committing it gets the update again
/// after the restart: the question is answered again (the first answer was never sent) but
/// logged once. A later update with the same text is a new question.
#[test]
fn an_update_handled_twice_logs_its_question_once() {
    let h = harness(EngineSettings::default());
    let code = h.invite("Vera", Role::Employee, &[]);
    h.say(501, "en", &format!("/start {code}"));
    let from = Sender {
        origin: Origin::Telegram { user_id: 501 },
        first_name: "V".into(),
        language_code: Some("en".into()),
    };
    let ask = Event::Text { from, chat: ChatId(501), text: "How do I get a laptop?".into() };
    let first = h.engine.handle_update(10, &ask);
    let again = h.engine.handle_update(10, &ask);
    assert_eq!(first, again, "the same answer, with the same feedback buttons");
    let store = || &*h.app;
    assert_eq!(store().store().questions().unwrap().len(), 1);
    store().store().commit_update(10, &again).unwrap();
    h.engine.handle_update(11, &ask);
    assert_eq!(store().store().questions().unwrap().len(), 2, "a new update is a new question");
    // Without an update id (the terminal chat), every message is its own question.
    h.say(501, "en", "How do I get a laptop?");
    assert_eq!(store().store().questions().unwrap().len(), 3);
}
