//! Composing an answer from search hits: extractive, with numbered citations.
//!
//! The answer is built from the most relevant sentences of the best passages (those sharing
//! the most question words, the opening sentence breaking ties), bounded in length, each marked
//! with the number of its source; the sources follow as "title › section — file". A question
//! whose best hit clears neither score floor (BM25 for the full-text leg, cosine similarity for
//! the semantic leg) is "not found": saying so honestly beats citing something unrelated.
//! Output is Telegram HTML with every piece of document text escaped.

pub mod generate;
pub mod render;
mod settings;

use serde::Serialize;
use unicode_segmentation::UnicodeSegmentation;

use crate::embed::ModelProfile;
use crate::i18n::{escape_html, message};
use crate::search::analysis;
use crate::search::{SearchHit, SearchOutcome};
use crate::store::{DocumentId, Language};
pub use settings::AnswerSettings;

/// Telegram's limit for one message, in UTF-16 code units; we count characters, which is never
/// more for the scripts we send, and keep a margin.
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerSource {
    pub number: usize,
    pub document: DocumentId,
    pub ordinal: u32,
    pub title: String,
    pub heading_path: Vec<String>,
    pub source: String,
    pub score: f32,
}

impl AnswerSource {
    /// "Title › Section", for citations.
    pub fn citation(&self) -> String {
        std::iter::once(self.title.as_str())
            .chain(self.heading_path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" › ")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub found: bool,
    /// The message to send (Telegram HTML).
    pub html: String,
    pub sources: Vec<AnswerSource>,
}

/// The floors a passage must clear to be answered from, with the similarity floors resolved
/// from the configuration or, unset there, from the embedding model's calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floors {
    pub min_bm25: f32,
    pub min_term_coverage: f32,
    pub min_similarity: f32,
    pub min_similarity_other_language: f32,
    pub min_margin: f32,
}

impl Floors {
    pub fn new(settings: &AnswerSettings, model: Option<&ModelProfile>) -> Floors {
        // Without a model no hit has a dense score; the value only matters for tests.
        let (same, other, margin) = model
            .map_or((0.45, 0.45, 0.0), |m| (m.min_similarity, m.min_similarity_other_language, m.min_margin));
        Floors {
            min_bm25: settings.min_bm25,
            min_term_coverage: settings.min_term_coverage,
            min_similarity: settings.min_similarity.unwrap_or(same),
            min_similarity_other_language: settings.min_similarity_other_language.unwrap_or(other),
            min_margin: settings.min_margin.unwrap_or(margin),
        }
    }
}

/// Whether a hit is relevant enough to answer a question in `question_language` from: found by
/// words, with most of the question's (rarity-weighted) words in it, or close enough in meaning.
pub fn passes_floor(hit: &SearchHit, question_language: Language, floors: &Floors) -> bool {
    let by_words = hit.lexical_score.is_some_and(|s| s >= floors.min_bm25)
        && hit.term_coverage >= floors.min_term_coverage;
    let similarity_floor = if hit.language == question_language {
        floors.min_similarity
    } else {
        floors.min_similarity_other_language
    };
    let by_meaning = hit.dense_score.is_some_and(|s| s >= similarity_floor)
        && hit.dense_margin.is_none_or(|m| m >= floors.min_margin);
    by_words || by_meaning
}

/// How many hits a question's search asks for, to compose its answer from.
pub fn search_k(settings: &AnswerSettings) -> usize {
    settings.max_sources.max(5)
}

/// How much less than the best passage's margin another passage may stand out and still be cited.
const CITE_MARGIN_GAP: f32 = 0.02;

