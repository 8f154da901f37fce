//! Where outputs go and how they are published. Every file is written under a temporary name and
//! renamed when complete ([`AtomicFile`]); a whole run is built in a staging directory beside
//! its final place and swapped in at the end ([`RunDir`]), so a crash never leaves a half-written
//! file, or a mix of two runs' files, under the final names.

#![allow(clippy::disallowed_methods)] // this module is where writes are allowed

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Marker file naming a directory as a sluice run, so publishing never replaces anything else.
pub const RUN_MARKER: &str = ".sluice-run";

/// A file written under `<name>.tmp` and renamed to `<name>` by [`AtomicFile::commit`]
/// (the workspace's one writer, [`sluice_shards::atomic`], with this crate's errors).
/// Dropping it uncommitted removes the temporary file.
pub struct AtomicFile(sluice_shards::atomic::AtomicFile);

impl AtomicFile {
    /// Start writing `path` (parent directories are created).
    pub fn create(path: impl Into<PathBuf>) -> Result<AtomicFile> {
        let path = path.into();
        sluice_shards::atomic::AtomicFile::create(&path)
            .map(AtomicFile)
            .map_err(|e| Error::io(&path, e))
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Flush, sync and rename into place.
    pub fn commit(self) -> Result<()> {
        let path = self.0.path().to_path_buf();
        self.0.commit().map_err(|e| Error::io(&path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A file's size and content hash (xxh3-128, hex), read in blocks.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, format!("{:032x}", h.digest128())))
}

/// Write a whole small file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sluice_shards::atomic::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// `rel` inside `dir`, checked to be a regular file (not a link, a folder or a pipe) that is
/// still inside `dir` once links in its folders are resolved: what another task left in a
/// shared work folder, which a less trusted party may be able to write.
pub fn file_within(dir: &Path, rel: &str) -> Result<PathBuf> {
    let path = dir.join(rel);
    let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
    let refuse = |message: String| Error::Work {
        path: path.clone(),
        message,
    };
    if !meta.file_type().is_file() {
        return Err(refuse(
            "not a regular file (a link, a folder or a pipe): refused".into(),
        ));
    }
    // A hard link to a file elsewhere is a regular file too: a task's files have one name.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() != 1 {
            return Err(refuse(format!(
                "has {} names (a hard link): refused",
                meta.nlink()
            )));
        }
    }
    let root = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let real = fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
    if !real.starts_with(&root) {
        return Err(refuse(format!(
            "resolves outside {}: refused",
            dir.display()
        )));
    }
    Ok(path)
}

/// Read `rel` inside `dir`, checked as [`file_within`] does and refused over `cap` bytes (a
/// file from a shared work folder: small by design, and not trusted to stay small).
pub fn read_within(dir: &Path, rel: &str, cap: u64) -> Result<Vec<u8>> {
    let path = file_within(dir, rel)?;
    let size = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    if size > cap {
        return Err(Error::Work {
            path,
            message: format!("{size} bytes, over {cap}: refused"),
        });
    }
    fs::read(&path).map_err(|e| Error::io(&path, e))
}

/// Like [`read_within`], but a missing file is `None`.
pub fn read_within_if_any(dir: &Path, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
    match fs::symlink_metadata(dir.join(rel)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_within(dir, rel, cap).map(Some),
    }
}

/// Like [`file_within`], but a missing file is `None`.
pub fn file_within_if_any(dir: &Path, rel: &str) -> Result<Option<PathBuf>> {
    match fs::symlink_metadata(dir.join(rel)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => file_within(dir, rel).map(Some),
    }
}

/// A scratch file under a run's `.work` directory (exchange partitions, spills that are read back
/// within the same run and removed with it): written in place, never published.
pub fn scratch(path: &Path, buffer: usize) -> Result<BufWriter<File>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    Ok(BufWriter::with_capacity(buffer, file))
}

/// Put a task's finished file into a run's staging folder (its folders are created), keeping
/// the original: a hard link on the same filesystem, else a copy. The work folder keeps its
/// files until the run is published, so a publish that dies half way can be run again.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    Ok(())
}

