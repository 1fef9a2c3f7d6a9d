//! Answers written by a language model, grounded in the passages retrieval found and citing
//! them by number; [`crate::llm`] is only the client that carries the prompts.
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

use super::render::to_telegram_html;
use crate::llm::{ChatMessage, LlmError};
use crate::reply::{Generation, GenerationRequest};
use crate::store::Language;

/// What the model is told to say when the passages do not answer the question.
pub const NO_ANSWER: &str = "NO_ANSWER";

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
    Ok(super::split_message(&html, super::TELEGRAM_MESSAGE_LIMIT))
}

/// What a message shows while the answer is still being written.
pub fn partial_html(text: &str) -> String {
    let mut html = to_telegram_html(text);
    html.push_str(" …");
    let limit = super::TELEGRAM_MESSAGE_LIMIT;
    if html.chars().count() > limit {
        // Shown in full at the end; meanwhile the beginning is enough.
        return super::split_message(&html, limit).into_iter().next().unwrap_or_default();
    }
    html
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
    vec![ChatMessage::new("system", system), ChatMessage::new("user", user)]
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
    vec![ChatMessage::new("system", system), ChatMessage::new("user", user)]
}

/// Longest rewrite accepted, in words: a search query, not an answer.
const MAX_REWRITE_WORDS: usize = 30;

/// The model's rewrite of a follow-up, when it is usable as a search query: one short line, no
/// answer (no citation, no refusal), about the same subject — it keeps a word of the question
/// itself (stemmed, stop words aside) or, for a question without any ("and why?"), of the
/// earlier ones. A rewrite is context added to the question, never a question swapped for
/// another. `None`: search the question as asked.
pub fn checked_rewrite(rewrite: &str, question: &str, previous: &[String]) -> Option<String> {
    let query = rewrite.trim().trim_matches(|c| c == '"' || c == '\'' || c == '«' || c == '»').trim();
    if query.is_empty()
        || query.contains(NO_ANSWER)
        || query.lines().count() > 1
        || query.split_whitespace().count() > MAX_REWRITE_WORDS
        || !keep_valid_markers(query, usize::MAX).1.is_empty()
    {
        return None;
    }
    let mut analyzer = crate::search::analysis::stemmed_analyzer();
    let mut terms = |text: &str| crate::search::analysis::terms(&mut analyzer, text);
    let rewritten = terms(query);
    let own = terms(question);
    let subject = if own.is_empty() { previous.iter().flat_map(|p| terms(p)).collect() } else { own };
    rewritten.iter().any(|t| subject.contains(t)).then(|| query.to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_is_kept_only_when_it_asks_about_the_same_subject() {
        let previous = ["What are the core hours?".to_owned()];
        let check = |rewrite: &str, question: &str| checked_rewrite(rewrite, question, &previous);
        assert_eq!(
            check("\"Paternity leave days for managers\"", "and for managers?").as_deref(),
            Some("Paternity leave days for managers")
        );
        // Answers, refusals and another subject are dropped.
        assert_eq!(
            check("Core hours are 11:00 to 16:00 [1].", "What should I do if my laptop is stolen?"),
            None
        );
        assert_eq!(check("What are the core hours?", "What should I do if my laptop is stolen?"), None);
        assert_eq!(check("NO_ANSWER", "and for managers?"), None);
        assert_eq!(check("Managers\nget ten days", "and for managers?"), None);
        assert_eq!(check(&"managers ".repeat(31), "and for managers?"), None);
        // A question with no words of its own borrows the subject of the earlier ones.
        assert_eq!(
            check("Why are core hours needed?", "and why?").as_deref(),
            Some("Why are core hours needed?")
        );
        assert_eq!(check("Why is the sky blue?", "and why?"), None);
    }

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
}
