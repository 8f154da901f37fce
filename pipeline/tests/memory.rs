//! Memory, measured with a counting allocator (alone in its process, so the figures are this
//! run's): what a global stage holds per duplicate (the heap's peak while `exact_dedup` runs
//! over N copies, at two sizes; #18: 2M copies of one record took 812 MB, ~370 bytes each,
//! when every copy held its own reason), and what a batch of large records holds (#18: 60
//! records of 7.5 MiB peaked at 1.47 GB with batches cut by count only).

#![allow(clippy::disallowed_methods)] // fixtures

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counts are the process's: tests measure one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Peak heap above the start while running exact_dedup over `n` records, where record `i` has
/// the text `text(i)`.
fn peak_during_run(n: usize, text: impl Fn(usize) -> String) -> usize {
    peak_with(n, text, "batch_size = 256")
}

/// [`peak_during_run`] with `settings` at the top of the pipeline file.
fn peak_with(n: usize, text: impl Fn(usize) -> String, settings: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    for i in 0..n {
        writeln!(
            f,
            "{{\"id\":\"rec-{i:08}\",\"instruction\":{},\"output\":\"ok\"}}",
            serde_json::to_string(&text(i)).expect("json")
        )
        .expect("write");
    }
    drop(f);
    let config = dir.path().join("run.toml");
    let toml = format!(
        "name = \"mem\"\n{settings}\n[[inputs]]\nname = \"logs\"\npaths = [{:?}]\n\
         [[stages]]\ntype = \"exact_dedup\"\n[output]\ndir = {:?}\nformats = [\"jsonl\"]\n",
        input.display().to_string(),
        dir.path().join("out").display().to_string()
    );
    std::fs::write(&config, &toml).expect("config");
    let plan = sluice_pipeline::config::parse(&toml, &config).expect("plan");
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let report = sluice_pipeline::run(
        &plan,
        sluice_pipeline::RunOptions {
            threads: Some(2),
            ..Default::default()
        },
    )
    .expect("run");
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(report.totals.read, n as u64);
    peak
}

fn per_record(small: usize, large: usize, text: impl Fn(usize) -> String + Copy) -> f64 {
    let a = peak_during_run(small, text);
    let b = peak_during_run(large, text);
    eprintln!("peak heap: {a} B at {small} records, {b} B at {large}");
    (b.saturating_sub(a)) as f64 / (large - small) as f64
}

#[test]
fn copies_of_one_record_cost_a_few_bytes_each() {
    let _alone = alone();
    // Every copy is in one exchange partition and one group: 24 bytes of (key, position)
    // while reducing, 8 of member list, 16 of decision position.
    let each = per_record(20_000, 120_000, |_| "同一个问题，同一个答案".to_string());
    eprintln!("exact_dedup, copies of one record: {each:.1} bytes per duplicate");
    assert!(each < 96.0, "{each:.1} bytes per duplicate");
}

#[test]
fn pairs_cost_one_decision_per_kept_record() {
    let _alone = alone();
    // The worst case for the decision table: every kept record has one copy, so each
    // duplicate brings its own distinct decision (its reason names the kept id). The README
    // states this figure; measured at ~270 bytes per duplicate (two records).
    let each = 2.0 * per_record(20_000, 120_000, |i| format!("问题 {}", i / 2));
    eprintln!("exact_dedup, pairs: {each:.1} bytes per duplicate");
    assert!(each < 400.0, "{each:.1} bytes per duplicate");
}

#[test]
fn batches_of_large_records_are_cut_by_bytes() {
    let _alone = alone();
    // 24 records of 2 MiB: cut at 4 MiB a batch holds two of them; cut by count alone
    // (2048 records) it holds all 48 MiB, in every form a record takes on its way.
    let big = |i: usize| format!("{i} {}", "长文本".repeat((2 << 20) / 9));
    let settings = "max_record_bytes = \"4MiB\"";
    let by_bytes = peak_with(24, big, &format!("{settings}\nbatch_bytes = \"4MiB\""));
    let by_count = peak_with(24, big, &format!("{settings}\nbatch_bytes = \"1GiB\""));
    eprintln!("peak heap, 24 records of 2 MiB: {by_bytes} B cut by bytes, {by_count} B by count");
    assert!(by_bytes < 64 << 20, "{by_bytes} B cut at 4 MiB");
    assert!(by_bytes * 3 < by_count, "{by_bytes} B vs {by_count} B");
}

