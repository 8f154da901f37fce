//! A fuzz harness for the readers, on stable Rust: inputs are generated and mutated from seed
//! files (the bundled examples), written under every reader's extension, plain and gzip- and
//! zstd-compressed, and read back with sluice's readers and record conversion. Every case must
//! end (a watchdog times it), never panic, account for every record (each record the reader
//! emits is converted or rejected), and locate every reject (a line, or the file-level error).
//! `cargo test` runs a bounded number of cases; `sluice bench fuzz --seconds N` runs longer.

use crate::config::InputPlan;
use crate::io::{convert::convert, read_path, Payload};
use crate::stages::SplitMix64;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a fuzz run found.
#[derive(Debug, Default, Clone)]
pub struct FuzzReport {
    /// Cases run.
    pub cases: u64,
    /// Records the readers emitted.
    pub records: u64,
    /// Of those, rejected (reader or conversion errors).
    pub rejected: u64,
    /// Files that ended with a file-level error.
    pub file_errors: u64,
    /// The slowest case.
    pub slowest: Duration,
    /// Failures: panics, records neither converted nor rejected, cases over the time bound,
    /// rejects without a location. Each names its case.
    pub failures: Vec<String>,
}

/// Bytes that parsers care about, inserted by mutations.
const SPECIAL: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\n",
    b"\r\n",
    b"\t",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\x81",
    b"\x00",
    b"\"\"",
    b"\\u",
    b"{\"text\":",
    b"]]",
    b"\xE4\xBD",
];

const EXTS: &[&str] = &["jsonl", "json", "csv", "tsv", "txt", "bin"];

/// One mutated input from the seeds.
fn mutate(seeds: &[Vec<u8>], rng: &mut SplitMix64) -> Vec<u8> {
    let pick = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    let mut data = seeds[pick(rng, seeds.len())].clone();
    // Keep cases small: a window of the seed.
    if data.len() > 64 * 1024 {
        let start = pick(rng, data.len() - 64 * 1024);
        data = data[start..start + 64 * 1024].to_vec();
    }
    for _ in 0..(1 + pick(rng, 8)) {
        match pick(rng, 8) {
            0 if !data.is_empty() => {
                let at = pick(rng, data.len());
                data[at] = rng.next_u64() as u8;
            }
            1 => {
                let at = pick(rng, data.len() + 1);
                let s = SPECIAL[pick(rng, SPECIAL.len())];
                data.splice(at..at, s.iter().copied());
            }
            2 if !data.is_empty() => {
                let at = pick(rng, data.len());
                data.truncate(at);
            }
            3 if !data.is_empty() => {
                let a = pick(rng, data.len());
                let b = (a + pick(rng, 4096)).min(data.len());
                let slice = data[a..b].to_vec();
                let at = pick(rng, data.len() + 1);
                data.splice(at..at, slice);
            }
            4 => {
                // A long run of one byte: bombs in miniature.
                let at = pick(rng, data.len() + 1);
                let b = [b' ', b'0', b'"', b'[', b'\n', b'x'][pick(rng, 6)];
                let n = 1 + pick(rng, 200_000);
                data.splice(at..at, std::iter::repeat_n(b, n));
            }
            5 => {
                let other = &seeds[pick(rng, seeds.len())];
                let cut = pick(rng, other.len().min(8192) + 1);
                data.extend_from_slice(&other[..cut]);
            }
            6 if !data.is_empty() => {
                let a = pick(rng, data.len());
                let b = (a + pick(rng, 512)).min(data.len());
                data.drain(a..b);
            }
            _ => {}
        }
    }
    data
}

fn compress(data: &[u8], how: usize) -> Vec<u8> {
    match how {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        2 => zstd::encode_all(data, 1).unwrap_or_default(),
        _ => data.to_vec(),
    }
}

