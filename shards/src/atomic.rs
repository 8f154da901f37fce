//! The one temp-then-rename writer of the workspace: the pipeline's outputs, the shards and the
//! trainer's checkpoints are all published through it. A file is written as `<name>.tmp`,
//! synced, renamed to `<name>`, and its folder synced, so a crash leaves either the old file or
//! the new one under the final name, never half of one. (This crate is the lowest one every
//! writer depends on, and has no heavy dependencies.)

#![allow(clippy::disallowed_methods)] // this module is where published files are written

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary name of `path`: `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// A file written under `<name>.tmp` and renamed to `<name>` by [`AtomicFile::commit`].
/// Dropping it uncommitted removes the temporary file.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Start writing `path` (its parent folders are created).
    pub fn create(path: impl Into<PathBuf>) -> io::Result<AtomicFile> {
        let path = path.into();
        let tmp = tmp_path(&path);
        AtomicFile::create_at(path, tmp)
    }

    /// Like [`AtomicFile::create`], under a temporary name of this writer alone
    /// (`<name>.<pid>-<n>.tmp`): for a file that several processes may write at once (the same
    /// bytes, in a shared folder), where a shared `<name>.tmp` would let one writer remove or
    /// rename another's half-written file.
    pub fn create_unique(path: impl Into<PathBuf>) -> io::Result<AtomicFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = path.into();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        AtomicFile::create_at(path, PathBuf::from(tmp))
    }

    fn create_at(path: PathBuf, tmp: PathBuf) -> io::Result<AtomicFile> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        // A fresh file, never one a link points to: a stale `<name>.tmp` (or a link planted
        // there) is removed, and the new one is created exclusively (O_EXCL does not follow
        // links).
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(AtomicFile {
            path,
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary path being written.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Flush, sync and rename into place.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        rename_synced(&self.tmp, &self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.as_mut() {
            Some(o) => o.write(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.write_all(buf),
            None => Err(io::Error::other("file already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write a whole file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Whole small files (markers, counts, decisions) may be written by two processes at once.
    let mut f = AtomicFile::create_unique(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Publish a file that something else wrote completely at `tmp` (a library that writes to a
/// path of its own, like safetensors): sync it, rename it to `path`, sync the folder.
pub fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    rename_synced(tmp, path)
}

/// Rename, then sync the folder so the rename itself survives a crash (where the platform
/// allows opening a folder; elsewhere the rename is what there is).
fn rename_synced(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (attacker walk of #21): a link planted at `<name>.tmp` in a shared folder
    /// made the writer overwrite the file it pointed to.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"keep me").expect("write");
        let path = dir.path().join("marker.json");
        std::os::unix::fs::symlink(&victim, tmp_path(&path)).expect("symlink");
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"{}").expect("write");
        f.commit().expect("commit");
        assert_eq!(fs::read(&victim).expect("read"), b"keep me");
        assert_eq!(fs::read(&path).expect("read"), b"{}");
    }

    /// Two processes that finish the same step write the same file at once: each write is
    /// whole, and neither fails (a shared `<name>.tmp` made the second fail, or rename the
    /// first's half-written file).
    #[test]
    fn writers_of_one_file_at_once_do_not_meet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("decisions.json");
        let a = vec![b'a'; 1 << 16];
        let b = vec![b'b'; 1 << 16];
        std::thread::scope(|s| {
            for bytes in [&a, &b] {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..200 {
                        write_atomic(path, bytes).expect("write");
                    }
                });
            }
        });
        let got = fs::read(&path).expect("read");
        assert!(got == a || got == b, "a whole file");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/out.bin");
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"half").expect("write");
        assert!(!path.exists(), "nothing under the final name before commit");
        drop(f);
        assert!(
            !path.exists() && !tmp_path(&path).exists(),
            "dropped: no trace"
        );
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"whole").expect("write");
        f.commit().expect("commit");
        assert_eq!(fs::read(&path).expect("read"), b"whole");
        write_atomic(&path, b"again").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"again");
        fs::write(tmp_path(&path), b"by a library").expect("w");
        publish(&tmp_path(&path), &path).expect("publish");
        assert_eq!(fs::read(&path).expect("read"), b"by a library");
        assert!(!tmp_path(&path).exists());
    }
}
