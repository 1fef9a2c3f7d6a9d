//! Generated answers from any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, a
//! hosted API), grounded in the passages retrieval found and citing them by number.
//!
//! What is sent (docs/llm.md says the same to admins): the system instructions below, the
//! numbered passages the employee may see (title › section, file, text), and the question; for
//! a follow-up, first the employee's few previous questions of the last minutes, to rewrite it
//! into a standalone search query. Never names, ids or anything else about the employee.
//!
//! Whatever comes back is checked: citation markers `[n]` must name a passage (others are
//! dropped), an answer citing nothing or saying it cannot answer is refused, and the text is
//! rendered to the subset of HTML Telegram accepts. Any failure (timeout, HTTP error, refusal)
//! leaves the extractive answer, which is always computed first.

pub mod render;

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::LlmSettings;
use crate::store::Language;

pub use render::to_telegram_html;

/// What the model is told to say when the passages do not answer the question.
pub const NO_ANSWER: &str = "NO_ANSWER";

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

/// One passage as the model sees it: `[number] citation (source)` and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passage {
    pub number: usize,
    pub citation: String,
    pub source: String,
    pub text: String,
}

/// Everything a generated answer is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub question: String,
    pub language: Language,
    pub passages: Vec<Passage>,
}

/// A generated answer to deliver: what to ask the model, and the extractive answer to send
/// instead if that fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub chat: i64,
    pub request: GenerationRequest,
    /// The extractive answer, split into messages.
    pub fallback: Vec<String>,
    /// Each passage's line in the sources list, by number.
    pub sources: Vec<(usize, String)>,
    /// "Sources:" in the employee's language.
    pub sources_heading: String,
    /// Under the last message (👍 / 👎).
    pub buttons: Vec<crate::chat::InlineButton>,
}

/// The finished answer as Telegram messages: the model's text with valid citations, rendered,
/// then the sources it cites. `Err` when the answer must not be used.
pub fn final_parts(generation: &Generation, text: &str) -> Result<Vec<String>, LlmError> {
    // Passages are numbered 1..=n, as the extractive answer numbered its sources.
    let passages = generation.request.passages.iter().map(|p| p.number).max().unwrap_or(0);
    let checked = check(text, passages)?;
    let mut html = to_telegram_html(&checked.text);
    html.push_str(&format!("\n\n<b>{}</b>\n", generation.sources_heading));
    let lines: Vec<&str> = generation
        .sources
        .iter()
        .filter(|(number, _)| checked.cited.contains(number))
        .map(|(_, line)| line.as_str())
        .collect();
    html.push_str(&lines.join("\n"));
    Ok(crate::answer::split_message(&html, crate::answer::TELEGRAM_MESSAGE_LIMIT))
}

/// What a message shows while the answer is still being written.
pub fn partial_html(text: &str) -> String {
    let mut html = to_telegram_html(text);
    html.push_str(" …");
    let limit = crate::answer::TELEGRAM_MESSAGE_LIMIT;
    if html.chars().count() > limit {
        // Shown in full at the end; meanwhile the beginning is enough.
        return crate::answer::split_message(&html, limit).into_iter().next().unwrap_or_default();
    }
    html
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

fn message(role: &str, content: String) -> ChatMessage {
    ChatMessage { role: role.to_owned(), content }
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::Ru => "Russian",
        Language::En => "English",
    }
}

/// The grounded prompt: instructions, numbered passages, the question.
pub fn answer_messages(request: &GenerationRequest) -> Vec<ChatMessage> {
    let language = language_name(request.language);
    let system = format!(
        "You are the company's assistant for employees. Answer the question using only the numbered \
         passages from the company's documents. After each statement put the number of the passage it \
         comes from in square brackets, like [1] or [2][3]; cite no other numbers. Answer in {language}, \
         even when the passages are in another language. Be brief: a few sentences or a short list. \
         If the passages do not answer the question, reply with exactly {NO_ANSWER} and nothing else."
    );
    let mut user = String::from("Passages:\n\n");
    for passage in &request.passages {
        user.push_str(&format!(
            "[{}] {} ({})\n{}\n\n",
            passage.number, passage.citation, passage.source, passage.text
        ));
    }
    user.push_str(&format!("Question: {}", request.question));
    vec![message("system", system), message("user", user)]
}

