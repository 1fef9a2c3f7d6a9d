//! The client of any OpenAI-compatible chat completions endpoint (vLLM, llama.cpp server,
//! Ollama, a hosted API): whole completions and streamed ones, each within a deadline, and the
//! rule that keeps the endpoint on the local network. What is asked and how the answer is
//! checked belongs to `answer::generate`.

mod settings;

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use settings::LlmSettings;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("llm.url {url:?} is not on the local network (llm.local_only = true): {reason}")]
    NotLocal { url: String, reason: String },
    #[error("llm.url {0:?} is not a valid http(s) URL")]
    BadUrl(String),
    #[error("the model did not answer within {0} s (llm.timeout_seconds)")]
    Timeout(u64),
    #[error("the endpoint answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach the endpoint: {0}")]
    Network(String),
    #[error("the endpoint's answer is not a chat completion: {0}")]
    BadResponse(String),
    #[error("the model said the passages do not answer the question")]
    Refused,
    #[error("the answer cites none of the passages")]
    Uncited,
}

impl LlmError {
    /// The `outcome` label of `sputnik_llm_answers_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "timeout",
            LlmError::Status { .. } | LlmError::Network(_) | LlmError::BadResponse(_) => "error",
            LlmError::Refused => "refused",
            LlmError::Uncited => "uncited",
            LlmError::NotLocal { .. } | LlmError::BadUrl(_) => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: String) -> ChatMessage {
        ChatMessage { role: role.to_owned(), content }
    }
}

/// Refuses endpoints outside the local network when `llm.local_only` is set: the host must be a
/// loopback, private (RFC 1918, unique-local) or link-local address, or a name resolving only
/// to such addresses.
pub fn check_endpoint(settings: &LlmSettings) -> Result<(), LlmError> {
    let url: url::Url = settings.url.trim().parse().map_err(|_| LlmError::BadUrl(settings.url.clone()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LlmError::BadUrl(settings.url.clone()));
    }
    if !settings.local_only {
        return Ok(());
    }
    let host = url.host_str().ok_or_else(|| LlmError::BadUrl(settings.url.clone()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let not_local = |reason: String| LlmError::NotLocal { url: settings.url.clone(), reason };
    let addresses: Vec<IpAddr> = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| not_local(format!("cannot resolve {host}: {e}")))?
        .map(|a| a.ip())
        .collect();
    match addresses.iter().find(|ip| !is_local(ip)) {
        Some(ip) if host.trim_matches(['[', ']']) == ip.to_string() => {
            Err(not_local(format!("{ip} is a public address")))
        }
        Some(ip) => Err(not_local(format!("{host} resolves to {ip}, a public address"))),
        None if addresses.is_empty() => Err(not_local(format!("{host} resolves to nothing"))),
        None => Ok(()),
    }
}

fn is_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || v6.to_ipv4_mapped().is_some_and(|v4| is_local(&IpAddr::V4(v4)))
        }
    }
}

/// An OpenAI-compatible chat completions client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    settings: LlmSettings,
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    max_tokens: u32,
    temperature: f32,
    stream: bool,
}

impl Client {
    /// A client for `settings`, or `None` when `llm.url` is empty (generation off).
    pub fn new(settings: &LlmSettings) -> Result<Option<Client>, LlmError> {
        if settings.url.trim().is_empty() {
            return Ok(None);
        }
        check_endpoint(settings)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(settings.timeout_seconds.min(10)))
            .build()
            .map_err(|e| LlmError::Network(e.to_string()))?;
        Ok(Some(Client { http, settings: settings.clone() }))
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    fn request(&self, messages: &[ChatMessage], max_tokens: u32, stream: bool) -> reqwest::RequestBuilder {
        let url = format!("{}/chat/completions", self.settings.url.trim().trim_end_matches('/'));
        let body = CompletionRequest {
            model: &self.settings.model,
            messages,
            max_tokens,
            temperature: self.settings.temperature,
            stream,
        };
        let mut request = self.http.post(url).json(&body);
        if !self.settings.api_key.is_empty() {
            request = request.bearer_auth(self.settings.api_key.expose());
        }
        request
    }

