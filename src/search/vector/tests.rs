use super::*;
use crate::store::{Format, Language};

fn document(id: u64, groups: &[&str]) -> DocumentRecord {
    DocumentRecord {
        id: DocumentId(id),
        root: "/".into(),
        source: format!("{id}.md"),
        title: String::new(),
        language: Language::En,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        content_hash: String::new(),
        pipeline: String::new(),
        format: Format::Markdown,
        size: 0,
        imported_at: 0,
        updated_at: 0,
        chunk_count: 1,
    }
}

fn unit(seed: u64, dimension: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..dimension)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / u32::MAX as f32) - 0.25
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

fn index_with(limit: usize, docs: u64) -> VectorIndex {
    let mut index = VectorIndex::new(16, limit);
    for id in 1..=docs {
        let groups: &[&str] = if id % 3 == 0 { &["board"] } else { &[] };
        index.replace_document(&document(id, groups), &[(0, unit(id, 16))]);
    }
    index
}

#[test]
fn exact_scan_and_graph_agree_and_respect_groups() {
    let exact = index_with(10_000, 600);
    let graph = index_with(100, 600);
    assert_eq!((exact.strategy(), graph.strategy()), (VectorStrategy::Exact, VectorStrategy::Hnsw));
    for seed in [5u64, 77, 301] {
        let query = unit(seed, 16);
        let a = exact.search(&query, Language::En, &[], 5);
        let b = graph.search(&query, Language::En, &[], 5);
        assert_eq!(
            a.iter().map(|h| h.document).collect::<Vec<_>>(),
            b.iter().map(|h| h.document).collect::<Vec<_>>()
        );
        assert!(a.iter().all(|h| h.document.0 % 3 != 0), "board documents leaked");
        assert_eq!(a[0].document, DocumentId(seed), "a vector is its own nearest neighbour");
    }
    let hits = exact.search(&unit(300, 16), Language::En, &["board".into()], 1);
    assert_eq!(hits[0].document, DocumentId(300));
    assert!((hits[0].score - 1.0).abs() < 1e-5);
}

#[test]
fn exact_scan_and_graph_agree_when_languages_are_balanced() {
    let build = |limit: usize| {
        let mut index = VectorIndex::new(16, limit).balance_languages(0.75);
        for id in 1..=600u64 {
            let mut record = document(id, &[]);
            record.language = if id % 2 == 0 { Language::Ru } else { Language::En };
            index.replace_document(&record, &[(0, unit(id, 16))]);
        }
        index
    };
    let (exact, graph) = (build(10_000), build(100));
    for (seed, language) in [(5u64, Language::En), (78, Language::Ru), (301, Language::En)] {
        let query = unit(seed, 16);
        let a: Vec<_> = exact.search(&query, language, &[], 5).iter().map(|h| h.document).collect();
        let b: Vec<_> = graph.search(&query, language, &[], 5).iter().map(|h| h.document).collect();
        assert_eq!(a, b);
        assert_eq!(a[0], DocumentId(seed), "a vector is still its own nearest neighbour");
    }
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / norm).collect()
}

fn centred_cosine(a: &[f32], b: &[f32], centre_a: &[f32], centre_b: &[f32], alpha: f32) -> f32 {
    let a: Vec<f32> = a.iter().zip(centre_a).map(|(x, c)| x - alpha * c).collect();
    let b: Vec<f32> = b.iter().zip(centre_b).map(|(x, c)| x - alpha * c).collect();
    dot(&normalised(a), &normalised(b))
}

