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
