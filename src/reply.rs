//! Replies: what the engine, the scheduler and the admin tools hand the messenger adapter to
//! carry out, in order — messages, edits, buttons, and answers still to be written by the
//! language model. Plain data, kept in the store's outbox until delivered; every part that
//! speaks to employees produces these and only `bot` turns them into Bot API calls.

use serde::{Deserialize, Serialize};

use crate::store::{ChatId, Language};

/// An inline button under a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineButton {
    pub label: String,
    pub data: String,
}

/// Something to do in the messenger, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Show "typing…" while an answer is being prepared.
    Typing {
        chat: ChatId,
    },
    Send {
        chat: ChatId,
        html: String,
        buttons: Vec<InlineButton>,
    },
    /// One recipient's copy of a broadcast; its delivery is recorded.
    Broadcast {
        broadcast: u64,
        chat: ChatId,
        html: String,
    },
    /// Replace a message's text and buttons (a checklist after a tick).
    Edit {
        chat: ChatId,
        message_id: i32,
        html: String,
        buttons: Vec<InlineButton>,
    },
    /// Replace the buttons under a message (none: remove them).
    EditButtons {
        chat: ChatId,
        message_id: i32,
        buttons: Vec<InlineButton>,
    },
    AnswerButton {
        callback_id: String,
        text: Option<String>,
    },
    /// Write the answer with the language model and stream it into the chat; the extractive
    /// answer inside goes out instead if generation fails.
    Generate(Box<Generation>),
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
    pub chat: ChatId,
    pub request: GenerationRequest,
    /// The extractive answer, split into messages.
    pub fallback: Vec<String>,
    /// Each passage's line in the sources list, by number.
    pub sources: Vec<(usize, String)>,
    /// "Sources:" in the employee's language.
    pub sources_heading: String,
    /// Under the last message (👍 / 👎).
    pub buttons: Vec<InlineButton>,
    /// Unix milliseconds by which the whole answer must be out (`llm.timeout_seconds` from when
    /// the question arrived, the follow-up's rewrite included); past it, the extractive answer
    /// goes out. `None` (older records): the full timeout from when generation starts.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
}

impl Generation {
    /// How long generation may still take: what is left until the deadline, or `full`.
    pub fn time_left(&self, full: std::time::Duration) -> std::time::Duration {
        match self.deadline_ms {
            Some(deadline) => {
                let left = deadline - jiff::Timestamp::now().as_millisecond();
                std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0)).min(full)
            }
            None => full,
        }
    }
}
