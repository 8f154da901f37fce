//! The file-based exchange of global stages (map → exchange → reduce).
//!
//! A global stage's `map` gives, per record, a small payload (its [`GlobalStage::Record`]) and
//! any number of 128-bit keys. The exchange writes, under one directory:
//!
//! - `records.bin`: every payload once, in position order, and `records.idx`: one little-endian
//!   `u64` end offset per position, so payloads are found by position without being copied per
//!   key (a MinHash signature is stored once, not once per band);
//! - `part-NNN.bin`: `(key: u128, position: u64)` pairs, 24 bytes each, in the partition chosen
//!   by the key's hash.
//!
//! Reduce reads one partition file at a time, sorts it by (key, position), and hands each key's
//! positions to [`GlobalStage::reduce`] with random access to the payloads (memory-mapped).
//! `finish` then sees every partition's result. Each phase depends only on the files of the one
//! before, so the phases can run as separate tasks, and the partitions of reduce on separate
//! workers.
//!
//! Memory: map holds one batch plus `PARTITIONS` write buffers; reduce holds one partition per
//! thread (24 bytes per key, i.e. `records × keys per record × 24 / PARTITIONS`) and the offset
//! table (8 bytes per record); payloads stay on disk (page cache).

use crate::decisions::Decisions;
use crate::error::{Error, Result};
use crate::sample::Sample;
use crate::storage;
use rayon::prelude::*;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Partitions of the exchange.
pub const PARTITIONS: usize = 64;
/// Bytes per (key, position) entry in a partition file.
const ENTRY: usize = 24;

/// A payload that can be written to and read back from exchange files.
pub trait Wire: Sized {
    /// Append the encoding to `out`.
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()>;
    /// Decode one value from exactly these bytes.
    fn get(bytes: &[u8]) -> Option<Self>;
}

impl Wire for u64 {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend_from_slice(&self.to_le_bytes());
        Ok(())
    }
    fn get(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

impl Wire for () {
    fn put(&self, _out: &mut Vec<u8>) -> std::io::Result<()> {
        Ok(())
    }
    fn get(bytes: &[u8]) -> Option<()> {
        bytes.is_empty().then_some(())
    }
}

impl Wire for Decisions {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend(self.to_json().map_err(std::io::Error::other)?);
        Ok(())
    }
    fn get(bytes: &[u8]) -> Option<Decisions> {
        Decisions::from_json(bytes).ok()
    }
}

impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
    fn get(bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// A stage that needs keys from all data (dedup, split, mix), run as map → exchange → reduce
/// (see [`crate::exchange`]). `map` sees one sample and gives a small payload plus 128-bit keys;
/// only payloads and keys cross the exchange, never whole samples; `reduce` sees the positions
/// of every record sharing one key, in record order, and adds to its partition's result;
/// `finish` runs once over every partition's result (union-find, quotas) and returns the
/// decisions, which are applied back to records by position.
pub trait GlobalStage: Send + Sync {
    /// The per-record payload, stored once per record in the exchange.
    type Record: Wire + Send + Sync;
    /// What one partition's reductions produce (written to the work folder when the
    /// partitions are reduced by several tasks).
    type Reduced: Default + Send + Wire;
    /// Emit the keys of one sample and return its payload (`None`: no payload, no keys).
    fn map(&self, sample: &Sample, emit: &mut dyn FnMut(u128)) -> Option<Self::Record>;
    /// Reduce all records that share `key`; `members` are their positions, ascending.
    fn reduce(
        &self,
        key: u128,
        members: &[u64],
        records: &Records<Self::Record>,
        out: &mut Self::Reduced,
    );
    /// Turn every partition's result, in partition order, into decisions; `Err` says why the
    /// stage cannot decide (the run fails with it).
    fn finish(
        &self,
        parts: Vec<Self::Reduced>,
        records: &Records<Self::Record>,
    ) -> std::result::Result<Decisions, crate::error::StageError>;
    /// What the stage reports about its last `finish` (the report's `details`), if anything.
    fn summary(&self) -> Option<serde_json::Value> {
        None
    }
    /// Records kept by earlier runs (a persistent index), each with its keys, in order: they
    /// take the positions before this run's records, and decisions about them are not applied.
    fn preload(&self, _emit: &mut dyn FnMut(&[u128], &Self::Record)) {}
    /// Called once the run is published: persist what later runs need.
    fn commit(&self) -> Result<(), crate::error::StageError> {
        Ok(())
    }
    /// What [`GlobalStage::commit`] would persist after the last `finish`, as bytes: a run in
    /// phases finishes in one process and publishes in another, which hands them back with
    /// [`GlobalStage::restore_pending`].
    fn pending(&self) -> Option<Vec<u8>> {
        None
    }
    /// Take back what [`GlobalStage::pending`] gave (another process's finish).
    fn restore_pending(&self, _bytes: Vec<u8>) {}
}

/// A global stage as the engine sees it, whatever its payload: the object-safe face of
/// [`GlobalStage`], which every global stage has through the blanket impl below. The engine
/// knows global stages only through this trait.
pub trait GlobalOp: Send + Sync {
    /// Start the map side in `dir`; `plain`: without the stage's preloaded records (one task's
    /// share, merged later by [`GlobalOp::merge_resolve`]).
    fn open<'s>(&'s self, dir: &Path, plain: bool) -> Result<Box<dyn MapSide + 's>>;
    /// Merge tasks' map outputs (`parts`, in task order) after the preloaded records in `dir`,
    /// reduce and finish.
    fn merge_resolve(&self, dir: &Path, parts: &[PathBuf]) -> Result<Decisions>;
    /// Write the stage's preloaded records as an exchange in `dir` (no map output); returns
    /// how many there are (the positions before every task's).
    fn preload_into(&self, dir: &Path) -> Result<u64>;
    /// Reduce partitions `parts` over the exchange folders `dirs` (the preloaded one first;
    /// `offset` preloaded positions), writing partition p's result to `out/reduced-NNN.bin`.
    fn reduce_some(&self, dirs: &[PathBuf], parts: &[usize], out: &Path) -> Result<()>;
    /// Finish from every partition's result file (`reduced[p]`, in partition order) over the
    /// exchange folders `dirs`.
    fn finish_from(&self, dirs: &[PathBuf], offset: u64, reduced: &[PathBuf]) -> Result<Decisions>;
    /// What the stage reports about its last finish.
    fn summary(&self) -> Option<serde_json::Value>;
    /// Once the run is published: persist what later runs need.
    fn commit(&self) -> std::result::Result<(), crate::error::StageError>;
    /// What `commit` would persist (see [`GlobalStage::pending`]).
    fn pending(&self) -> Option<Vec<u8>>;
    /// Take back what `pending` gave in another process.
    fn restore_pending(&self, bytes: Vec<u8>);
}

/// The map side of one global stage's exchange.
pub trait MapSide {
    /// Map a batch of kept samples (with their input index), in order.
    fn map(&mut self, kept: &[(usize, Sample)]) -> Result<()>;
    /// Close the map side without reducing (a task's share of the exchange).
    fn flush(self: Box<Self>) -> Result<()>;
    /// Close, reduce and finish, then remove the exchange files.
    fn resolve(self: Box<Self>) -> Result<Decisions>;
}