/// A gzip file of `head`, then `n` bytes of `fill`, then `tail`, written a block at a time.
fn gzip_file(path: &std::path::Path, head: &[u8], fill: u8, n: usize, tail: &[u8]) {
    let f = std::fs::File::create(path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(head).expect("w");
    let block = vec![fill; 1 << 20];
    for _ in 0..n / block.len() {
        gz.write_all(&block).expect("w");
    }
    gz.write_all(tail).expect("w");
    gz.finish().expect("finish");
}

/// Peak heap while reading one file with the readers alone; the records and the file's status.
fn peak_reading(
    path: &std::path::Path,
    reader: sluice_pipeline::config::ReaderKind,
    encoding: sluice_pipeline::config::Encoding,
) -> (usize, Vec<String>, Result<(), String>) {
    let plan = std::sync::Arc::new(sluice_pipeline::config::InputPlan {
        reader,
        encoding,
        max_expansion: 0,
        ..sluice_pipeline::config::InputPlan::new("bomb")
    });
    let mut seen = Vec::new();
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let status = sluice_pipeline::io::read_path(&plan, path, 8 << 20, &mut |rec| {
        seen.push(match &rec.payload {
            sluice_pipeline::io::Payload::Error(e) => format!("error at line {}: {e}", rec.line),
            _ => format!("record at line {}", rec.line),
        });
        Ok(())
    })
    .expect("read");
    (PEAK.load(Ordering::Relaxed) - base, seen, status)
}

/// Regression (#18): the bombs of the fuzzing report, at 160 MiB decompressed instead of 2 GiB
/// (the bound does not depend on the size): CSV of zeros with no newline (10 GiB peak), an
/// unclosed CSV quote before a long tail (4 GiB), a GB18030 JSON document with spaces between
/// two records (8.1 GiB). Each is read within the record bound (8 MiB) plus buffers.
#[test]
fn bombs_are_read_in_bounded_memory() {
    let _alone = alone();
    use sluice_pipeline::config::{Encoding, ReaderKind};
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 160 << 20;
    let bound = 48 << 20;

    let zeros = dir.path().join("bomb.csv.gz");
    gzip_file(&zeros, b"", b'0', size, b"");
    let (peak, seen, status) = peak_reading(&zeros, ReaderKind::Csv, Encoding::Auto);
    eprintln!("zeros as CSV: peak {peak} B, {seen:?}, {status:?}");
    assert!(peak < bound, "zeros as CSV: {peak} B");
    assert!(status.is_err_and(|e| e.contains("max_record_bytes")));

    let quote = dir.path().join("quote.csv.gz");
    gzip_file(&quote, b"q,a\nq1,\"open", b'x', size, b"\nq2,a2\n");
    let (peak, seen, _) = peak_reading(&quote, ReaderKind::Csv, Encoding::Auto);
    eprintln!("unclosed quote: peak {peak} B, {seen:?}");
    assert!(peak < bound, "unclosed quote: {peak} B");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("error at line 2"), "{seen:?}");
    assert_eq!(seen[1], "record at line 3");

    let gb = dir.path().join("gbk.json.gz");
    let (first, _, _) = encoding_rs::GB18030
        .encode("[{\"instruction\": \"信用卡怎么还款？\", \"output\": \"手机银行。\"},");
    let (last, _, _) =
        encoding_rs::GB18030.encode("{\"instruction\": \"限额？\", \"output\": \"五万。\"}]");
    gzip_file(&gb, &first, b' ', size, &last);
    let (peak, seen, status) = peak_reading(&gb, ReaderKind::Json, Encoding::Gb18030);
    eprintln!("GB18030 document: peak {peak} B, {seen:?}, {status:?}");
    assert!(peak < bound, "GB18030 document: {peak} B");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(status.is_ok());
}
