//! A segment: the records of one source (inputs or a spill) through the record-wise stages up to the next global stage, then to its map side or to the sinks.

use crate::engine::batch::{BatchCut, Unit};
use crate::engine::{Engine, Progress, Source};
use crate::error::{Error, Result};
use crate::io::{read_file, FileSource};
use crate::report::FileReport;
use crate::stages::{Decisions, Stage};
use crate::storage::AtomicFile;
use rayon::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Engine<'_> {
    /// In a task: start segment `seg`.
    pub(in crate::engine) fn begin_segment(&mut self, seg: usize) {
        if let Some(t) = self.task.as_mut() {
            t.segment = seg;
            t.units.push(0);
        }
    }

    /// Run one segment: its source, its record-wise stages, then either the final sinks or the
    /// map side of global stage `g` (samples spilled to `spill`). Returns g's decisions.
    pub(in crate::engine) fn segment(
        &mut self,
        stages: &[Stage],
        source: Source,
        record_stages: &[usize],
        global: Option<(usize, PathBuf)>,
    ) -> Result<Decisions> {
        let mut spill_out = match &global {
            Some((_, p)) => Some(AtomicFile::create(p)?),
            None => None,
        };
        let mut collector = match &global {
            // A task maps only its own records; task 0 adds the preloaded ones at the merge.
            Some((g, spill)) => match &stages[*g] {
                Stage::Global(op) => {
                    Some(op.open(&spill.with_extension("exchange"), self.task.is_some())?)
                }
                Stage::Record(_) => None, // segments end at global stages only
            },
            None => None,
        };
        let mut pos = 0u64;
        let mut records = 0u64;
        let after = match &source {
            Source::Inputs => "reading".to_string(),
            Source::Spill { stage, .. } => format!("applying {}", self.names[*stage]),
        };
        let phase = match &global {
            Some((g, _)) => format!("{after} → {}", self.names[*g]),
            None => format!("{after} → writing"),
        };
        let mut on_batch = |eng: &mut Engine<'_>,
                            batch: Vec<Unit>,
                            decisions: Option<(&Decisions, usize)>|
         -> Result<()> {
            if eng
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled);
            }
            records += batch.len() as u64;
            let kept = eng.process_batch(stages, batch, record_stages, decisions)?;
            match (&mut collector, &mut spill_out) {
                (Some(c), Some(out)) => {
                    let lines: Vec<Vec<u8>> = kept
                        .par_iter()
                        .map(|(input, s)| {
                            let mut v = format!("{input}\t").into_bytes();
                            serde_json::to_writer(&mut v, s).map_err(|e| Error::Output {
                                path: out.path().to_path_buf(),
                                message: format!("cannot spill sample {}: {e}", s.id),
                            })?;
                            v.push(b'\n');
                            Ok(v)
                        })
                        .collect::<Result<_>>()?;
                    for l in &lines {
                        out.write_all(l).map_err(|e| Error::io(out.path(), e))?;
                    }
                    let started = Instant::now();
                    c.map(&kept)?;
                    if let Some((g, _)) = &global {
                        eng.tally.stage_cpu[*g] += started.elapsed();
                    }
                    pos += kept.len() as u64;
                }
                _ => eng.emit_kept(kept)?,
            }
            if let Some(p) = &eng.progress {
                p(&Progress {
                    phase: phase.clone(),
                    bytes: eng.bytes_read.load(Ordering::Relaxed),
                    total_bytes: eng.total_bytes,
                    records,
                });
            }
            Ok(())
        };

        match source {
            Source::Inputs => {
                let batch_size = self.plan.batch_size;
                let mut batch = Vec::with_capacity(batch_size);
                let mut cut = BatchCut::new(self.plan);
                let mut flat = 0usize;
                let limit = self.limit;
                let cancel_flag = self.cancel.clone();
                for (i, input) in self.plan.inputs.iter().enumerate() {
                    let iplan = Arc::new(input.clone());
                    let mut taken = 0u64;
                    for (path, display) in &input.files {
                        flat += 1;
                        if limit.is_some_and(|l| taken >= l) {
                            break; // a trial: this input has given its records
                        }
                        if let Some(t) = &self.task {
                            if !t.files.contains(&(flat - 1)) {
                                continue;
                            }
                        }
                        let mut records_in_file = 0u64;
                        let bytes_read = self.bytes_read.clone();
                        let mut meta = None;
                        let src = FileSource {
                            input: i,
                            plan: &iplan,
                            path,
                            display,
                            max_record_bytes: self.plan.max_record_bytes,
                            bytes_read: &bytes_read,
                            cancel: cancel_flag.as_deref(),
                        };
                        let status = read_file(&src, &mut |rec| {
                            if limit.is_some_and(|l| taken >= l) {
                                return Err(Error::LimitReached);
                            }
                            taken += 1;
                            records_in_file += 1;
                            if meta.is_none() {
                                meta = Some((
                                    format!("{:?}", rec.cx.reader).to_lowercase(),
                                    rec.cx.encoding.as_str().to_string(),
                                    rec.cx.encoding_why.to_string(),
                                ));
                            }
                            let full = cut.add(rec.size());
                            batch.push(Unit::Raw(rec));
                            if full {
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                                on_batch(self, full, None)?;
                            }
                            Ok(())
                        });
                        let status = match status {
                            Err(Error::LimitReached) => Ok(Ok(())),
                            other => other,
                        }?;
                        let (reader, encoding, encoding_why) = meta.unwrap_or_default();
                        let mut fr = FileReport {
                            path: display.clone(),
                            reader,
                            encoding,
                            encoding_why,
                            records: records_in_file,
                            bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
                            ..Default::default()
                        };
                        // The reader already emitted the error as the file's last record.
                        fr.error = status.err();
                        self.tally.inputs[i].read += fr.records;
                        self.tally.inputs[i].files.push(fr);
                    }
                }
                if !batch.is_empty() {
                    on_batch(self, batch, None)?;
                }
                // A cancel that came while files gave no record (their reads stopped with an
                // error) still cancels: nothing is published.
                if self
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return Err(Error::Cancelled);
                }
            }
            Source::Spill {
                path,
                decisions,
                stage,
            } => {
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let mut reader = BufReader::with_capacity(1 << 20, file);
                let mut batch = Vec::with_capacity(self.plan.batch_size);
                let mut cut = BatchCut::new(self.plan);
                // A phase run alone reads a spill from the shared work folder: a line is one
                // sample of at most `max_record_bytes` (with room for JSON escapes), never more.
                let cap = match self.task.as_ref().and_then(|t| t.phase()) {
                    Some(_) => (self.plan.max_record_bytes as u64)
                        .saturating_mul(6)
                        .saturating_add(1 << 20),
                    None => u64::MAX,
                };
                for n in 0usize.. {
                    let mut line = Vec::new();
                    let got = (&mut reader)
                        .take(cap.saturating_add(1))
                        .read_until(b'\n', &mut line)
                        .map_err(|e| Error::io(&path, e))?;
                    if got == 0 {
                        break;
                    }
                    if got as u64 > cap {
                        return Err(Error::Work {
                            path: path.clone(),
                            message: format!("spill line {} is over {cap} bytes: refused", n + 1),
                        });
                    }
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    // `<input>\t<sample>`: anything else is a broken spill, never input 0.
                    let input = line
                        .iter()
                        .position(|&b| b == b'\t')
                        .and_then(|tab| std::str::from_utf8(&line[..tab]).ok()?.parse().ok())
                        .filter(|&i: &usize| i < self.plan.inputs.len())
                        .ok_or_else(|| Error::Output {
                            path: path.clone(),
                            message: format!("spill line {} has no input index", n + 1),
                        })?;
                    let tab = line.iter().position(|&b| b == b'\t').unwrap_or(0);
                    line.drain(..=tab);
                    let full = cut.add(line.len());
                    batch.push(Unit::Spilled {
                        pos: n as u64,
                        input,
                        line,
                    });
                    if full {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(self.plan.batch_size));
                        on_batch(self, full, Some((&decisions, stage)))?;
                    }
                }
                if !batch.is_empty() {
                    on_batch(self, batch, Some((&decisions, stage)))?;
                }
                // A phase run alone keeps its source until its marker is written (a re-run
                // of a phase that failed reads it again).
                if self.task.as_ref().and_then(|t| t.phase()).is_none() {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        if let Some(out) = spill_out {
            out.commit()?;
        }
        if let Some(t) = self.task.as_mut() {
            if let Some(u) = t.units.last_mut() {
                *u = records;
            }
        }
        let Some((g, _)) = global else {
            return Ok(Decisions::new());
        };
        let started = Instant::now();
        let resolved = match (collector, self.task.is_some()) {
            (Some(c), false) => c.resolve(),
            (Some(c), true) => {
                c.flush()?;
                // Waiting for other tasks is not this stage's work: only the map flush (here)
                // and, in task 0, the merge and reduce (added in task_exchange) count.
                self.tally.stage_cpu[g] += started.elapsed();
                if let Some(t) = self.task.as_mut().filter(|t| t.phase().is_some()) {
                    // A phase run alone stops here: it shares its map output and ends.
                    t.mapped = pos;
                    return Ok(Decisions::new());
                }
                self.task_exchange(stages, g, pos)
            }
            (None, _) => Ok(Decisions::new()),
        };
        let decisions = resolved.map_err(|e| self.stage_error(g, e))?;
        if self.task.is_none() {
            self.tally.stage_cpu[g] += started.elapsed();
        }
        let reduced_here = self.task.as_ref().is_none_or(|t| t.run.spec.index == 0);
        if let (Stage::Global(op), true) = (&stages[g], reduced_here) {
            self.tally.stages[g].details = op.summary();
        }
        self.settle_global(g, pos, &decisions);
        Ok(decisions)
    }

    /// A stage that cannot decide fails the run under its name.
    pub(in crate::engine) fn stage_error(&self, g: usize, e: Error) -> Error {
        match e {
            Error::Stage(e) => Error::Config {
                file: self.plan.config_path.clone(),
                issues: vec![crate::error::ConfigIssue {
                    key: self.names[g].clone(),
                    message: e.to_string(),
                }],
            },
            other => other,
        }
    }

    /// Count global stage `g`'s decisions about the `pos` positions this process mapped.
    pub(in crate::engine) fn settle_global(&mut self, g: usize, pos: u64, decisions: &Decisions) {
        let report = &mut self.tally.stages[g];
        report.input = pos;
        report.kept =
            pos.saturating_sub(decisions.values().filter(|d| d.drop.is_some()).count() as u64);
    }
}
