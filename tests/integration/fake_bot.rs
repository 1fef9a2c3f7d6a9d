//! A fake Telegram Bot API on 127.0.0.1 that speaks the JSON teloxide expects, records what
//! the bot does and injects faults (429 with retry_after, 5xx, slow answers, dropped
//! connections), with helpers to run `sputnik serve` against it. Shared by the end-to-end tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{Value, json};

use crate::common::*;

pub const TOKEN: &str = "123456:TEST-TOKEN";

/// What the bot called, in order.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
pub struct Fake {
    pub updates: Mutex<VecDeque<Value>>,
    pub next_update: AtomicI64,
    pub next_message: AtomicI64,
    pub calls: Mutex<Vec<Call>>,
    /// Answer this many upcoming sendMessage calls with 429 retry_after=1.
    pub throttle_sends: AtomicU32,
    /// Answer this many upcoming sendMessage calls with 502.
    pub fail_sends: AtomicU32,
    /// Hold this many upcoming sendMessage calls without an answer until the client gives up;
    /// the message never reaches anyone (a request lost on the way).
    pub stall_sends: AtomicU32,
    /// Drop the connection of this many upcoming sendMessage calls before taking the message.
    pub drop_sends: AtomicU32,
    /// Take this many upcoming messages, then drop the connection before the answer (a reply
    /// lost on the way back: the bot cannot know the message arrived).
    pub lose_answers: AtomicU32,
    /// Drop the connection of this many upcoming getUpdates calls in the middle of the answer.
    pub drop_polls: AtomicU32,
    /// Hold this many upcoming getUpdates calls without an answer until the client gives up.
    pub stall_polls: AtomicU32,
    pub wake: tokio::sync::Notify,
    /// What each edited message shows now, by (chat, message): an edit that changes nothing is
    /// refused, as Telegram refuses it.
    pub edited: Mutex<std::collections::HashMap<(i64, i64), String>>,
    /// Files the fake serves through getFile and its download URL: id → (name, bytes).
    pub files: Mutex<std::collections::HashMap<String, Vec<u8>>>,
    /// The webhook set with setWebhook (url, secret): updates are then posted there, several at
    /// once and each chat's in order, each until it is answered 200, and getUpdates is refused.
    pub webhook: Mutex<Option<(String, String)>>,
    /// Posts of each update to the webhook, answered or not.
    pub posts: Mutex<std::collections::HashMap<i64, u32>>,
}

pub type Shared = Arc<Fake>;