/// Marks the request that rewrites a follow-up; the answer is a search query, not an answer.
pub const REWRITE_INSTRUCTION: &str = "Rewrite the employee's last question as one standalone search query";

/// The prompt that turns a follow-up ("and for managers?") into a standalone search query.
pub fn rewrite_messages(previous: &[String], question: &str) -> Vec<ChatMessage> {
    let system = format!(
        "{REWRITE_INSTRUCTION} for the company's documents, using the earlier questions for context. \
         Keep its language. Reply with the query only, no quotes, no explanation."
    );
    let mut user = String::from("Earlier questions:\n");
    for earlier in previous {
        user.push_str(&format!("- {earlier}\n"));
    }
    user.push_str(&format!("\nLast question: {question}"));
    vec![message("system", system), message("user", user)]
}

/// A checked answer: the text with only valid citation markers, and the passages it cites.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub text: String,
    pub cited: Vec<usize>,
}

/// Drops citation markers that name no passage (1..=`passages`), and refuses an answer that
/// says it cannot answer or cites nothing.
pub fn check(text: &str, passages: usize) -> Result<Checked, LlmError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.trim_matches(|c: char| !c.is_alphanumeric() && c != '_') == NO_ANSWER {
        return Err(LlmError::Refused);
    }
    let (text, cited) = keep_valid_markers(trimmed, passages);
    if cited.is_empty() {
        return Err(LlmError::Uncited);
    }
    Ok(Checked { text, cited })
}

/// `text` with every `[n]` (and `[n, m]`) outside 1..=`passages` removed; the valid numbers in
/// order of first citation.
pub fn keep_valid_markers(text: &str, passages: usize) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut cited = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let inside = &after[..close];
        let numbers: Option<Vec<usize>> =
            inside.split(',').map(|n| n.trim().parse::<usize>().ok()).collect::<Option<Vec<_>>>();
        match numbers {
            Some(numbers) if !numbers.is_empty() => {
                let valid: Vec<usize> = numbers.into_iter().filter(|n| (1..=passages).contains(n)).collect();
                for n in &valid {
                    if !cited.contains(n) {
                        cited.push(*n);
                    }
                }
                if !valid.is_empty() {
                    out.push_str(&valid.iter().map(|n| format!("[{n}]")).collect::<String>());
                } else if out.ends_with(' ') {
                    // "text [9]." → "text."
                    out.pop();
                }
            }
            // Not a citation ("[sic]", a Markdown link): keep it.
            _ => {
                out.push('[');
                out.push_str(inside);
                out.push(']');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    (out, cited)
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

    /// Streams the grounded answer, calling `delta` with the text so far as it grows; returns
    /// the whole text. Servers that ignore `stream` and answer in one JSON body work too. The
    /// whole exchange must finish within `llm.timeout_seconds`.
    pub async fn stream(
        &self,
        request: &GenerationRequest,
        mut delta: impl FnMut(&str),
    ) -> Result<String, LlmError> {
        let timeout = Duration::from_secs(self.settings.timeout_seconds);
        let messages = answer_messages(request);
        let work = async {
            let mut response =
                self.request(&messages, self.settings.max_tokens, true).send().await.map_err(network)?;
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
    fn invalid_citation_markers_are_dropped() {
        let (text, cited) = keep_valid_markers("Ten days [2]. Also [7], see [1, 9] and [sic] [x].", 3);
        assert_eq!(text, "Ten days [2]. Also, see [1] and [sic] [x].");
        assert_eq!(cited, [2, 1]);
    }

    #[test]
    fn refusals_and_uncited_answers_are_refused() {
        assert!(matches!(check("NO_ANSWER", 3), Err(LlmError::Refused)));
        assert!(matches!(check(" **NO_ANSWER** ", 3), Err(LlmError::Refused)));
        assert!(matches!(check("", 3), Err(LlmError::Refused)));
        assert!(matches!(check("Ten days [5].", 3), Err(LlmError::Uncited)));
        assert_eq!(check("Ten days [3].", 3).unwrap().cited, [3]);
    }

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