/// Whether `hit` is nearly as good as `best`: from the same document, or standing out from its
/// language nearly as far (found by meaning), or matching as many of the question's words nearly
/// as strongly (found by words alone).
fn near_best(hit: &SearchHit, best: &SearchHit) -> bool {
    if hit.document_id == best.document_id {
        return true;
    }
    match (hit.dense_margin, best.dense_margin) {
        (Some(margin), Some(best_margin)) => margin >= best_margin - CITE_MARGIN_GAP,
        _ => {
            hit.lexical_score
                .zip(best.lexical_score)
                .is_some_and(|(score, best_score)| score >= 0.8 * best_score)
                && hit.term_coverage >= best.term_coverage
        }
    }
}

/// Builds the answer to `outcome` in `language`.
pub fn compose(
    outcome: &SearchOutcome,
    language: Language,
    settings: &AnswerSettings,
    floors: &Floors,
) -> Answer {
    let passing: Vec<&SearchHit> =
        outcome.hits.iter().filter(|h| passes_floor(h, outcome.language, floors)).collect();
    // Beyond the best passage, only those that stand near it: more sources that merely passed
    // the floor were mostly unrelated ones.
    let hits: Vec<&SearchHit> = passing
        .iter()
        .enumerate()
        .filter(|(i, h)| *i == 0 || near_best(h, passing[0]))
        .map(|(_, h)| *h)
        .take(settings.max_sources)
        .collect();
    if hits.is_empty() {
        let mut html = message(language, "not_found", &[]);
        if !settings.hr_contact.is_empty() {
            html.push_str("\n\n");
            html.push_str(&message(language, "not_found_contact", &[("contact", &settings.hr_contact)]));
        }
        return Answer { found: false, html, sources: Vec::new() };
    }
    let mut analyzer = analysis::stemmed_analyzer();
    let query_terms = analysis::terms(&mut analyzer, &outcome.query);
    let mut sources: Vec<AnswerSource> = Vec::new();
    let mut excerpts: Vec<(usize, String)> = Vec::new();
    let mut budget = settings.max_chars;
    for (i, hit) in hits.iter().enumerate() {
        // The best passage may use more of the budget; later ones add a sentence each.
        let wanted = if i == 0 { 2 } else { 1 };
        let excerpt = best_sentences(&mut analyzer, &query_terms, &hit.text, wanted, budget);
        if excerpt.is_empty() {
            continue;
        }
        budget = budget.saturating_sub(excerpt.chars().count());
        let number =
            match sources.iter().position(|s| s.document == hit.document_id && s.ordinal == hit.chunk) {
                Some(p) => p + 1,
                None => {
                    sources.push(AnswerSource {
                        number: sources.len() + 1,
                        document: hit.document_id,
                        ordinal: hit.chunk,
                        title: hit.title.clone(),
                        heading_path: hit.heading_path.clone(),
                        source: hit.source.clone(),
                        score: hit.score,
                    });
                    sources.len()
                }
            };
        excerpts.push((number, excerpt));
        if budget < 80 {
            break;
        }
    }
    let mut html = String::new();
    // Quoted from documents in the other language only: say so in the employee's language.
    let cited: Vec<&&SearchHit> = hits
        .iter()
        .filter(|h| sources.iter().any(|s| s.document == h.document_id && s.ordinal == h.chunk))
        .collect();
    if !cited.is_empty() && cited.iter().all(|h| h.language != language) {
        html.push_str(&format!("<i>{}</i>\n", escape_html(&message(language, "answer_other_language", &[]))));
    }
    for (number, excerpt) in &excerpts {
        html.push_str(&escape_html(excerpt));
        html.push_str(&format!(" [{number}]\n\n"));
    }
    html.push_str(&format!("<b>{}</b>\n", escape_html(&message(language, "answer_sources", &[]))));
    html.push_str(&sources_list(&sources));
    Answer { found: true, html, sources }
}

/// "1. <b>Title</b> › Section — <code>path</code>" lines.
pub fn sources_list(sources: &[AnswerSource]) -> String {
    sources.iter().map(source_line).collect::<Vec<_>>().join("\n")
}

