//! `sluice bench minhash`: signatures and LSH over real text.

use anyhow::Result;
use std::io::Write;

pub fn bench_minhash(input: &std::path::Path, limit: Option<usize>) -> Result<()> {
    use sluice_pipeline::stages::minhash::MinHasher;
    let (mut samples, rejected) = sluice_pipeline::bench::read_samples(input)?;
    if let Some(n) = limit {
        samples.truncate(n);
    }
    let texts: Vec<String> = samples
        .iter()
        .map(|s| sluice_pipeline::stages::exact_dedup::Scope::All.text(s))
        .collect();
    let h = MinHasher::new(0.8, 128, 5, None, 1);
    let t = std::time::Instant::now();
    let mut sink = 0u64;
    for text in &texts {
        if let Some(sig) = h.signature(text) {
            sink = sink.wrapping_add(u64::from(sig[0]));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    writeln!(
        std::io::stdout(),
        "{} samples ({rejected} unreadable), avg {:.0} chars, one core: {:.0} signatures/s ({:.1} MB/s of text), 128 permutations, 5-gram shingles, bands×rows {}×{} (checksum {sink})",
        texts.len(),
        chars as f64 / texts.len().max(1) as f64,
        texts.len() as f64 / secs,
        texts.iter().map(String::len).sum::<usize>() as f64 / 1e6 / secs,
        h.bands,
        h.rows
    )?;
    Ok(())
}

/// Precision and recall on a generated corpus of documents (0.5–5 KB, 30% edited copies).
pub fn bench_accuracy(docs: usize, lang: &str) -> Result<()> {
    use sluice_pipeline::bench::corpus::{self, Lang, Spec};
    let lang: Lang = lang.parse().map_err(anyhow::Error::msg)?;
    let spec = Spec {
        lang,
        docs,
        bytes: (500, 5000),
        near_dup: 0.3,
        dialogue: false,
        seed: 1,
        sources: Spec::default_sources(lang),
    };
    let pool = corpus::sentences(lang, &spec.sources)?;
    let generated = corpus::generate(&spec, &pool);
    let texts: Vec<String> = generated
        .iter()
        .map(|g| g.sample.text.clone().unwrap_or_default())
        .collect();
    let lineage: Vec<usize> = generated
        .iter()
        .enumerate()
        .map(|(i, g)| g.copy_of.unwrap_or(i))
        .collect();
    let rows =
        sluice_pipeline::bench::minhash_accuracy::measure(&texts, &lineage, &[0.7, 0.8, 0.9]);
    let mut o = std::io::stdout();
    writeln!(
        o,
        "{} documents ({} edited copies), 128 permutations, 5-gram shingles; precision: verified pairs with exact Jaccard ≥ t; recall: pairs with exact Jaccard ≥ t + 0.05",
        texts.len(),
        lineage.iter().enumerate().filter(|(i, r)| i != *r).count()
    )?;
    writeln!(
        o,
        "{:>5} {:<34} {:>7} {:>9} {:>9} {:>7} {:>8} {:>14} {:>8}",
        "t",
        "method",
        "b × r",
        "reported",
        "precision",
        "truth",
        "recall",
        "cluster recall",
        "seconds"
    )?;
    for r in rows {
        let name = if r.method == "sluice" {
            "sluice (miss-weighted, sketch)"
        } else {
            "datasketch bands + estimate"
        };
        writeln!(
            o,
            "{:>5} {:<34} {:>7} {:>9} {:>9.4} {:>7} {:>8.4} {:>14.4} {:>8.2}",
            r.threshold,
            name,
            format!("{}×{}", r.bands, r.rows),
            r.reported,
            r.precision,
            r.truth,
            r.recall,
            r.cluster_recall,
            r.seconds
        )?;
    }
    Ok(())
}