impl<G: GlobalStage> GlobalOp for G {
    fn open<'s>(&'s self, dir: &Path, plain: bool) -> Result<Box<dyn MapSide + 's>> {
        Ok(Box::new(if plain {
            ExchangeWriter::create_plain(self, dir)?
        } else {
            ExchangeWriter::create(self, dir)?
        }))
    }

    fn merge_resolve(&self, dir: &Path, parts: &[PathBuf]) -> Result<Decisions> {
        // The preloaded records in `dir`, then every task's map output read in place.
        let preloaded = ExchangeWriter::create(self, dir)?.finish()?;
        let mut dirs = preloaded.dirs.clone();
        dirs.extend(parts.iter().cloned());
        let exchange = Exchange::over(dirs, preloaded.offset);
        let decisions = exchange.resolve(self);
        exchange.remove();
        decisions
    }

    fn preload_into(&self, dir: &Path) -> Result<u64> {
        Ok(ExchangeWriter::create(self, dir)?.finish()?.offset)
    }

    fn reduce_some(&self, dirs: &[PathBuf], parts: &[usize], out: &Path) -> Result<()> {
        let exchange = Exchange::over(dirs.to_vec(), 0);
        let records = Records::<G::Record>::open_many(dirs)?;
        let results = parts
            .par_iter()
            .map(|&p| {
                let r = exchange.reduce_partition(self, &records, p)?;
                let mut bytes = Vec::new();
                r.put(&mut bytes).map_err(|e| Error::io(out, e))?;
                storage::write_atomic(&out.join(reduced_file(p)), &bytes)
            })
            .collect::<Result<Vec<()>>>();
        results.map(drop)
    }

    fn finish_from(&self, dirs: &[PathBuf], offset: u64, reduced: &[PathBuf]) -> Result<Decisions> {
        let records = Records::<G::Record>::open_many(dirs)?;
        let mut parts = Vec::with_capacity(reduced.len());
        for path in reduced {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            parts.push(G::Reduced::get(&bytes).ok_or_else(|| Error::Work {
                path: path.clone(),
                message: "an unreadable partition result".into(),
            })?);
        }
        match self.finish(parts, &records) {
            Ok(d) => Ok(d.shifted(offset)),
            Err(e) => Err(Error::Stage(e)),
        }
    }

    fn summary(&self) -> Option<serde_json::Value> {
        GlobalStage::summary(self)
    }

    fn commit(&self) -> std::result::Result<(), crate::error::StageError> {
        GlobalStage::commit(self)
    }

    fn pending(&self) -> Option<Vec<u8>> {
        GlobalStage::pending(self)
    }

    fn restore_pending(&self, bytes: Vec<u8>) {
        GlobalStage::restore_pending(self, bytes)
    }
}

impl<G: GlobalStage> MapSide for ExchangeWriter<'_, G> {
    fn map(&mut self, kept: &[(usize, Sample)]) -> Result<()> {
        ExchangeWriter::map(self, kept)
    }

    fn flush(self: Box<Self>) -> Result<()> {
        self.finish().map(drop)
    }

    fn resolve(self: Box<Self>) -> Result<Decisions> {
        let stage = self.stage;
        let exchange = self.finish()?;
        let decisions = exchange.resolve(stage);
        exchange.remove();
        decisions
    }
}

/// File name of partition `p`.
fn part_file(p: usize) -> String {
    format!("part-{p:03}.bin")
}

/// File name of partition `p`'s reduced result.
pub fn reduced_file(p: usize) -> String {
    format!("reduced-{p:03}.bin")
}

/// Every file of an exchange directory, by name: what another task needs to reduce it.
pub fn file_names() -> Vec<String> {
    let mut names: Vec<String> = (0..PARTITIONS).map(part_file).collect();
    names.push("records.bin".into());
    names.push("records.idx".into());
    names
}

/// The partition of a key.
pub fn partition_of(key: u128) -> usize {
    ((key as u64) % PARTITIONS as u64) as usize
}

/// The map side: appends payloads and key entries to the exchange directory.
pub struct ExchangeWriter<'s, G: GlobalStage> {
    stage: &'s G,
    dir: PathBuf,
    records: BufWriter<File>,
    index: BufWriter<File>,
    parts: Vec<BufWriter<File>>,
    /// Positions written so far (preloaded records first).
    next: u64,
    end: u64,
    /// Records preloaded from earlier runs take positions `0..offset`.
    offset: u64,
}