pub async fn bot_api(
    State(fake): State<Shared>,
    UrlPath((token, method)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let body = request_body(&headers, &body);
    // Bot API method names are case-insensitive (teloxide sends "GetMe").
    let method = method.to_ascii_lowercase();
    if token != format!("bot{TOKEN}") {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        )
            .into_response();
    }
    // sendMessage is recorded below, once its fate is known; failed attempts separately.
    if method != "getupdates" && method != "sendmessage" {
        fake.calls.lock().unwrap().push(Call {
            method: method.clone(),
            body: body.clone(),
            at: Instant::now(),
        });
    }
    let record = |name: &str| {
        fake.calls.lock().unwrap().push(Call {
            method: name.to_owned(),
            body: body.clone(),
            at: Instant::now(),
        })
    };
    let ok = |result: Value| {
        (axum::http::StatusCode::OK, Json(json!({"ok": true, "result": result}))).into_response()
    };
    match method.as_str() {
        "setwebhook" => {
            let url = body["url"].as_str().unwrap_or_default().to_owned();
            let secret = body["secret_token"].as_str().unwrap_or_default().to_owned();
            *fake.webhook.lock().unwrap() = Some((url, secret));
            fake.wake.notify_waiters();
            ok(json!(true))
        }
        "deletewebhook" => {
            *fake.webhook.lock().unwrap() = None;
            ok(json!(true))
        }
        "getupdates" if fake.webhook.lock().unwrap().is_some() => (
            axum::http::StatusCode::CONFLICT,
            Json(json!({"ok": false, "error_code": 409,
                        "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"})),
        )
            .into_response(),
        "getme" => ok(json!({
            "id": 1, "is_bot": true, "first_name": "Sputnik", "username": "SputnikTestBot",
            "can_join_groups": false, "can_read_all_group_messages": false, "supports_inline_queries": false,
            "has_main_web_app": false
        })),
        "getupdates" => {
            if take(&fake.stall_polls) {
                record("getupdates-stalled");
                return stall().await;
            }
            if take(&fake.drop_polls) {
                record("getupdates-dropped");
                return dropped();
            }
            let offset = body["offset"].as_i64().unwrap_or(0);
            let timeout = body["timeout"].as_u64().unwrap_or(0);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let pending: Vec<Value> = {
                    let mut queue = fake.updates.lock().unwrap();
                    // Confirmed updates (below the offset) are forgotten, as Telegram does, and
                    // at most 100 come back at once.
                    queue.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                    queue.iter().take(100).cloned().collect()
                };
                if !pending.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(pending));
                }
                let _ = tokio::time::timeout_at(deadline, fake.wake.notified()).await;
            }
        }
        "sendmessage" => {
            if take(&fake.stall_sends) {
                record("sendmessage-stalled");
                return stall().await;
            }
            if take(&fake.drop_sends) {
                record("sendmessage-dropped");
                return dropped();
            }
            if fake.throttle_sends.load(Ordering::SeqCst) > 0 {
                fake.throttle_sends.fetch_sub(1, Ordering::SeqCst);
                record("sendmessage-refused");
                return (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
                                "parameters": {"retry_after": 1}})),
                )
                    .into_response();
            }
            if fake.fail_sends.load(Ordering::SeqCst) > 0 {
                fake.fail_sends.fetch_sub(1, Ordering::SeqCst);
                record("sendmessage-refused");
                // Telegram's front proxies answer 5xx with an HTML page, not the API's JSON.
                return axum::response::Response::builder()
                    .status(502)
                    .header("content-type", "text/html")
                    .body(axum::body::Body::from("<html><body>502 Bad Gateway</body></html>"))
                    .unwrap();
            }
            record("sendmessage");
            if take(&fake.lose_answers) {
                fake.next_message.fetch_add(1, Ordering::SeqCst);
                record("sendmessage-answer-lost");
                return dropped();
            }
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let id = fake.next_message.fetch_add(1, Ordering::SeqCst) + 1;
            ok(json!({
                "message_id": id, "date": 1_790_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "Employee"},
                "from": {"id": 1, "is_bot": true, "first_name": "Sputnik"},
                "text": body["text"]
            }))
        }
        "getfile" => {
            let id = body["file_id"].as_str().unwrap_or_default().to_owned();
            let size = fake.files.lock().unwrap().get(&id).map(Vec::len);
            match size {
                Some(size) => ok(json!({"file_id": id, "file_unique_id": id, "file_size": size, "file_path": id})),
                None => (axum::http::StatusCode::BAD_REQUEST, Json(json!({"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"})))
                    .into_response(),
            }
        }
        "editmessagereplymarkup" | "editmessagetext" => {
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            let shown = format!("{}|{}", body["text"], body["reply_markup"]);
            let message = (chat, body["message_id"].as_i64().unwrap_or(0));
            if fake.edited.lock().unwrap().insert(message, shown.clone()).as_ref() == Some(&shown) {
                record("edit-not-modified");
                let description = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(json!({"ok": false, "error_code": 400, "description": description})),
                )
                    .into_response();
            }
            ok(json!({
                "message_id": body["message_id"], "date": 1_790_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "Employee"},
                "from": {"id": 1, "is_bot": true, "first_name": "Sputnik"}, "text": "answer"
            }))
        }
        _ => ok(json!(true)),
    }
}

/// A request's parameters as JSON: a JSON body, or the fields of a multipart form (teloxide
/// sends setWebhook as one, for its optional certificate file), each as a string.
fn request_body(headers: &axum::http::HeaderMap, body: &[u8]) -> Value {
    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(boundary) = kind.strip_prefix("multipart/form-data; boundary=") else {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    };
    let text = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else { continue };
        let Some(name) = head.split("name=\"").nth(1).and_then(|rest| rest.split('"').next()) else {
            continue;
        };
        fields.insert(name.to_owned(), Value::String(value.trim_end_matches("\r\n").to_owned()));
    }
    Value::Object(fields)
}