/// One line of [`sources_list`].
pub fn source_line(s: &AnswerSource) -> String {
    let mut line = format!("{}. <b>{}</b>", s.number, escape_html(&s.title));
    for heading in &s.heading_path {
        line.push_str(" › ");
        line.push_str(&escape_html(heading));
    }
    line.push_str(&format!(" — <code>{}</code>", escape_html(&s.source)));
    line
}

/// Up to `wanted` sentences of `text` that share the most terms with the question, kept in
/// their original order and within `budget` characters.
fn best_sentences(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    query_terms: &[String],
    text: &str,
    wanted: usize,
    budget: usize,
) -> String {
    let sentences = sentences(text);
    let mut scored: Vec<(usize, usize, f32)> = sentences
        .iter()
        .enumerate()
        .map(|(i, sentence)| {
            let terms = analysis::terms(analyzer, sentence);
            let shared = query_terms.iter().filter(|t| terms.contains(t)).count();
            // Earlier sentences usually state the rule; later ones the exceptions.
            (i, shared, shared as f32 - i as f32 * 0.01)
        })
        .collect();
    scored.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut chosen: Vec<usize> = Vec::new();
    let mut used = 0;
    for (i, shared, _) in scored {
        // Beyond the best sentence, only sentences that share a word with the question.
        if !chosen.is_empty() && shared == 0 {
            break;
        }
        let length = sentences[i].chars().count() + 1;
        if chosen.len() == wanted || (used + length > budget && !chosen.is_empty()) {
            break;
        }
        if length > budget {
            // One very long sentence: cut at a word boundary.
            let cut: String = sentences[i].chars().take(budget.saturating_sub(1)).collect();
            let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head).to_owned();
            return format!("{cut}…");
        }
        chosen.push(i);
        used += length;
    }
    chosen.sort_unstable();
    chosen.iter().map(|&i| sentences[i].replace('\n', " ")).collect::<Vec<_>>().join(" ")
}

/// Words that end with a period without ending the sentence: Russian and English abbreviations
/// common in company documents (addresses, amounts, references), lowercase, without the period.
const ABBREVIATIONS: &[&str] = &[
    "ул",
    "д",
    "г",
    "гг",
    "корп",
    "кв",
    "пр",
    "просп",
    "пер",
    "наб",
    "обл",
    "р",
    "руб",
    "коп",
    "тыс",
    "млн",
    "млрд",
    "т",
    "е",
    "др",
    "см",
    "ст",
    "стр",
    "рис",
    "табл",
    "им",
    "англ",
    "напр",
    "тел",
    "доб",
    "каб",
    "эт",
    "мин",
    "сек",
    "ч",
    "e.g",
    "i.e",
    "etc",
    "vs",
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "no",
    "nos",
    "p",
    "pp",
    "fig",
    "st",
    "ave",
    "approx",
    "dept",
    "ext",
    "tel",
    "inc",
    "ltd",
    "co",
];

/// A passage's sentences, trimmed. Unicode's sentence rules break after every ". " before a
/// capital; a break after an abbreviation ("ул. Ленина", "e.g. Slack") or an initial ("А. С.
/// Пушкин") is undone, as is one before a lowercase word.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (at, piece) in text.split_sentence_bound_indices() {
        let end = at + piece.len();
        let continues = out.last().is_some_and(|&(start, prev_end)| {
            let previous = text[start..prev_end].trim_end();
            let paragraph_break = text[start..prev_end].ends_with('\n');
            let next_lower = piece.trim_start().chars().next().is_some_and(char::is_lowercase);
            !paragraph_break && (ends_with_abbreviation(previous) || (next_lower && previous.ends_with('.')))
        });
        match out.last_mut() {
            Some(last) if continues => last.1 = end,
            _ => out.push((at, end)),
        }
    }
    out.into_iter()
        .map(|(start, end)| text[start..end].trim())
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect()
}