impl<'s, G: GlobalStage> ExchangeWriter<'s, G> {
    /// Start an exchange in `dir` (created); the stage's preloaded records come first.
    pub fn create(stage: &'s G, dir: &Path) -> Result<Self> {
        let mut w = Self::create_plain(stage, dir)?;
        let mut failed = None;
        stage.preload(&mut |keys, record| {
            if failed.is_none() {
                if let Err(e) = w.push(keys, record) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        w.offset = w.next;
        Ok(w)
    }

    /// Start an exchange in `dir` without the stage's preloaded records: one task's map output,
    /// merged later with [`ExchangeWriter::append`].
    pub fn create_plain(stage: &'s G, dir: &Path) -> Result<Self> {
        let parts = (0..PARTITIONS)
            .map(|p| storage::scratch(&dir.join(part_file(p)), 64 << 10))
            .collect::<Result<Vec<_>>>()?;
        Ok(ExchangeWriter {
            stage,
            dir: dir.to_path_buf(),
            records: storage::scratch(&dir.join("records.bin"), 1 << 20)?,
            index: storage::scratch(&dir.join("records.idx"), 64 << 10)?,
            parts,
            next: 0,
            end: 0,
            offset: 0,
        })
    }

    /// The stage this exchange serves.
    pub fn stage(&self) -> &'s G {
        self.stage
    }

    fn push(&mut self, keys: &[u128], record: &G::Record) -> Result<()> {
        let mut bytes = Vec::new();
        record
            .put(&mut bytes)
            .map_err(|e| Error::io(&self.dir, e))?;
        self.push_encoded(keys, &bytes)
    }

    fn push_encoded(&mut self, keys: &[u128], record: &[u8]) -> Result<()> {
        let pos = self.next;
        let io = |e| Error::io(&self.dir, e);
        self.records.write_all(record).map_err(io)?;
        self.end += record.len() as u64;
        self.index.write_all(&self.end.to_le_bytes()).map_err(io)?;
        for &k in keys {
            let mut entry = [0u8; ENTRY];
            entry[..16].copy_from_slice(&k.to_le_bytes());
            entry[16..].copy_from_slice(&pos.to_le_bytes());
            self.parts[partition_of(k)].write_all(&entry).map_err(io)?;
        }
        self.next += 1;
        Ok(())
    }

    /// Map one batch of kept samples (in position order), in parallel.
    pub fn map(&mut self, kept: &[(usize, Sample)]) -> Result<()> {
        let stage = self.stage;
        let dir = &self.dir;
        let mapped: Vec<(Vec<u128>, Vec<u8>)> = kept
            .par_iter()
            .map(|(_, s)| {
                let mut keys = Vec::new();
                let mut bytes = Vec::new();
                if let Some(r) = stage.map(s, &mut |k| keys.push(k)) {
                    r.put(&mut bytes).map_err(|e| Error::io(dir, e))?;
                }
                Ok((keys, bytes))
            })
            .collect::<Result<_>>()?;
        for (keys, bytes) in mapped {
            self.push_encoded(&keys, &bytes)?;
        }
        Ok(())
    }

    /// Flush every file; the directory is then complete for the reduce phase.
    pub fn finish(self) -> Result<Exchange> {
        let io = |e| Error::io(&self.dir, e);
        let mut files = self.parts;
        files.push(self.records);
        files.push(self.index);
        for mut f in files {
            f.flush().map_err(io)?;
        }
        Ok(Exchange {
            dirs: vec![self.dir],
            offset: self.offset,
        })
    }
}

/// A complete exchange directory, ready to reduce.
pub struct Exchange {
    /// Its folders, in position order: the positions of each follow the records of those
    /// before (several tasks' map outputs are reduced in place, never copied into one).
    dirs: Vec<PathBuf>,
    offset: u64,
}

impl Exchange {
    /// Open an exchange directory written by an earlier task; `offset` is the number of
    /// preloaded positions.
    pub fn open(dir: &Path, offset: u64) -> Exchange {
        Exchange::over(vec![dir.to_path_buf()], offset)
    }

    /// Several exchange folders read as one, in order (a preloaded index first, then each
    /// task's map output); `offset`: the preloaded positions.
    pub fn over(dirs: Vec<PathBuf>, offset: u64) -> Exchange {
        Exchange { dirs, offset }
    }

    /// Reduce one partition: read it, sort, and reduce each key group.
    pub fn reduce_partition<G: GlobalStage>(
        &self,
        stage: &G,
        records: &Records<G::Record>,
        p: usize,
    ) -> Result<G::Reduced> {
        let mut entries: Vec<(u128, u64)> = Vec::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let path = dir.join(part_file(p));
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::io(&path, e))?;
            let base = records.first_of(i);
            // A folder's positions name its own records only (a task's map output comes from
            // a shared work folder).
            let count = records.first_of(i + 1) - base;
            for c in bytes.chunks_exact(ENTRY) {
                let mut k = [0u8; 16];
                k.copy_from_slice(&c[..16]);
                let mut v = [0u8; 8];
                v.copy_from_slice(&c[16..]);
                let pos = u64::from_le_bytes(v);
                if pos >= count {
                    return Err(Error::Work {
                        path: path.clone(),
                        message: format!("position {pos} of {count} records: refused"),
                    });
                }
                entries.push((u128::from_le_bytes(k), base + pos));
            }
        }
        entries.sort_unstable();
        let mut out = G::Reduced::default();
        let mut members = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let key = entries[i].0;
            members.clear();
            while i < entries.len() && entries[i].0 == key {
                members.push(entries[i].1);
                i += 1;
            }
            stage.reduce(key, &members, records, &mut out);
        }
        Ok(out)
    }

    /// Reduce every partition in parallel, then finish; decisions about preloaded records are
    /// left out and positions are shifted to this run's.
    pub fn resolve<G: GlobalStage>(&self, stage: &G) -> Result<Decisions> {
        let records = Records::<G::Record>::open_many(&self.dirs)?;
        let parts = (0..PARTITIONS)
            .into_par_iter()
            .map(|p| self.reduce_partition(stage, &records, p))
            .collect::<Result<Vec<_>>>()?;
        let offset = self.offset;
        match stage.finish(parts, &records) {
            Ok(d) => Ok(d.shifted(offset)),
            Err(e) => Err(Error::Stage(e)),
        }
    }

    /// Remove the files this exchange wrote (its first folder; the others are tasks' map
    /// outputs, removed with the work folder).
    pub fn remove(self) {
        if let Some(dir) = self.dirs.first() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One folder's `records.bin` (mapped) and its end offsets.
struct RecordFile {
    map: Option<memmap2::Mmap>,
    ends: Vec<u64>,
}

impl RecordFile {
    fn open(dir: &Path) -> Result<RecordFile> {
        let idx = dir.join("records.idx");
        let mut raw = Vec::new();
        File::open(&idx)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|e| Error::io(&idx, e))?;
        let ends = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let path = dir.join("records.bin");
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        // An empty file cannot be mapped on every platform.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file lives in this run's private `.work` directory (or a task's folder
            // of the run's work folder), is complete (its writer is flushed and dropped, or the
            // task marked it done) and nothing writes to it while it is mapped.
            #[allow(unsafe_code)]
            let m = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            Some(m)
        };
        Ok(RecordFile { map, ends })
    }

    fn bytes(&self, i: usize) -> &[u8] {
        let end = self.ends.get(i).copied().unwrap_or(0) as usize;
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).copied().unwrap_or(0) as usize
        };
        self.map
            .as_ref()
            .and_then(|m| m.get(start..end))
            .unwrap_or(&[])
    }
}