/// An exclusive lock on `path` (created if missing) for as long as the file is held: another
/// process that tries it fails at once. The operating system releases it when the process
/// ends, however it ends. `Ok(None)`: another process holds it.
pub fn try_lock(path: &Path) -> Result<Option<File>> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    // The lock file sits in a shared work folder: never through a link planted there (that
    // would create or open a file elsewhere).
    let link = |m: &fs::Metadata| !m.file_type().is_file();
    if fs::symlink_metadata(path).is_ok_and(|m| link(&m)) {
        return Err(Error::Work {
            path: path.to_path_buf(),
            message: "not a regular file (a link?): refused".into(),
        });
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    if fs::symlink_metadata(path).is_ok_and(|m| link(&m)) {
        return Err(Error::Work {
            path: path.to_path_buf(),
            message: "not a regular file (a link?): refused".into(),
        });
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// The run key a published run was made under (`RunDir::set_key`), if any.
pub fn published_key(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(RUN_MARKER)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("run-key "))
        .map(str::to_string)
}

/// Rename a finished file into place (same file system).
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(to, e))
}

/// A run being built in `.<name>.staging` beside its final directory.
pub struct RunDir {
    final_dir: PathBuf,
    staging: PathBuf,
}

impl RunDir {
    /// Prepare a fresh staging directory for `final_dir`, refusing to replace a directory that
    /// is not a sluice run.
    pub fn begin(final_dir: &Path) -> Result<RunDir> {
        check_replaceable(final_dir)?;
        let name = final_dir
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        let parent = final_dir.parent().unwrap_or(Path::new("."));
        let staging = parent.join(format!(".{name}.staging"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        write_atomic(&staging.join(RUN_MARKER), b"sluice run directory\n")?;
        Ok(RunDir {
            final_dir: final_dir.to_path_buf(),
            staging,
        })
    }

    /// Record the key of the task-sharded run this is (in its marker file): a publish run again
    /// later finds the run published already.
    pub fn set_key(&self, key: &str) -> Result<()> {
        write_atomic(
            &self.staging.join(RUN_MARKER),
            format!("sluice run directory\nrun-key {key}\n").as_bytes(),
        )
    }

    /// A path inside the run (in staging until published).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.staging.join(rel)
    }

    /// The directory the run will be published to.
    pub fn final_dir(&self) -> &Path {
        &self.final_dir
    }

    /// Swap the staging directory into place; the previous run, if any, is removed.
    pub fn publish(self) -> Result<PathBuf> {
        let dest = self.final_dir.clone();
        self.publish_to(dest)
    }

    /// Publish somewhere else (a failed run goes to `<dir>.failed`, keeping the last good run).
    pub fn publish_to(self, dest: PathBuf) -> Result<PathBuf> {
        check_replaceable(&dest)?;
        let old = if dest.exists() {
            let mut o = dest.clone().into_os_string();
            o.push(".old");
            let o = PathBuf::from(o);
            if o.exists() {
                fs::remove_dir_all(&o).map_err(|e| Error::io(&o, e))?;
            }
            fs::rename(&dest, &o).map_err(|e| Error::io(&dest, e))?;
            Some(o)
        } else {
            None
        };
        fs::rename(&self.staging, &dest).map_err(|e| Error::io(&dest, e))?;
        if let Some(o) = old {
            fs::remove_dir_all(&o).map_err(|e| Error::io(&o, e))?;
        }
        Ok(dest)
    }
}

/// A run that is dropped unpublished (failed, cancelled) leaves no staging folder behind.
impl Drop for RunDir {
    fn drop(&mut self) {
        if self.staging.exists() {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn check_replaceable(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let is_empty = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .next()
        .is_none();
    if dir.is_dir() && (is_empty || dir.join(RUN_MARKER).exists()) {
        return Ok(());
    }
    Err(Error::Output {
        path: dir.to_path_buf(),
        message: "exists and is not a sluice run directory; refusing to replace it (choose another output.dir)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (attacker walk of the phases): a link planted at a lock's name in the work
    /// folder is refused, and the file it points to is not created.
    #[cfg(unix)]
    #[test]
    fn a_lock_is_never_taken_through_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere.txt");
        let lock = dir.path().join("task-00000.lock");
        std::os::unix::fs::symlink(&target, &lock).expect("symlink");
        assert!(try_lock(&lock).is_err());
        assert!(!target.exists(), "nothing created through the link");
        let plain = dir.path().join("publish.lock");
        let held = try_lock(&plain).expect("lock").expect("free");
        assert!(try_lock(&plain).expect("lock").is_none(), "held once");
        drop(held);
        assert!(try_lock(&plain).expect("lock").is_some(), "released");
    }

    #[test]
    fn uncommitted_files_never_appear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a/b.txt");
        {
            let mut f = AtomicFile::create(&p).expect("create");
            f.write_all(b"half").expect("write");
        }
        assert!(!p.exists());
        assert!(!dir.path().join("a/b.txt.tmp").exists());
        let mut f = AtomicFile::create(&p).expect("create");
        f.write_all(b"whole").expect("write");
        f.commit().expect("commit");
        assert_eq!(fs::read(&p).expect("read"), b"whole");
    }

    #[test]
    fn runs_replace_runs_but_not_other_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let r = RunDir::begin(&out).expect("begin");
        write_atomic(&r.path("x.txt"), b"1").expect("write");
        r.publish().expect("publish");
        let r = RunDir::begin(&out).expect("begin again");
        write_atomic(&r.path("y.txt"), b"2").expect("write");
        r.publish().expect("publish again");
        assert!(!out.join("x.txt").exists(), "old run's files are gone");
        assert!(out.join("y.txt").exists());

        // A run given up (failed, cancelled) leaves nothing behind.
        let r = RunDir::begin(&out).expect("begin a third time");
        write_atomic(&r.path("z.txt"), b"3").expect("write");
        let staging = r.path("");
        drop(r);
        assert!(!staging.exists(), "the staging folder is removed");
        assert!(out.join("y.txt").exists(), "the published run stays");

        let other = dir.path().join("precious");
        fs::create_dir_all(&other).expect("mkdir");
        fs::write(other.join("thesis.tex"), b"x").expect("write");
        assert!(RunDir::begin(&other).is_err());
    }
}

/// A place shared files live: a local folder or an object-storage prefix (`s3://…`,
/// `file://…`), behind one API so the engine and the task protocol never ask which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A folder (or file) on a filesystem every task sees.
    Local(PathBuf),
    /// An object-storage URL.
    Remote(String),
}

impl Place {
    /// A URL is remote; anything else is a local path.
    pub fn parse(s: &str) -> Place {
        if crate::remote::is_url(s) {
            Place::Remote(s.trim_end_matches('/').to_string())
        } else {
            Place::Local(PathBuf::from(s))
        }
    }

