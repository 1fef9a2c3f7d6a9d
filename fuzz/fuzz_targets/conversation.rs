//! The conversation engine on arbitrary messages and button data from a joined admin and from a
//! stranger (huge, empty, control characters, mixed scripts, forged callback data): it answers
//! or refuses, never panics, and every message it would send fits Telegram's limit.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sputnik::chat::{Action, Engine, EngineSettings, Event, Origin, Sender};
use sputnik::ingest::{ImportRequest, Quiet};
use sputnik::people::{self, InviteRequest};
use sputnik::store::ChatId;
use sputnik::store::Role;
use sputnik::{App, Settings};

const ADMIN: i64 = 42;
const STRANGER: i64 = 43;

static ENGINE: LazyLock<(Engine, tempfile::TempDir)> = LazyLock::new(|| {
    let tmp = tempfile::tempdir().unwrap();
    let app = App::open(Settings::lexical_only(tmp.path().join("data"))).unwrap();
    let handbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/handbook/en/welcome.md");
    app.import(&ImportRequest { paths: vec![handbook], ..Default::default() }, &mut Quiet).unwrap();
    let invite = InviteRequest {
        name: "Fuzz Admin".into(),
        department: "QA".into(),
        position: None,
        role: Role::Admin,
        groups: vec![],
        start_date: None,
        lifetime_seconds: 86_400,
    };
    let code = people::invite(app.store(), &invite, "FuzzBot", 1_790_000_000).unwrap().code;
    let settings =
        EngineSettings { questions_per_minute: 1_000_000, burst: 1_000_000, ..EngineSettings::default() };
    let engine = Engine::new(Arc::new(app), settings, Arc::new(|| 1_790_000_000));
    engine.handle(&Event::Text { from: sender(ADMIN), chat: ChatId(ADMIN), text: format!("/start {code}") });
    (engine, tmp)
});

fn sender(user: i64) -> Sender {
    Sender {
        origin: Origin::Telegram { user_id: user },
        first_name: "F".into(),
        language_code: Some("ru".into()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest).into_owned();
    let user = if kind & 1 == 0 { ADMIN } else { STRANGER };
    let event = if kind & 2 == 0 {
        Event::Text { from: sender(user), chat: ChatId(user), text }
    } else {
        Event::Button {
            from: sender(user),
            chat: ChatId(user),
            message_id: 1,
            callback_id: "cb".into(),
            data: text,
        }
    };
    for action in ENGINE.0.handle(&event) {
        if let Action::Send { html, .. } | Action::Edit { html, .. } = &action {
            assert!(html.chars().count() <= 4096, "a message over Telegram's limit");
        }
    }
});