/// Random access to the payloads of an exchange, by position (over one folder or several in
/// order, without copying them into one).
pub struct Records<R> {
    files: Vec<RecordFile>,
    /// The first position of each file.
    firsts: Vec<u64>,
    total: u64,
    _payload: std::marker::PhantomData<fn() -> R>,
}

impl<R: Wire> Records<R> {
    /// Open `records.bin` and `records.idx` in `dir`.
    pub fn open(dir: &Path) -> Result<Records<R>> {
        Records::open_many(&[dir.to_path_buf()])
    }

    /// Several folders' records, in order: positions continue from one to the next.
    pub fn open_many(dirs: &[PathBuf]) -> Result<Records<R>> {
        let mut files = Vec::with_capacity(dirs.len());
        let mut firsts = Vec::with_capacity(dirs.len());
        let mut total = 0u64;
        for d in dirs {
            let f = RecordFile::open(d)?;
            firsts.push(total);
            total += f.ends.len() as u64;
            files.push(f);
        }
        Ok(Records {
            files,
            firsts,
            total,
            _payload: std::marker::PhantomData,
        })
    }

    /// The first position of the `i`-th folder.
    fn first_of(&self, i: usize) -> u64 {
        self.firsts.get(i).copied().unwrap_or(self.total)
    }

