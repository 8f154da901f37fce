//! Reader throughput measurement behind `sluice bench read`: sluice's reader (split, decode,
//! parse, recognise the format, build and validate samples) against plain `serde_json` parsing
//! of the same bytes into `serde_json::Value`, in the same process, on the same file.

pub mod corpus;
pub mod minhash_accuracy;

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
        let stage = cfg.build(plan.seed).map_err(|e| format!("{name}: {e}"))?;
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
                cx.observed.clear();
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

/// Write a synthetic catalog under `root`: `runs` run directories, each with a catalog.parquet
/// of `groups` rows (domains × tasks × regions × age groups × languages) describing
/// `samples / runs` samples. Returns the rows written.
pub fn synthetic_catalog(root: &Path, runs: usize, samples: u64) -> crate::Result<usize> {
    use polars::prelude::*;
    let domains = ["general", "finance", "medical", "legal", "service"];
    let tasks = ["qa", "chat", "summary", "tool_use"];
    let regions = ["east", "north", "south", "west", "central"];
    let ages = ["<18", "18-34", "35-59", "60+"];
    let langs = ["cmn", "eng"];
    let groups = domains.len() * tasks.len() * regions.len() * ages.len() * langs.len();
    let per_run = samples / runs.max(1) as u64;
    let mut rows = 0;
    for r in 0..runs {
        let (mut d, mut t, mut re, mut a, mut l) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut s, mut tok, mut ex) = (vec![], vec![], vec![]);
        let mut g = 0u64;
        for dom in domains {
            for task in tasks {
                for reg in regions {
                    for age in ages {
                        for lang in langs {
                            // Uneven group sizes that still sum to per_run.
                            let base = per_run / groups as u64;
                            let extra = u64::from(g < per_run % groups as u64);
                            let n = base + extra;
                            d.push(dom);
                            t.push(task);
                            re.push(reg);
                            a.push(age);
                            l.push(lang);
                            s.push(n);
                            tok.push(n * (200 + (g % 7) * 50));
                            ex.push(format!("[\"run{r}-{g}-0\",\"run{r}-{g}-1\"]"));
                            g += 1;
                        }
                    }
                }
            }
        }
        let n = s.len();
        let rep = |name: &str, v: String| Column::new(name.into(), vec![v; n]);
        let dir = format!("run{r:04}");
        let mut df = DataFrame::new(
            n,
            vec![
                rep("run", dir.clone()),
                rep("files", "curated/*.parquet".into()),
                rep("tokens_by", "approx".into()),
                Column::new("domain".into(), d),
                Column::new("task".into(), t),
                rep("source", format!("logs-{r}.jsonl")),
                rep("kind", "sft".into()),
                Column::new("lang".into(), l),
                Column::new("region".into(), re),
                Column::new("age_group".into(), a),
                Column::new("samples".into(), s.clone()),
                Column::new(
                    "turns".into(),
                    s.iter().map(|x| x * 4).collect::<Vec<u64>>(),
                ),
                Column::new("tokens".into(), tok),
                Column::new(
                    "chars".into(),
                    s.iter().map(|x| x * 600).collect::<Vec<u64>>(),
                ),
                Column::new("copies".into(), vec![0u64; n]),
                Column::new("examples".into(), ex),
            ],
        )
        .map_err(|e| polars_output(root, e))?;
        let path = root.join(&dir);
        #[allow(clippy::disallowed_methods)] // a folder
        std::fs::create_dir_all(&path).map_err(|e| crate::Error::io(&path, e))?;
        let mut bytes = Vec::new();
        ParquetWriter::new(&mut bytes)
            .finish(&mut df)
            .map_err(|e| polars_output(&path, e))?;
        crate::storage::write_atomic(&path.join(crate::catalog::CATALOG_FILE), &bytes)?;
        rows += n;
    }
    Ok(rows)
}

fn polars_output(path: &Path, e: polars::prelude::PolarsError) -> crate::Error {
    crate::Error::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Synthetic SFT samples for mix throughput: `n` dialogues over five domains and four tasks,
/// with region and age tags, written as JSONL.
pub fn synthetic_samples(path: &Path, n: u64) -> crate::Result<()> {
    use std::io::Write;
    let domains = ["general", "general", "general", "finance", "medical"];
    let tasks = ["qa", "chat", "summary", "tool_use"];
    let regions = ["east", "north", "south", "west"];
    let mut f = crate::storage::AtomicFile::create(path)?;
    let io = |e| crate::Error::io(path, e);
    let mut w = std::io::BufWriter::new(&mut f);
    for i in 0..n {
        let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        let line = serde_json::json!({
            "id": format!("s{i}"),
            "domain": domains[(h % 5) as usize],
            "task": tasks[((h >> 8) % 4) as usize],
            "tags": {"region": regions[((h >> 16) % 4) as usize], "age": ((h >> 24) % 70 + 12).to_string()},
            "turns": [
                {"role": "user", "content": format!("问题{i}：请问这个产品的年化收益率是多少？")},
                {"role": "assistant", "content": format!("回答{i}：年化收益率以合同约定为准，过往业绩不代表未来表现。")}
            ]
        });
        writeln!(w, "{line}").map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    f.commit()
}