fn ends_with_abbreviation(sentence: &str) -> bool {
    let Some(body) = sentence.strip_suffix('.') else { return false };
    let word =
        body.rsplit(|c: char| c.is_whitespace() || c == '(' || c == '«' || c == '"').next().unwrap_or("");
    let lower = word.to_lowercase();
    // A single capital letter is an initial ("А. С. Пушкин"); a single lowercase one or a known
    // short form is an abbreviation.
    let single = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
    single || ABBREVIATIONS.contains(&lower.as_str()) || lower.ends_with(".е") || lower.ends_with(".д")
}

/// Splits an HTML message into parts under Telegram's limit, at paragraph breaks, then line
/// breaks, so no tag is cut (our messages never open a tag on one line and close it on another);
/// a single longer line is cut at a character boundary with its tags stripped.
pub fn split_message(html: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    for line in html.split('\n') {
        let line_len = line.chars().count();
        if line_len > limit {
            if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
            let plain = strip_tags(line);
            let chars: Vec<char> = plain.chars().collect();
            for piece in chars.chunks(limit) {
                parts.push(escape_html(&piece.iter().collect::<String>()));
            }
            continue;
        }
        if current.chars().count() + line_len + 1 > limit && !current.is_empty() {
            parts.push(std::mem::take(&mut current).trim_end().to_owned());
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim_end().to_owned());
    }
    parts
}