    /// One whole completion (the follow-up rewrite), within `timeout`.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<String, LlmError> {
        let work = async {
            let response = self.request(messages, max_tokens, false).send().await.map_err(network)?;
            let status = response.status();
            let body = response.text().await.map_err(network)?;
            if !status.is_success() {
                return Err(LlmError::Status { status: status.as_u16(), body: shorten(&body) });
            }
            let value: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| LlmError::BadResponse(e.to_string()))?;
            value["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| LlmError::BadResponse("no choices[0].message.content".into()))
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| LlmError::Timeout(timeout.as_secs()))?
    }

    /// Streams a completion, calling `delta` with the text so far as it grows; returns the
    /// whole text. Servers that ignore `stream` and answer in one JSON body work too. The whole
    /// exchange must finish within `timeout`.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        timeout: Duration,
        mut delta: impl FnMut(&str),
    ) -> Result<String, LlmError> {
        let work = async {
            let mut response =
                self.request(messages, self.settings.max_tokens, true).send().await.map_err(network)?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(LlmError::Status { status: status.as_u16(), body: shorten(&body) });
            }
            let streamed = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if !streamed {
                let body = response.text().await.map_err(network)?;
                let value: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| LlmError::BadResponse(e.to_string()))?;
                let text = value["choices"][0]["message"]["content"]
                    .as_str()
                    .ok_or_else(|| LlmError::BadResponse("no choices[0].message.content".into()))?
                    .to_owned();
                delta(&text);
                return Ok(text);
            }
            let mut text = String::new();
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(network)? {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&pending[..end]).trim().to_owned();
                    pending.drain(..=end);
                    let Some(data) = line.strip_prefix("data:") else { continue };
                    let data = data.trim();
                    if data == "[DONE]" {
                        return Ok(text);
                    }
                    let event: serde_json::Value =
                        serde_json::from_str(data).map_err(|e| LlmError::BadResponse(e.to_string()))?;
                    if let Some(piece) = event["choices"][0]["delta"]["content"].as_str()
                        && !piece.is_empty()
                    {
                        text.push_str(piece);
                        delta(&text);
                    }
                }
            }
            Ok(text)
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| LlmError::Timeout(timeout.as_secs()))?
    }
}

fn network(e: reqwest::Error) -> LlmError {
    if e.is_timeout() { LlmError::Timeout(0) } else { LlmError::Network(e.to_string()) }
}

fn shorten(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

/// Runs `work` to completion from synchronous code: on a runtime's blocking thread (the bot's
/// engine) through that runtime, elsewhere (the terminal chat, tests) on a small runtime of its own.
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread => {
            tokio::task::block_in_place(|| handle.block_on(work))
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one request")
            .block_on(work),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_endpoints_pass_when_asked() {
        let mut settings = LlmSettings { url: "http://127.0.0.1:8000/v1".into(), ..LlmSettings::default() };
        assert!(check_endpoint(&settings).is_ok());
        for local in [
            "http://10.1.2.3/v1",
            "http://192.168.0.5:11434/v1",
            "http://[::1]:8080/v1",
            "http://localhost:1/v1",
        ] {
            settings.url = local.into();
            assert!(check_endpoint(&settings).is_ok(), "{local}");
        }
        settings.url = "https://8.8.8.8/v1".into();
        assert!(matches!(check_endpoint(&settings), Err(LlmError::NotLocal { .. })));
        settings.local_only = false;
        assert!(check_endpoint(&settings).is_ok());
        settings.url = "ftp://10.0.0.1/".into();
        assert!(matches!(check_endpoint(&settings), Err(LlmError::BadUrl(_))));
    }
}