/// Takes one from a fault counter; true if there was one.
fn take(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// An answer that never comes: longer than any client waits (the tests set
/// telegram.request_timeout_seconds to 4).
async fn stall() -> axum::response::Response {
    tokio::time::sleep(Duration::from_secs(60)).await;
    axum::http::StatusCode::GATEWAY_TIMEOUT.into_response()
}

/// A connection dropped in the middle of the answer: the headers go out, then the body fails
/// and the server closes the connection.
fn dropped() -> axum::response::Response {
    let broken = tokio_stream::once(Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection dropped by the fake",
    )));
    axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(broken))
        .unwrap()
}

/// How many posts Telegram keeps open to a webhook at once (its `max_connections` default).
const WEBHOOK_CONNECTIONS: usize = 40;

/// The chat an update belongs to: Telegram posts one chat's updates one at a time, in order.
fn chat_of(update: &Value) -> i64 {
    let message = &update["message"]["chat"]["id"];
    let pressed = &update["callback_query"]["from"]["id"];
    message.as_i64().or(pressed.as_i64()).unwrap_or(-update["update_id"].as_i64().unwrap_or(0))
}

/// Telegram's side of a webhook: while one is set, posts updates to it with the secret header,
/// up to [`WEBHOOK_CONNECTIONS`] at once and one chat's in order, each until it is answered 200.
async fn post_updates(fake: Shared) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    // Updates being posted, and their chats.
    let busy: Arc<Mutex<(std::collections::HashSet<i64>, std::collections::HashSet<i64>)>> = Arc::default();
    loop {
        let webhook = fake.webhook.lock().unwrap().clone();
        let Some((url, secret)) = webhook else {
            let _ = tokio::time::timeout(Duration::from_millis(50), fake.wake.notified()).await;
            continue;
        };
        let ready: Vec<Value> = {
            let queue = fake.updates.lock().unwrap();
            let mut busy = busy.lock().unwrap();
            let mut ready = Vec::new();
            for update in queue.iter() {
                if busy.0.len() == WEBHOOK_CONNECTIONS {
                    break;
                }
                let (id, chat) = (update["update_id"].as_i64().unwrap(), chat_of(update));
                if !busy.0.contains(&id) && busy.1.insert(chat) {
                    busy.0.insert(id);
                    ready.push(update.clone());
                }
            }
            ready
        };
        if ready.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(50), fake.wake.notified()).await;
            continue;
        }
        for update in ready {
            let (fake, client, busy, url, secret) =
                (fake.clone(), client.clone(), busy.clone(), url.clone(), secret.clone());
            tokio::spawn(async move {
                let (id, chat) = (update["update_id"].as_i64().unwrap(), chat_of(&update));
                *fake.posts.lock().unwrap().entry(id).or_default() += 1;
                let posted = client
                    .post(&url)
                    .header("X-Telegram-Bot-Api-Secret-Token", secret)
                    .json(&update)
                    .send()
                    .await;
                if posted.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                    fake.updates.lock().unwrap().retain(|u| u["update_id"].as_i64() != Some(id));
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let mut busy = busy.lock().unwrap();
                busy.0.remove(&id);
                busy.1.remove(&chat);
                fake.wake.notify_waiters();
            });
        }
    }
}

pub async fn download(
    State(fake): State<Shared>,
    UrlPath((token, id)): UrlPath<(String, String)>,
) -> Result<Vec<u8>, axum::http::StatusCode> {
    if token != format!("bot{TOKEN}") {
        return Err(axum::http::StatusCode::UNAUTHORIZED);
    }
    fake.calls.lock().unwrap().push(Call { method: "download".into(), body: json!(id), at: Instant::now() });
    fake.files.lock().unwrap().get(&id).cloned().ok_or(axum::http::StatusCode::NOT_FOUND)
}

pub struct Server {
    pub fake: Shared,
    pub address: SocketAddr,
    pub _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start() -> Server {
        Server::start_on(0)
    }