    /// How many records (preloaded ones included).
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The raw bytes of one payload (empty when `map` gave none).
    pub fn bytes(&self, pos: u64) -> &[u8] {
        if pos >= self.total {
            return &[];
        }
        let f = self.firsts.partition_point(|&first| first <= pos) - 1;
        self.files[f].bytes((pos - self.firsts[f]) as usize)
    }

    /// The payload of one position, decoded.
    pub fn get(&self, pos: u64) -> Option<R> {
        R::get(self.bytes(pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::split::{Config, Split};

    fn samples(n: usize) -> Vec<(usize, Sample)> {
        (0..n)
            .map(|i| {
                let mut s = Sample::document(format!("s{i}"), format!("text {i}"));
                s.domain = ["finance", "medical"][i % 2].to_string();
                (0, s)
            })
            .collect()
    }

    /// Tasks' map outputs reduced in place (several folders read as one) decide as one
    /// exchange that mapped everything: duplicates across folders are found, and decisions
    /// name the right positions and ids.
    #[test]
    fn folders_read_in_place_decide_as_one_exchange() {
        use crate::stages::exact_dedup::{Config as DedupConfig, ExactDedup};
        let cfg: DedupConfig = toml::from_str("").expect("cfg");
        let dedup = ExactDedup::new(&cfg);
        let dir = tempfile::tempdir().expect("tempdir");
        // 300 samples of 70 distinct texts: duplicates within and across the task folders.
        let data: Vec<(usize, Sample)> = (0..300)
            .map(|i| {
                (
                    0,
                    Sample::document(format!("s{i}"), format!("text {}", i * 13 % 70)),
                )
            })
            .collect();
        let mut w = ExchangeWriter::create(&dedup, &dir.path().join("one")).expect("create");
        w.map(&data).expect("map");
        let together = w
            .finish()
            .expect("finish")
            .resolve(&dedup)
            .expect("resolve");
        assert_eq!(together.len(), 230, "every copy after the first is decided");

        let mut dirs = Vec::new();
        for (t, range) in [0..90, 90..90, 90..250, 250..300].into_iter().enumerate() {
            let d = dir.path().join(format!("task-{t}"));
            let mut w = ExchangeWriter::create_plain(&dedup, &d).expect("create");
            w.map(&data[range]).expect("map");
            drop(w.finish().expect("finish"));
            dirs.push(d);
        }
        let spread = Exchange::over(dirs, 0).resolve(&dedup).expect("resolve");
        assert_eq!(spread, together);
    }

    #[test]
    fn phases_run_from_files_alone_and_partitions_reduce_independently() {
        let cfg: Config = toml::from_str("ratios = { train = 0.8, test = 0.2 }").expect("cfg");
        let split = Split::new(&cfg);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = samples(500);

        // In one go.
        let mut w = ExchangeWriter::create(&split, &dir.path().join("a")).expect("create");
        w.map(&data).expect("map");
        let together = w
            .finish()
            .expect("finish")
            .resolve(&split)
            .expect("resolve");
        assert_eq!(together.len(), 500);

        // Map as two tasks' batches, then reduce from the directory in a "later task", one
        // partition at a time, and finish from the collected results.
        let b = dir.path().join("b");
        let mut w = ExchangeWriter::create(&split, &b).expect("create");
        w.map(&data[..123]).expect("map");
        w.map(&data[123..]).expect("map");
        drop(w.finish().expect("finish"));
        let x = Exchange::open(&b, 0);
        let records = Records::<u64>::open(&b).expect("records");
        assert_eq!(records.len(), 500);
        let parts: Vec<_> = (0..PARTITIONS)
            .rev()
            .map(|p| (p, x.reduce_partition(&split, &records, p).expect("reduce")))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        assert_eq!(split.finish(parts, &records), Ok(together));
        let entries: u64 = (0..PARTITIONS)
            .map(|p| std::fs::metadata(b.join(format!("part-{p:03}.bin"))).map_or(0, |m| m.len()))
            .sum();
        assert_eq!(entries, 500 * ENTRY as u64, "one key per record");
    }
}
