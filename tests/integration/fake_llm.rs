//! A fake OpenAI-compatible endpoint on 127.0.0.1, scripted per test: each request is recorded
//! and answered by the test's script — a whole reply, a stream, an HTTP error, or any of those
//! after a delay (a model that hangs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// One request the fake model received.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub authorization: String,
    pub body: Value,
    pub at: Instant,
}

impl ModelCall {
    pub fn system(&self) -> &str {
        self.body["messages"][0]["content"].as_str().unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.body["messages"][1]["content"].as_str().unwrap_or_default()
    }

    /// Whether this is the request that rewrites a follow-up into a standalone query.
    pub fn is_rewrite(&self) -> bool {
        self.system().contains(sputnik::answer::generate::REWRITE_INSTRUCTION)
    }

    /// The question of an answer request, lower-cased.
    pub fn question(&self) -> String {
        self.user().rsplit("Question: ").next().unwrap_or_default().to_lowercase()
    }
}

/// How the fake model answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// One JSON chat completion.
    Whole(String),
    /// Server-sent events, one chunk every `interval`.
    Stream(Vec<String>, Duration),
    /// An HTTP error.
    Status(u16, String),
    /// The reply, after a wait.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub fn whole(text: &str) -> Reply {
        Reply::Whole(text.to_owned())
    }

    pub fn after(wait: Duration, reply: Reply) -> Reply {
        Reply::After(wait, Box::new(reply))
    }
}

pub struct FakeModel {
    /// The base URL to put in `llm.url`.
    pub url: String,
    pub calls: Arc<Mutex<Vec<ModelCall>>>,
}

impl FakeModel {
    pub fn calls(&self) -> Vec<ModelCall> {
        self.calls.lock().unwrap().clone()
    }
}

/// Starts the fake model on `runtime`; `script` decides each reply.
pub fn fake_model(
    runtime: &tokio::runtime::Runtime,
    script: impl Fn(&ModelCall) -> Reply + Send + Sync + 'static,
) -> FakeModel {
    let calls: Arc<Mutex<Vec<ModelCall>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (recorded, script) = (calls.clone(), Arc::new(script));
    let handler = move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
        let (recorded, script) = (recorded.clone(), script.clone());
        async move {
            let authorization =
                headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let call = ModelCall { authorization, body, at: Instant::now() };
            recorded.lock().unwrap().push(call.clone());
            let mut reply = script(&call);
            while let Reply::After(wait, then) = reply {
                tokio::time::sleep(wait).await;
                reply = *then;
            }
            respond(reply)
        }
    };
    runtime.spawn(async move {
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(handler));
        axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
    });
    FakeModel { url: format!("http://{address}/v1"), calls }
}

fn respond(reply: Reply) -> axum::response::Response {
    match reply {
        Reply::Whole(text) => {
            Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}))
                .into_response()
        }
        Reply::Status(status, body) => {
            (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
        }
        Reply::Stream(chunks, interval) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, std::convert::Infallible>>();
            tokio::spawn(async move {
                for chunk in chunks {
                    let event = json!({"choices": [{"index": 0, "delta": {"content": chunk}}]});
                    let _ = tx.send(Ok(format!("data: {event}\n\n")));
                    tokio::time::sleep(interval).await;
                }
                let _ = tx.send(Ok("data: [DONE]\n\n".to_owned()));
            });
            (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            )
                .into_response()
        }
        Reply::After(..) => unreachable!("delays are waited out before responding"),
    }
}
