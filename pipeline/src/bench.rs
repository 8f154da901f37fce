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
    read_samples_with(&Arc::new(InputPlan::new("bench")), path)
}

/// Every sample of one file read with an input's own options (columns, domain, despacing…),
/// and the number of records that failed.
pub fn read_samples_with(
    plan: &Arc<InputPlan>,
    path: &Path,
) -> crate::Result<(Vec<crate::sample::Sample>, u64)> {
    let mut out = Vec::new();
    let mut rejected = 0;
    let status = read_path(plan, path, 64 << 20, &mut |rec| {
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

/// One record stage measured by [`stage_throughput`].
#[derive(Debug, Clone)]
pub struct StagePass {
    /// `stages[i].type`.
    pub name: String,
    /// Seconds to build the stage (load word lists, models, tokenizers).
    pub build_seconds: f64,
    /// Samples given to the stage per pass.
    pub samples: usize,
    /// Samples it kept.
    pub kept: usize,
    /// Best seconds of `repeat` passes, on one thread.
    pub seconds: f64,
}

/// Every record stage of a pipeline, each alone on one thread over all of the pipeline's input
/// samples (the same input for every stage, so figures compare), best of `repeat` passes.
/// Global stages are skipped (`sluice bench minhash` and a run's report cover them).
pub fn stage_throughput(
    plan: &crate::config::Plan,
    repeat: usize,
) -> Result<Vec<StagePass>, String> {
    use crate::stages::{Stage, StageCx, Verdict};
    let mut samples = Vec::new();
    for input in &plan.inputs {
        let ip = Arc::new(input.clone());
        for (path, _) in &input.files {
            samples.extend(read_samples_with(&ip, path).map_err(|e| e.to_string())?.0);
        }
    }
    // The baseline: serializing each sample to JSON, the cost of touching every field once.
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let bytes: usize = samples
            .iter()
            .map(|s| serde_json::to_vec(s).map_or(0, |v| v.len()))
            .sum();
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(bytes);
    }
    let mut out = vec![StagePass {
        name: "baseline: serde_json::to_vec".into(),
        build_seconds: 0.0,
        samples: samples.len(),
        kept: samples.len(),
        seconds: best,
    }];
    for (i, cfg) in plan.stages.iter().enumerate() {
        let name = format!("stages[{i}].{}", cfg.type_name());
        let t = Instant::now();
        let stage = cfg.build().map_err(|e| format!("{name}: {e}"))?;
        let build_seconds = t.elapsed().as_secs_f64();
        let Stage::Record(stage) = stage else {
            continue;
        };
        let mut best = f64::INFINITY;
        let mut kept = 0;
        for _ in 0..repeat.max(1) {
            let input = samples.clone();
            let mut cx = StageCx::new(plan.seed);
            let t = Instant::now();
            kept = 0;
            for s in input {
                if let Verdict::Keep(_) = stage.process(s, &mut cx) {
                    kept += 1;
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        out.push(StagePass {
            name,
            build_seconds,
            samples: samples.len(),
            kept,
            seconds: best,
        });
    }
    Ok(out)
}
