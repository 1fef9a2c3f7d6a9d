//! Text analysis shared by indexing and querying, so both sides always agree:
//! - `sputnik_stem`: words lowercased, ё folded to е, Russian and English stop words dropped,
//!   then Russian and English Snowball stemming (each stemmer leaves the other script alone);
//! - `sputnik_exact`: codes and names kept whole (`SEC-101`, `v2.3`, `ИТ-отдел`), lowercased and
//!   folded but not stemmed, so exact identifiers rank even when stemming would blur them.

use std::mem;
use std::sync::LazyLock;

use regex::Regex;

use tantivy::Index;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenFilter, TokenStream, Tokenizer,
};

pub const STEMMED: &str = "sputnik_stem";
pub const EXACT: &str = "sputnik_exact";

/// Lucene's English list plus the pronouns and question words employees' questions are full
/// of ("how do I ..."), which carry no topic. (Tantivy's Russian list already has them.)
const ENGLISH_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
    "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to",
    "was", "will", "with", "i", "me", "my", "we", "our", "us", "you", "your", "he", "she", "his", "her",
    "its", "them", "how", "what", "when", "where", "which", "who", "whom", "why", "do", "does", "did", "can",
    "could", "should", "would", "am", "been", "being", "have", "has", "had", "so", "than", "too", "very",
    "just", "about", "any", "some", "from", "up", "out", "there's", "i'm",
];

/// Words and number-letter codes joined by `-`, `_`, `.` or `/`.
const CODE_PATTERN: &str = r"[\p{L}\p{N}]+(?:[-_./][\p{L}\p{N}]+)*";

/// One compiled pattern for the whole process: a `Regex` keeps its matching caches with it, and
/// tantivy hands out a fresh copy of an analyzer for every query, so a tokenizer owning its own
/// `Regex` rebuilt those caches on every question.
static CODES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(CODE_PATTERN).expect("the code pattern is valid"));

pub fn register(index: &Index) {
    let manager = index.tokenizers();
    manager.register(STEMMED, stemmed_analyzer());
    manager.register(EXACT, exact_analyzer());
}

pub fn stemmed_analyzer() -> TextAnalyzer {
    let mut builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(YoFolding)
        .dynamic();
    if let Some(stop_words) = StopWordFilter::new(Language::Russian) {
        builder = builder.filter_dynamic(stop_words);
    }
    builder
        .filter_dynamic(StopWordFilter::remove(ENGLISH_STOP_WORDS.iter().map(|w| w.to_string())))
        .filter_dynamic(Stemmer::new(Language::Russian))
        .filter_dynamic(Stemmer::new(Language::English))
        .build()
}

pub fn exact_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(CodeTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(YoFolding)
        .build()
}

/// The terms `analyzer` makes of `text`, in order, without duplicates.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let term = &stream.token().text;
        if !out.iter().any(|t| t == term) {
            out.push(term.clone());
        }
    }
    out
}

/// Codes and names (`SEC-101`, `v2.3`) as whole tokens, matched by the process-wide `CODES`.
#[derive(Clone, Debug, Default)]
pub struct CodeTokenizer {
    token: Token,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream<'a> {
        self.token.reset();
        CodeTokenStream { matches: CODES.find_iter(text), token: &mut self.token }
    }
}

#[derive(Debug)]
pub struct CodeTokenStream<'a> {
    matches: regex::Matches<'static, 'a>,
    token: &'a mut Token,
}

impl TokenStream for CodeTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(found) = self.matches.next() else { return false };
        self.token.text.clear();
        self.token.text.push_str(found.as_str());
        self.token.offset_from = found.start();
        self.token.offset_to = found.end();
        self.token.position = self.token.position.wrapping_add(1);
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// Folds ё to е (Russian text uses them interchangeably); runs after lowercasing.
#[derive(Clone, Copy, Debug)]
pub struct YoFolding;

impl TokenFilter for YoFolding {
    type Tokenizer<T: Tokenizer> = YoFoldingFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> YoFoldingFilter<T> {
        YoFoldingFilter { inner: tokenizer, buffer: String::new() }
    }
}

#[derive(Clone, Debug)]
pub struct YoFoldingFilter<T> {
    inner: T,
    buffer: String,
}

impl<T: Tokenizer> Tokenizer for YoFoldingFilter<T> {
    type TokenStream<'a> = YoFoldingStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        YoFoldingStream { tail: self.inner.token_stream(text), buffer: &mut self.buffer }
    }
}

#[derive(Debug)]
pub struct YoFoldingStream<'a, T> {
    tail: T,
    buffer: &'a mut String,
}

impl<T: TokenStream> TokenStream for YoFoldingStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if token.text.contains(['ё', 'Ё']) {
            self.buffer.clear();
            self.buffer.extend(token.text.chars().map(|c| match c {
                'ё' => 'е',
                'Ё' => 'Е',
                c => c,
            }));
            mem::swap(&mut token.text, self.buffer);
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_and_english_words_stem_and_fold() {
        let mut a = stemmed_analyzer();
        assert_eq!(terms(&mut a, "Ёлки, отпуска и ОТПУСК"), ["елк", "отпуск"]);
        assert_eq!(terms(&mut a, "How do I request laptops?"), ["request", "laptop"]);
        assert_eq!(terms(&mut a, "зелёный"), terms(&mut a, "зеленый"));
        assert!(!terms(&mut a, "зелёный").is_empty());
    }

    #[test]
    fn exact_field_keeps_codes_whole() {
        let mut a = exact_analyzer();
        assert_eq!(
            terms(&mut a, "Form SEC-101, v2.3 and ИТ-отдел."),
            ["form", "sec-101", "v2.3", "and", "ит-отдел"]
        );
    }
}