#[test]
fn balancing_ranks_by_the_cosine_of_centred_vectors_and_margins_are_against_the_mean() {
    let mut russian = document(1, &[]);
    russian.language = Language::Ru;
    let mut russian_too = document(4, &[]);
    russian_too.language = Language::Ru;
    let vectors: Vec<(DocumentRecord, Vec<f32>)> = vec![
        (russian, unit(1, 16)),
        (document(2, &[]), unit(2, 16)),
        (document(3, &[]), unit(3, 16)),
        (russian_too, unit(4, 16)),
    ];
    let mean = |ids: &[usize]| -> Vec<f32> {
        (0..16).map(|d| ids.iter().map(|&i| vectors[i].1[d]).sum::<f32>() / ids.len() as f32).collect()
    };
    let (ru_centre, en_centre) = (mean(&[0, 3]), mean(&[1, 2]));
    let query = unit(7, 16);
    for (strength, query_language) in [(0.0, Language::En), (0.5, Language::Ru), (1.0, Language::En)] {
        let mut index = VectorIndex::new(16, 10_000).balance_languages(strength);
        for (record, vector) in &vectors {
            index.replace_document(record, &[(0, vector.clone())]);
        }
        let query_centre = if query_language == Language::Ru { &ru_centre } else { &en_centre };
        let hits = index.search(&query, query_language, &[], 4);
        assert_eq!(hits.len(), 4);
        for hit in &hits {
            let i = vectors.iter().position(|(d, _)| d.id == hit.document).unwrap();
            let centre = if vectors[i].0.language == Language::Ru { &ru_centre } else { &en_centre };
            let cosine = dot(&query, &vectors[i].1);
            assert!((hit.cosine - cosine).abs() < 1e-5);
            let expected = centred_cosine(&query, &vectors[i].1, query_centre, centre, strength);
            assert!((hit.score - expected).abs() < 1e-4, "strength {strength}: {} vs {expected}", hit.score);
            assert!((hit.margin - (cosine - dot(&query, centre))).abs() < 1e-5);
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "ranked by the centred cosine");
    }
}

#[test]
fn centring_meets_translations_that_the_raw_cosine_ranks_below_the_question_language() {
    // Two languages, each with a large shared component, and topics as small components:
    // the raw cosine prefers any chunk of the question's language, the centred one the topic.
    let axis = |i: usize| -> Vec<f32> { (0..16).map(|d| if d == i { 1.0 } else { 0.0 }).collect() };
    let mix = |parts: &[(usize, f32)]| -> Vec<f32> {
        normalised((0..16).map(|d| parts.iter().map(|&(i, w)| w * axis(i)[d]).sum()).collect())
    };
    let (ru, en) = (0, 1);
    // Russian chunks on topics 2..6, English ones on 8..11, and the only chunk on topic 7 is
    // English (document 10).
    let mut chunks: Vec<(Language, Vec<f32>)> = Vec::new();
    chunks.extend((2..7).map(|topic| (Language::Ru, mix(&[(ru, 3.0), (topic, 1.0)]))));
    chunks.extend((8..12).map(|topic| (Language::En, mix(&[(en, 3.0), (topic, 1.0)]))));
    chunks.push((Language::En, mix(&[(en, 3.0), (7, 1.0)])));
    let answer = DocumentId(chunks.len() as u64);
    let build = |strength: f32| {
        let mut index = VectorIndex::new(16, 10_000).balance_languages(strength);
        for (i, (language, vector)) in chunks.iter().enumerate() {
            let mut record = document(i as u64 + 1, &[]);
            record.language = *language;
            index.replace_document(&record, &[(0, vector.clone())]);
        }
        index
    };
    let question = mix(&[(ru, 3.0), (7, 1.0)]);
    let raw = build(0.0).search(&question, Language::Ru, &[], 1);
    assert_ne!(raw[0].document, answer, "the raw cosine prefers the question's language");
    let centred = build(1.0).search(&question, Language::Ru, &[], 1);
    assert_eq!(centred[0].document, answer);
}

#[test]
fn tombstones_hide_removed_vectors_and_compact() {
    let mut index = index_with(10_000, 10);
    index.remove_document(DocumentId(4));
    assert!(index.search(&unit(4, 16), Language::En, &[], 10).iter().all(|h| h.document != DocumentId(4)));
    assert_eq!(index.len(), 9);
    index.remove_document(DocumentId(5));
    // 2 of 10 rows are dead: compacted.
    assert_eq!(index.tombstones(), 0);
    assert_eq!(index.search(&unit(7, 16), Language::En, &[], 1)[0].document, DocumentId(7));
}