    /// The fake on a chosen port (0: any free one).
    pub fn start_on(port: u16) -> Server {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let fake: Shared = Arc::new(Fake { next_update: AtomicI64::new(1000), ..Fake::default() });
        let app = axum::Router::new()
            .route("/{token}/{method}", any(bot_api))
            .route("/file/{token}/{id}", axum::routing::get(download))
            .with_state(fake.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        runtime.spawn(post_updates(fake.clone()));
        Server { fake, address, _runtime: runtime }
    }

    pub fn user(id: i64, lang: &str) -> Value {
        json!({"id": id, "is_bot": false, "first_name": format!("User{id}"), "language_code": lang})
    }

    pub fn push(&self, kind: &str, payload: Value) -> i64 {
        let id = self.fake.next_update.fetch_add(1, Ordering::SeqCst);
        let mut update = json!({"update_id": id});
        update[kind] = payload;
        self.fake.updates.lock().unwrap().push_back(update);
        self.fake.wake.notify_waiters();
        id
    }

    pub fn text(&self, user: i64, lang: &str, text: &str) -> i64 {
        self.push(
            "message",
            json!({
                "message_id": self.fake.next_update.load(Ordering::SeqCst), "date": 1_790_000_000,
                "chat": {"id": user, "type": "private", "first_name": "U"},
                "from": Self::user(user, lang), "text": text
            }),
        )
    }

    pub fn document(&self, user: i64, name: &str, content: &[u8], declared_size: usize) -> i64 {
        let id = format!("file{}", self.fake.next_update.load(Ordering::SeqCst));
        self.fake.files.lock().unwrap().insert(id.clone(), content.to_vec());
        self.push(
            "message",
            json!({
                "message_id": 1, "date": 1_790_000_000,
                "chat": {"id": user, "type": "private", "first_name": "U"},
                "from": Self::user(user, "en"),
                "document": {"file_id": id, "file_unique_id": id, "file_name": name, "file_size": declared_size}
            }),
        )
    }

    pub fn press(&self, user: i64, message_id: i64, data: &str) -> i64 {
        self.push(
            "callback_query",
            json!({
                "id": format!("cb{message_id}"), "from": Self::user(user, "en"), "chat_instance": "x", "data": data,
                "message": {"message_id": message_id, "date": 1_790_000_000,
                            "chat": {"id": user, "type": "private", "first_name": "U"},
                            "from": {"id": 1, "is_bot": true, "first_name": "Sputnik"}, "text": "answer"}
            }),
        )
    }

    pub fn calls(&self, method: &str) -> Vec<Value> {
        let method = method.to_ascii_lowercase();
        self.fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Value> {
        self.calls("sendMessage").into_iter().filter(|b| b["chat_id"].as_i64() == Some(chat)).collect()
    }

    /// Waits until `chat` has received `count` messages; returns them.
    pub fn wait_for(&self, chat: i64, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = self.sent_to(chat);
            if sent.len() >= count {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "chat {chat} got {} of {count} messages: {sent:#?}\nall calls: {:#?}",
                sent.len(),
                self.fake.calls.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The running bot; killed if a test fails before stopping it, so no process outlives a test.
/// Its log is read as it is written (a full pipe would stall the bot) and kept for the end.
pub struct Running(pub Option<Child>, pub Option<std::thread::JoinHandle<String>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn serve(data: &Path, server: &Server) -> Running {
    serve_with(sputnik(data), server, &[])
}

/// `sputnik serve` against the fake, with fast polling and sending; `overrides` are extra
/// environment settings.
pub fn serve_with(
    mut command: std::process::Command,
    server: &Server,
    overrides: &[(&str, &str)],
) -> Running {
    command
        .arg("serve")
        .env("SPUTNIK_TELEGRAM_TOKEN", TOKEN)
        .env("SPUTNIK_TELEGRAM_API_URL", format!("http://{}", server.address))
        .env("SPUTNIK_TELEGRAM__POLL_TIMEOUT_SECONDS", "1")
        .env("SPUTNIK_TELEGRAM__PER_CHAT_INTERVAL_MS", "20")
        .env("SPUTNIK_TELEGRAM__MESSAGES_PER_SECOND", "200")
        .env("SPUTNIK_CHAT__QUESTIONS_PER_MINUTE", "600")
        .env("SPUTNIK_CHAT__BURST", "100")
        // Tests run side by side: each service takes a free port unless a test picks one.
        .env("SPUTNIK_HTTP_LISTEN", "127.0.0.1:0");
    for (key, value) in overrides {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("SPUTNIK_TEST_BOT_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .spawn()
        .unwrap();
    let log = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut log = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut log);
            String::from_utf8_lossy(&log).into_owned()
        })
    });
    Running(Some(child), log)
}

pub fn terminate(mut running: Running) -> (Option<i32>, String) {
    let mut child = running.0.take().expect("a running bot");
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = running.1.take().map(|log| log.join().unwrap()).unwrap_or_default();
            assert!(!err.contains("TEST-TOKEN"), "the bot token reached the log:\n{err}");
            return (status.code(), err);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("sputnik serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A data directory under `tmp` with the sample handbook imported (the managers' guide for the
/// "managers" group). The import runs once per test process; each test gets its own copy.
pub fn knowledge_base(tmp: &Path) -> std::path::PathBuf {
    static TEMPLATE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        // Under target/tmp: a static is never dropped, so cargo's own scratch space holds it.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let data = dir.path().join("data");
        assert!(run(sputnik(&data).arg("import").arg(repo_path("assets/handbook"))).status.success());
        let managers = run(sputnik(&data)
            .args(["import", "--group", "managers"])
            .arg(repo_path("assets/handbook-managers")));
        assert!(managers.status.success());
        dir
    });
    let data = tmp.join("data");
    copy_dir(&template.path().join("data"), &data);
    data
}

/// Sends `/start <code>` from `chat` and waits for the welcome.
pub fn join(server: &Server, chat: i64, code: &str) {
    server.text(chat, "en", &format!("/start {code}"));
    let welcome = server.wait_for(chat, 1);
    assert!(welcome[0]["text"].as_str().unwrap().contains("Welcome"), "{welcome:#?}");
}

/// Stops the service with SIGTERM, checks it exited cleanly, and returns its log.
pub fn stop(bot: Running) -> String {
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    log
}

/// `data` under `tmp` with the sample handbook imported with the default model.
pub fn handbook_with_model(tmp: &Path) -> std::path::PathBuf {
    let data = tmp.join("data");
    assert!(run(sputnik_with_model(&data).arg("import").arg(repo_path("assets/handbook"))).status.success());
    data
}

/// [`knowledge_base`] and the sample engineering onboarding plan.
pub fn knowledge_base_with_plan(tmp: &Path) -> std::path::PathBuf {
    let data = knowledge_base(tmp);
    let plan = repo_path("assets/plans/engineering.en.toml");
    assert!(run(sputnik(&data).args(["plans", "import"]).arg(plan)).status.success());
    data
}

/// An employee invited straight in the store, and joined from `telegram` unless `None`; returns
/// the invite code. For tests that need hundreds of people quickly.
pub fn invite_in_store(
    app: &sputnik::App,
    name: &str,
    department: &str,
    telegram: Option<i64>,
    now: i64,
) -> String {
    let request = sputnik::people::InviteRequest {
        name: name.into(),
        department: department.into(),
        position: None,
        role: sputnik::store::Role::Employee,
        groups: vec![],
        start_date: None,
        lifetime_seconds: 86_400,
    };
    let created = sputnik::people::invite(app.store(), &request, "", now).unwrap();
    if let Some(user) = telegram {
        let hash = sputnik::store::invite_hash(&created.code);
        app.store().redeem_invite(&hash, user, now).unwrap().unwrap();
    }
    created.code
}

/// The sample handbook's question set as (question, language), through the eval loader.
pub fn handbook_questions() -> Vec<(String, String)> {
    sputnik::eval::load_questions(&repo_path("assets/handbook-questions.jsonl"))
        .unwrap()
        .into_iter()
        .map(|q| (q.query, q.lang.unwrap_or_else(|| "en".into())))
        .collect()
}

pub fn invite(data: &Path, name: &str, groups: &[&str]) -> String {
    let mut command = sputnik(data);
    command.args(["users", "invite", "--name", name, "--department", "Sales", "--json"]);
    for group in groups {
        command.args(["--group", group]);
    }
    json(&run(&mut command))["code"].as_str().unwrap().to_owned()
}

/// Invites an employee of `department` through the CLI, optionally with a start date; returns the code.
pub fn invite_to(data: &Path, name: &str, department: &str, start: Option<&str>) -> String {
    let mut command = sputnik(data);
    command.args(["users", "invite", "--name", name, "--department", department, "--json"]);
    if let Some(start) = start {
        command.args(["--start-date", start]);
    }
    json(&run(&mut command))["code"].as_str().unwrap().to_owned()
}

/// `sputnik serve` in-process with a simulated clock (the binary cannot be given one).
pub struct InProcess {
    pub runtime: tokio::runtime::Runtime,
    handle: Option<tokio::task::JoinHandle<Result<(), sputnik::Error>>>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl InProcess {
    pub fn start(data: &Path, server: &Server, now: Arc<AtomicI64>) -> InProcess {
        InProcess::start_with(data, server, now, |_| {})
    }

    /// [`InProcess::start`] with settings changed by `configure`.
    pub fn start_with(
        data: &Path,
        server: &Server,
        now: Arc<AtomicI64>,
        configure: impl FnOnce(&mut sputnik::Settings),
    ) -> InProcess {
        let mut settings = sputnik::Settings::lexical_only(data);
        settings.telegram.bot_token = sputnik::config::Secret::new(TOKEN);
        settings.telegram.api_url = format!("http://{}", server.address);
        settings.telegram.poll_timeout_seconds = 1;
        settings.telegram.per_chat_interval_ms = 20;
        settings.telegram.messages_per_second = 200;
        settings.http.listen = "127.0.0.1:0".into();
        configure(&mut settings);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let options = sputnik::service::ServeOptions {
            clock: Arc::new(move || now.load(Ordering::SeqCst)),
            schedule_every: Duration::from_millis(50),
        };
        let handle = runtime.spawn(sputnik::service::serve_with(settings, shutdown.clone(), options));
        InProcess { runtime, handle: Some(handle), shutdown }
    }

    pub fn stop(mut self) {
        self.shutdown.cancel();
        let handle = self.handle.take().unwrap();
        self.runtime.block_on(handle).unwrap().unwrap();
    }
}

pub fn texts_to(server: &Server, chat: i64) -> Vec<String> {
    server.sent_to(chat).iter().map(|m| m["text"].as_str().unwrap_or_default().to_owned()).collect()
}

pub fn at(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// A free port on 127.0.0.1 (bound and released; the service binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET; (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, None, b"")
}

/// A plain HTTP/1.1 request with an optional bearer token; (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(port, method, path, &headers, body)
}

/// A plain HTTP/1.1 request with extra headers; (status, body).
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("nothing listens on {port}: {e}"),
        }
    };
    let auth: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let kind = if body.first() == Some(&b'{') { "Content-Type: application/json\r\n" } else { "" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}{kind}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (413) before reading a big body; a reset while writing is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let response = String::from_utf8_lossy(&raw).into_owned();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of a metric line (`name{labels} value`) in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Finished answers (the message or edit that carries the feedback buttons) to `chat`, with when
/// each was sent and its text.
pub fn finished(server: &Server, chat: i64) -> Vec<(Instant, String)> {
    server
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            (c.method == "sendmessage" || c.method == "editmessagetext")
                && c.body["chat_id"].as_i64() == Some(chat)
                && c.body["reply_markup"]["inline_keyboard"][0].as_array().is_some_and(|r| r.len() == 2)
        })
        .map(|c| (c.at, c.body["text"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// When each finished answer to `chat` was sent.
pub fn finished_answers(server: &Server, chat: i64) -> Vec<Instant> {
    finished(server, chat).into_iter().map(|(at, _)| at).collect()
}

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the service on `port` says it is ready (HTTP comes up before Telegram is
/// reached); returns the last `/readyz` answer.
pub fn wait_ready(port: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(port, "/readyz");
        if status == 200 || Instant::now() > deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