    /// The place `rel` (slash-separated) below this one.
    pub fn join(&self, rel: &str) -> Place {
        if rel.is_empty() {
            return self.clone();
        }
        match self {
            Place::Local(p) => Place::Local(p.join(rel)),
            Place::Remote(u) => Place::Remote(format!("{u}/{}", rel.trim_start_matches('/'))),
        }
    }

    /// As written in markers and messages.
    pub fn display(&self) -> String {
        match self {
            Place::Local(p) => p.to_string_lossy().into_owned(),
            Place::Remote(u) => u.clone(),
        }
    }

    /// The path errors name (the URL itself for remote places).
    fn error_path(&self) -> PathBuf {
        PathBuf::from(self.display())
    }

    /// Write `bytes` here, whole (atomically on a filesystem; one PUT in object storage).
    pub fn put(&self, bytes: &[u8]) -> Result<()> {
        match self {
            Place::Local(p) => write_atomic(p, bytes),
            Place::Remote(u) => {
                crate::remote::put_bytes(u, bytes.to_vec()).map_err(|e| Error::Output {
                    path: self.error_path(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// The bytes here, or `None` when nothing is.
    pub fn get(&self) -> Result<Option<Vec<u8>>> {
        match self {
            Place::Local(p) => match fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(p, e)),
            },
            Place::Remote(u) => crate::remote::get_bytes(u).map_err(|e| Error::Output {
                path: self.error_path(),
                message: e.to_string(),
            }),
        }
    }

    /// Make the named files of the local folder `from` available here (nothing to do when
    /// this is that folder).
    pub fn put_files(&self, from: &Path, names: &[String]) -> Result<()> {
        match self {
            Place::Local(p) if p == from => Ok(()),
            Place::Local(p) => {
                for n in names {
                    let file = from.join(n);
                    let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
                    write_atomic(&p.join(n), &bytes)?;
                }
                Ok(())
            }
            Place::Remote(u) => {
                crate::remote::put_files(from, names, u).map_err(|e| Error::Output {
                    path: self.error_path(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// A local folder holding what is here: this folder itself, or a copy fetched into
    /// `cache` (replaced).
    pub fn local_dir(&self, cache: &Path) -> Result<PathBuf> {
        match self {
            Place::Local(p) => Ok(p.clone()),
            Place::Remote(u) => {
                if cache.exists() {
                    fs::remove_dir_all(cache).map_err(|e| Error::io(cache, e))?;
                }
                crate::remote::get_dir(u, cache).map_err(|e| Error::Output {
                    path: self.error_path(),
                    message: e.to_string(),
                })?;
                Ok(cache.to_path_buf())
            }
        }
    }

    /// Remove everything here (best effort).
    pub fn remove_all(&self) {
        match self {
            Place::Local(p) => {
                let _ = fs::remove_dir_all(p);
            }
            Place::Remote(u) => {
                let _ = crate::remote::delete_prefix(u);
            }
        }
    }
}

#[cfg(test)]
mod place_tests {
    use super::*;

    /// Regression (attacker walks of #21): what a task left in the shared work folder is read
    /// only as a plain file of one name inside its folder.
    #[cfg(unix)]
    #[test]
    fn only_plain_files_inside_the_folder_are_taken() {
        #![allow(clippy::disallowed_methods)] // fixtures
        let dir = tempfile::tempdir().expect("tempdir");
        let task = dir.path().join("task");
        std::fs::create_dir_all(task.join("out")).expect("mkdir");
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "secret").expect("write");
        std::fs::write(task.join("out/ok.jsonl"), "{}").expect("write");
        assert!(file_within(&task, "out/ok.jsonl").is_ok());
        std::os::unix::fs::symlink(&secret, task.join("link")).expect("symlink");
        std::fs::hard_link(&secret, task.join("hard")).expect("hard link");
        std::os::unix::fs::symlink(dir.path(), task.join("elsewhere")).expect("symlink");
        for bad in ["link", "hard", "elsewhere/secret.txt", "out"] {
            let e = file_within(&task, bad).expect_err(bad);
            assert!(e.to_string().contains("refused"), "{bad}: {e}");
        }
        assert!(file_within_if_any(&task, "missing")
            .expect("missing")
            .is_none());
    }

    #[test]
    fn a_local_place_reads_writes_and_shares_like_a_remote_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Place::parse(&dir.path().to_string_lossy());
        assert_eq!(root, Place::Local(dir.path().to_path_buf()));
        let marker = root.join("markers/map-0/task-00001.done");
        assert_eq!(marker.get().expect("get"), None);
        marker.put(b"{}").expect("put");
        assert_eq!(marker.get().expect("get").as_deref(), Some(&b"{}"[..]));
        let own = dir.path().join("own");
        write_atomic(&own.join("a.bin"), b"a").expect("w");
        let shared = root.join("shared");
        shared.put_files(&own, &["a.bin".into()]).expect("share");
        assert_eq!(
            shared.local_dir(&dir.path().join("cache")).expect("dir"),
            dir.path().join("shared")
        );
        assert_eq!(fs::read(dir.path().join("shared/a.bin")).expect("r"), b"a");
        Place::Local(own.clone())
            .put_files(&own, &["a.bin".into()])
            .expect("same folder");
        assert_eq!(
            Place::parse("s3://bucket/work/").join("markers"),
            Place::Remote("s3://bucket/work/markers".into())
        );
        shared.remove_all();
        assert!(!dir.path().join("shared").exists());
    }
}