/// The text of an HTML fragment with tags removed and entities decoded.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::SearchMode;

    fn hit(text: &str, lexical: Option<f32>, dense: Option<f32>, id: u64) -> SearchHit {
        SearchHit {
            rank: 1,
            score: 1.0,
            lexical_rank: lexical.map(|_| 1),
            dense_rank: dense.map(|_| 1),
            lexical_score: lexical,
            dense_score: dense,
            dense_margin: None,
            term_coverage: if lexical.is_some_and(|s| s > 5.0) { 1.0 } else { 0.2 },
            document_id: DocumentId(id),
            title: "IT <equipment>".into(),
            heading_path: vec!["Laptops".into()],
            source: "en/it.md".into(),
            language: Language::En,
            chunk: 0,
            snippet: None,
            text: text.into(),
        }
    }

    fn outcome(query: &str, hits: Vec<SearchHit>) -> SearchOutcome {
        SearchOutcome {
            query: query.into(),
            language: Language::En,
            mode: SearchMode::Hybrid,
            dense_skipped: None,
            hits,
        }
    }

    #[test]
    fn picks_the_sentences_that_answer_and_cites_them() {
        let text = "Office employees get a monitor. Every employee receives a work laptop on the first day. \
                    Broken laptops are replaced within a day.";
        let settings = AnswerSettings::default();
        let answer = compose(
            &outcome("when do I receive my laptop", vec![hit(text, Some(9.0), None, 1)]),
            Language::En,
            &settings,
            &Floors::new(&settings, None),
        );
        assert!(answer.found);
        assert!(answer.html.starts_with("Every employee receives a work laptop"), "{}", answer.html);
        assert!(answer.html.contains("[1]"));
        assert!(
            answer.html.contains("1. <b>IT &lt;equipment&gt;</b> › Laptops — <code>en/it.md</code>"),
            "{}",
            answer.html
        );
    }

    #[test]
    fn the_similarity_floor_depends_on_the_model_and_on_the_passages_language() {
        let e5 = ModelProfile::named("multilingual-e5-small").unwrap();
        let settings = AnswerSettings::default();
        let floors = Floors::new(&settings, Some(e5));
        assert_eq!((floors.min_similarity, floors.min_similarity_other_language), (0.82, 0.785));
        let english = hit("Laptops are issued on the first day.", None, Some(0.80), 1);
        let russian = SearchHit { language: Language::Ru, ..english.clone() };
        // 0.80 is below the same-language floor but above the cross-language one.
        assert!(!passes_floor(&english, Language::En, &floors));
        assert!(passes_floor(&russian, Language::En, &floors));
        assert!(!compose(&outcome("laptop", vec![english]), Language::En, &settings, &floors).found);
        let answer = compose(&outcome("laptop", vec![russian]), Language::En, &settings, &floors);
        assert!(answer.found && answer.html.contains("Found in the Russian documents"), "{}", answer.html);
        let close = hit("Laptops are issued on the first day.", None, Some(0.90), 1);
        let answer = compose(&outcome("laptop", vec![close]), Language::En, &settings, &floors);
        assert!(answer.found && !answer.html.contains("Russian"), "{}", answer.html);
        // The configuration overrides the model's calibration.
        let strict = AnswerSettings { min_similarity_other_language: Some(0.9), ..AnswerSettings::default() };
        assert_eq!(Floors::new(&strict, Some(e5)).min_similarity_other_language, 0.9);
    }

    #[test]
    fn a_passage_must_stand_out_from_its_language_and_only_near_ones_are_cited() {
        let e5 = ModelProfile::named("multilingual-e5-small").unwrap();
        let settings = AnswerSettings::default();
        let floors = Floors::new(&settings, Some(e5));
        assert_eq!(floors.min_margin, 0.04);
        let with_margin = |text: &str, cosine: f32, margin: f32, id: u64| SearchHit {
            dense_margin: Some(margin),
            ..hit(text, None, Some(cosine), id)
        };
        // A high cosine that stands out little from everything else in the language: declined.
        let flat = with_margin("Parking is in the courtyard.", 0.86, 0.03, 1);
        assert!(!passes_floor(&flat, Language::En, &floors));
        assert!(!compose(&outcome("wifi password", vec![flat]), Language::En, &settings, &floors).found);
        // The best passage and one nearly as good are cited; one far below it is not.
        let best = with_margin("Laptops are issued on the first day.", 0.88, 0.16, 1);
        let near = with_margin("Laptop bags come with the laptop.", 0.87, 0.15, 2);
        let far = with_margin("The office has a laptop-free lounge.", 0.86, 0.125, 3);
        let answer = compose(&outcome("laptop", vec![best, near, far]), Language::En, &settings, &floors);
        let cited: Vec<u64> = answer.sources.iter().map(|s| s.document.0).collect();
        assert_eq!(cited, [1, 2], "{}", answer.html);
    }

    #[test]
    fn abbreviations_and_initials_do_not_end_a_sentence() {
        let text = "Офис находится по адресу: Санкт-Петербург, ул. Ленина, д. 5. Пропуск выдаёт А. С. Петров.\n\nSee e.g. Slack for news. Next one.";
        assert_eq!(
            sentences(text),
            [
                "Офис находится по адресу: Санкт-Петербург, ул. Ленина, д. 5.",
                "Пропуск выдаёт А. С. Петров.",
                "See e.g. Slack for news.",
                "Next one."
            ]
        );
    }

    #[test]
    fn below_the_floor_is_not_found_with_the_hr_contact() {
        let settings = AnswerSettings { hr_contact: "hr@example.com".into(), ..AnswerSettings::default() };
        let weak = hit("Unrelated text.", Some(0.5), Some(0.1), 1);
        let answer = compose(
            &outcome("what is the meaning of life", vec![weak]),
            Language::Ru,
            &settings,
            &Floors::new(&settings, None),
        );
        assert!(!answer.found);
        assert!(
            answer.html.contains("hr@example.com") && answer.html.starts_with("К сожалению"),
            "{}",
            answer.html
        );
    }

    #[test]
    fn long_messages_split_under_the_limit_without_cutting_tags() {
        let line = "<b>Title</b> — text text text";
        let html = vec![line; 400].join("\n");
        let parts = split_message(&html, 4000);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(part.chars().count() <= 4000);
            assert_eq!(part.matches("<b>").count(), part.matches("</b>").count());
        }
        assert_eq!(parts.join("\n"), html);
        let huge = format!("<i>{}</i>", "ж".repeat(9000));
        let parts = split_message(&huge, 4000);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| !p.contains('<') && p.chars().count() <= 4000));
    }
}
