//! Reader throughput measurement behind `sluice bench read`: sluice's reader (split, decode,
//! parse, recognise the format, build and validate samples) against plain `serde_json` parsing
//! of the same bytes into `serde_json::Value`, in the same process, on the same file.

use crate::config::InputPlan;
use crate::io::convert::convert;
use crate::io::{read_path, RawRecord};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// One measured pass.
#[derive(Debug, Clone)]
pub struct Pass {
    /// Records handled.
    pub records: u64,
    /// Records that failed.
    pub failed: u64,
    /// Seconds.
    pub seconds: f64,
}

/// sluice's reader over `path` with the current rayon pool.
pub fn sluice_read(path: &Path, batch: usize) -> crate::Result<Pass> {
    let plan = Arc::new(InputPlan::new("bench"));
    let started = Instant::now();
    let (mut records, mut failed) = (0u64, 0u64);
    let mut pending: Vec<RawRecord> = Vec::with_capacity(batch);
    let mut flush = |pending: &mut Vec<RawRecord>| {
        let bad: u64 = pending
            .par_iter()
            .map(|r| u64::from(convert(r).is_err()))
            .sum();
        records += pending.len() as u64;
        failed += bad;
        pending.clear();
    };
    let status = read_path(&plan, path, 64 << 20, &mut |rec| {
        pending.push(rec);
        if pending.len() >= batch {
            flush(&mut pending);
        }
        Ok(())
    })?;
    flush(&mut pending);
    if let Err(message) = status {
        return Err(crate::Error::Input {
            path: path.to_path_buf(),
            message,
        });
    }
    Ok(Pass {
        records,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The baseline: `serde_json::from_slice::<Value>` per line (JSONL) or over the whole document
/// (JSON), single-threaded, on bytes already in memory (so the baseline pays no I/O).
pub fn serde_json_baseline(bytes: &[u8]) -> Pass {
    let started = Instant::now();
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (mut records, mut failed) = (0u64, 0u64);
    let one_doc = first == Some(b'[')
        || (first == Some(b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(
                bytes.split(|&b| b == b'\n').next().unwrap_or_default(),
            )
            .is_err());
    if one_doc {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Array(a)) => records = a.len() as u64,
            Ok(_) => records = 1,
            Err(_) => failed = 1,
        }
    } else {
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            records += 1;
            if serde_json::from_slice::<serde_json::Value>(line).is_err() {
                failed += 1;
            }
        }
    }
    Pass {
        records,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Every sample of a file, read with sluice's readers (format `auto`), and how many records
/// could not be read.
pub fn read_samples(path: &Path) -> crate::Result<(Vec<crate::sample::Sample>, u64)> {
    let plan = Arc::new(InputPlan::new("bench"));
    let mut out = Vec::new();
    let mut rejected = 0;
    let status = read_path(&plan, path, 64 << 20, &mut |rec| {
        match convert(&rec) {
            Ok((s, _)) => out.push(s),
            Err(_) => rejected += 1,
        }
        Ok(())
    })?;
    if let Err(message) = status {
        return Err(crate::Error::Input {
            path: path.to_path_buf(),
            message,
        });
    }
    Ok((out, rejected))
}
