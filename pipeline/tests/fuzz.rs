//! The readers' fuzz harness, bounded: mutated inputs from the bundled examples under every
//! reader and compression must end, never panic, account for every record and locate every
//! reject. Alone in its process, so its peak memory is its own.

#![allow(clippy::disallowed_methods)] // fixtures

use std::time::Duration;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn readers_survive_mutated_inputs() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let seeds = sluice_pipeline::fuzz::seeds_from(&data, 64);
    assert!(seeds.len() >= 8, "seeds from {}", data.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let before = peak_rss_kib();
    let r = sluice_pipeline::fuzz::run(
        &seeds,
        dir.path(),
        std::env::var("SLUICE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed),
        3000,
        Duration::from_secs(240),
        Duration::from_secs(20),
    );
    eprintln!(
        "fuzz: {} cases, {} records, {} rejected, {} file errors, slowest {:?}",
        r.cases, r.records, r.rejected, r.file_errors, r.slowest
    );
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert!(r.cases >= 50, "only {} cases ran", r.cases);
    assert!(r.records > 0 && r.rejected > 0);
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 512 * 1024, "peak memory grew by {grown} KiB");
}