/// Run cases from `seeds` until `cases` are done or `deadline` passes, writing them under
/// `dir`. `max_case` bounds one case's time.
pub fn run(
    seeds: &[Vec<u8>],
    dir: &Path,
    seed: u64,
    cases: u64,
    deadline: Duration,
    max_case: Duration,
) -> FuzzReport {
    let mut report = FuzzReport::default();
    let mut rng = SplitMix64(seed);
    let started = Instant::now();
    let plan = Arc::new(InputPlan {
        // Every layout a seed may have: records are converted as sluice would.
        ..InputPlan::new("fuzz")
    });
    while report.cases < cases && started.elapsed() < deadline {
        let case = report.cases;
        report.cases += 1;
        let data = mutate(seeds, &mut rng);
        let ext = EXTS[(rng.next_u64() % EXTS.len() as u64) as usize];
        let how = (rng.next_u64() % 3) as usize;
        let suffix = ["", ".gz", ".zst"][how];
        let path = dir.join(format!("case{case}.{ext}{suffix}"));
        if crate::storage::write_atomic(&path, &compress(&data, how)).is_err() {
            report
                .failures
                .push(format!("case {case}: cannot write the input"));
            continue;
        }
        let t = Instant::now();
        // The watchdog: the case runs on its own thread; one that does not end in time is a
        // failure, and the run stops there (a hung reader cannot be stopped from outside).
        let (tx, rx) = std::sync::mpsc::channel();
        let (plan_t, path_t) = (plan.clone(), path.clone());
        std::thread::spawn(move || {
            let _ = tx.send(read_case(&plan_t, &path_t));
        });
        let outcome = match rx.recv_timeout(max_case) {
            Ok(o) => o,
            Err(_) => {
                report.failures.push(format!(
                    "case {case} ({ext}{suffix}): no end after {max_case:?} (a hang); input kept at {}",
                    path.display()
                ));
                return report;
            }
        };
        let took = t.elapsed();

        report.slowest = report.slowest.max(took);
        let _ = std::fs::remove_file(&path);
        match outcome {
            Err(_) => report
                .failures
                .push(format!("case {case} ({ext}{suffix}): a reader panicked")),
            Ok((Err(e), ..)) => report
                .failures
                .push(format!("case {case} ({ext}{suffix}): a fatal error: {e}")),
            Ok((Ok(status), records, rejected, unlocated)) => {
                report.records += records;
                report.rejected += rejected;
                if status.is_err() {
                    report.file_errors += 1;
                }
                if unlocated > 0 {
                    report.failures.push(format!(
                        "case {case} ({ext}{suffix}): {unlocated} reject(s) without a line"
                    ));
                }
            }
        }
        if took > max_case {
            report.failures.push(format!(
                "case {case} ({ext}{suffix}): took {took:?}, over {max_case:?}"
            ));
        }
    }
    report
}

/// What one case's reading gave: the status, records, rejects and rejects without a line; or
/// a panic.
type CaseOutcome = std::thread::Result<(crate::Result<Result<(), String>>, u64, u64, u64)>;

fn read_case(plan: &Arc<InputPlan>, path: &Path) -> CaseOutcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (mut records, mut rejected, mut unlocated) = (0u64, 0u64, 0u64);
        let status = read_path(plan, path, 64 * 1024, &mut |rec| {
            records += 1;
            let bad = matches!(rec.payload, Payload::Error(_)) || convert(&rec).is_err();
            if bad {
                rejected += 1;
                if rec.line == 0 && !matches!(rec.payload, Payload::Error(_)) {
                    unlocated += 1;
                }
            }
            Ok(())
        });
        (status, records, rejected, unlocated)
    }))
}

/// The seeds: every file under `dir` (decompressed when gzip or zstd), at most `max` of them.
pub fn seeds_from(dir: &Path, max: usize) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files.into_iter().take(max) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        let plain = if name.ends_with(".gz") {
            let mut v = Vec::new();
            let _ =
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v);
            v
        } else if name.ends_with(".zst") {
            zstd::decode_all(&bytes[..]).unwrap_or_default()
        } else {
            bytes
        };
        if !plain.is_empty() {
            out.push(plain);
        }
    }
    out
}
