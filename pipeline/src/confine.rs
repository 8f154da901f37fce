//! Where a pipeline may read and write, and bounded glob expansion.
//!
//! `sluice run` trusts its pipeline file: it is the user's own. The service does not: a
//! submitted pipeline is compiled with a [`Confinement`], and every path it names (inputs,
//! every stage's files and folders, the shards' tokenizer and template, the catalog's
//! tokenizer, the output) is resolved (`..` and symlinks) and checked before anything is
//! opened, listed or fetched: reads inside the data roots or the bundled `rules/` and
//! `sensitive_words/`, writes inside the job's own folders, URLs only under allowed prefixes.
//!
//! Globs expand lazily, one directory at a time: `**` never descends through a symbolic link
//! (so a link loop cannot grow a walk), every match is checked where it really lies, and the
//! walk stops with an error past a number of matches or visited entries, or when cancelled.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The prefix that names a file shipped with sluice: `sluice:sensitive_words`,
/// `sluice:rules/business/ai_sales.toml`.
pub const BUNDLED_PREFIX: &str = "sluice:";

/// Folders of the bundled root that pipelines may read.
pub const BUNDLED_DIRS: [&str; 2] = ["rules", "sensitive_words"];

/// The folder holding the bundled `rules/` and `sensitive_words/`: `SLUICE_HOME`, else
/// `/opt/sluice` (the container image), else the folders above the executable, else the
/// source tree sluice was built from.
pub fn bundled_root() -> Option<PathBuf> {
    let has = |p: &Path| p.join("rules").is_dir() && p.join("sensitive_words").is_dir();
    if let Some(h) = std::env::var_os("SLUICE_HOME").map(PathBuf::from) {
        return has(&h).then_some(h);
    }
    let image = PathBuf::from("/opt/sluice");
    if has(&image) {
        return Some(image);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(found) = exe.ancestors().skip(1).take(4).find(|p| has(p)) {
            return Some(found.to_path_buf());
        }
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    has(&source).then_some(source)
}

/// A path as a pipeline names it, located: `sluice:NAME` is NAME under the bundled root, a
/// relative path is relative to `base`.
pub fn resolve(base: &Path, named: &Path) -> PathBuf {
    let text = named.to_string_lossy();
    if let Some(rest) = text.strip_prefix(BUNDLED_PREFIX) {
        let root = bundled_root().unwrap_or_else(|| PathBuf::from("/nonexistent/sluice-home"));
        return lexical_normalize(&root.join(rest.trim_start_matches('/')));
    }
    base.join(named)
}

/// `a/b/../c` → `a/c` without touching the file system (the path may not exist yet).
pub fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::ParentDir if out.has_root() => {} // `/..` is `/`
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Where a path really lies, as the kernel would open it: symbolic links and `..` resolved in
/// order (`link/../x` is `x` beside the link's target, not beside the link). A path whose tail
/// does not exist yet is judged by its nearest existing ancestor; a missing tail may not hold
/// `..`. `None`: it cannot be resolved.
pub fn real_path(p: &Path) -> Option<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let mut tail = Vec::new();
    let mut cur = p.as_path();
    loop {
        match cur.components().next_back()? {
            Component::Normal(name) => tail.push(name.to_os_string()),
            Component::CurDir => {}
            _ => return None, // `..` (or the root) in a part that does not exist
        }
        cur = cur.parent()?;
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for n in tail.iter().rev() {
                out.push(n);
            }
            return Some(out);
        }
    }
}

/// What a pipeline does with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads one file.
    Read,
    /// Lists a folder and reads the files in it.
    ReadDir,
    /// Creates or writes (a file or a folder).
    Write,
}

/// A path a stage names, with the key it stands under.
#[derive(Debug, Clone)]
pub struct NamedPath {
    /// The stage's field (`profiles`, `rules`, `files[1]`).
    pub field: String,
    /// The path, already resolved against the pipeline's folder.
    pub path: PathBuf,
    /// What the stage does with it.
    pub access: Access,
}

impl NamedPath {
    /// A path named by `field`.
    pub fn new(field: impl Into<String>, path: &Path, access: Access) -> NamedPath {
        NamedPath {
            field: field.into(),
            path: path.to_path_buf(),
            access,
        }
    }
}

/// A path that a confined pipeline may not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The key that names it (`stages[2].profiles`, `inputs[0].paths`).
    pub key: String,
    /// Why, naming the path as the pipeline spelled it (never anything read from it).
    pub message: String,
}

/// Where a confined pipeline may read, write and fetch.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    read_roots: Vec<PathBuf>,
    write_roots: Vec<PathBuf>,
    allowed_urls: Vec<String>,
}

impl Confinement {
    /// Reads inside `read_roots` (and the bundled `rules/` and `sensitive_words/`), writes
    /// inside `write_roots`, URLs under `allowed_urls` prefixes. Roots are resolved here.
    pub fn new(read_roots: &[PathBuf], write_roots: &[PathBuf], allowed_urls: &[String]) -> Self {
        let mut reads: Vec<PathBuf> = read_roots.iter().filter_map(|r| real_path(r)).collect();
        if let Some(b) = bundled_root() {
            reads.extend(BUNDLED_DIRS.iter().filter_map(|d| real_path(&b.join(d))));
        }
        Confinement {
            read_roots: reads,
            write_roots: write_roots.iter().filter_map(|r| real_path(r)).collect(),
            allowed_urls: allowed_urls.to_vec(),
        }
    }

    /// The folders reads may lie in (resolved).
    pub fn read_roots(&self) -> Vec<PathBuf> {
        self.read_roots.clone()
    }

    /// Whether `p` may be used as `access`; `shown` is how the pipeline spelled it.
    pub fn check(&self, key: &str, p: &Path, shown: &str, access: Access) -> Result<(), Forbidden> {
        let forbid = |message: String| Forbidden {
            key: key.to_string(),
            message,
        };
        let roots = match access {
            Access::Write => &self.write_roots,
            Access::Read | Access::ReadDir => &self.read_roots,
        };
        let inside = |real: &Path| roots.iter().any(|r| real.starts_with(r));
        // Code may open the path as written (the kernel resolves `link/..` through the link)
        // or folded lexically: both readings must lie inside.
        let lexical = real_path(&lexical_normalize(p)).filter(|r| inside(r));
        let Some(real) = real_path(p).filter(|r| inside(r) && lexical.is_some()) else {
            return Err(forbid(match access {
                Access::Write => format!("{shown} is outside the job's output folder"),
                _ => format!("{shown} is outside the data roots"),
            }));
        };
        if access == Access::ReadDir && real.is_dir() {
            // The files a stage reads from a folder must lie inside too (no link out).
            let entries =
                std::fs::read_dir(&real).map_err(|_| forbid(format!("{shown}: cannot list")))?;
            for e in entries.take(100_000).flatten() {
                let ok = e.path().canonicalize().is_ok_and(|c| inside(&c));
                if !ok && e.path().exists() {
                    return Err(forbid(format!(
                        "{shown}/{} links outside the data roots",
                        e.file_name().to_string_lossy()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether a URL may be listed, fetched or written: it must lie under an allowed prefix
    /// (at a `/` boundary) and hold no `..` or encoded dots.
    pub fn check_url(&self, key: &str, url: &str) -> Result<(), Forbidden> {
        let lower = url.to_ascii_lowercase();
        let sneaky = lower.contains("%2e") || lower.contains("%2f") || lower.contains('\\');
        let dotted = url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.split('/').any(|s| s == ".." || s == "."));
        let under = |prefix: &String| {
            url.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
            })
        };
        if sneaky || dotted || !self.allowed_urls.iter().any(under) {
            return Err(Forbidden {
                key: key.to_string(),
                message: format!(
                    "{url} is not under an allowed URL prefix (server.toml allowed_urls)"
                ),
            });
        }
        Ok(())
    }
}

/// Limits of one glob expansion.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most files one pattern may match.
    pub max_files: usize,
    /// Stop when set (a cancelled job, a stopping server).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 1_000_000,
            cancel: None,
        }
    }
}

/// Why a glob could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobError {
    /// A match lies outside the confinement.
    Forbidden(String),
    /// The pattern is malformed, too broad, or the walk was stopped.
    Invalid(String),
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand one path or glob relative to `base`, sorted; each file with the name it is shown
/// under (relative to `base` when inside it). Under a confinement every match must lie
/// inside the read roots.
pub fn expand(
    base: &Path,
    pattern: &str,
    limits: &Limits,
    confine: Option<&Confinement>,
) -> Result<Vec<(PathBuf, String)>, GlobError> {
    let check = |p: &Path, shown: &str| match confine {
        None => Ok(()),
        Some(c) => c
            .check("", p, shown, Access::Read)
            .map_err(|f| GlobError::Forbidden(f.message)),
    };
    let shown_of = |p: &Path| {
        p.strip_prefix(base).map_or_else(
            |_| p.to_string_lossy().into_owned(),
            |r| r.to_string_lossy().into_owned(),
        )
    };
    if !is_glob(pattern) {
        let full = base.join(pattern);
        check(&full, pattern)?;
        return if full.is_file() {
            Ok(vec![(full, pattern.to_string())])
        } else if full.is_dir() {
            Err(GlobError::Invalid(format!(
                "{pattern:?} is a directory: use a glob such as \"{pattern}/*.jsonl\""
            )))
        } else {
            Ok(vec![])
        };
    }
    // The literal folder before the first wildcard, then one pattern per component.
    let full = base.join(pattern);
    let mut root = PathBuf::new();
    let mut parts: Vec<String> = Vec::new();
    for c in full.components() {
        let s = c.as_os_str().to_string_lossy().into_owned();
        if parts.is_empty() && !is_glob(&s) {
            root.push(c);
        } else if c == Component::ParentDir || c == Component::CurDir {
            return Err(GlobError::Invalid(format!(
                "{pattern:?}: `..` and `.` may not follow a wildcard"
            )));
        } else {
            parts.push(s);
        }
    }
    // Checked as written (the kernel reading and the folded one), walked as folded.
    let raw_root = root;
    let root = lexical_normalize(&raw_root);
    if confine.is_some() {
        let shown = root.strip_prefix(base).map_or_else(
            |_| root.to_string_lossy().into_owned(),
            |r| r.to_string_lossy().into_owned(),
        );
        check(&raw_root, if shown.is_empty() { "." } else { &shown })?;
    }
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut matchers = Vec::new();
    for p in &parts {
        if p == "**" {
            matchers.push(None);
        } else {
            let m = glob::Pattern::new(p)
                .map_err(|e| GlobError::Invalid(format!("invalid glob {pattern:?}: {e}")))?;
            matchers.push(Some(m));
        }
    }
    let max_visits = limits.max_files.saturating_mul(10).max(100_000);
    let mut visits = 0usize;
    let mut out: Vec<PathBuf> = Vec::new();
    // (folder, index of the next component to match in it)
    let mut stack: Vec<(PathBuf, usize)> = vec![(root, 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, at)) = stack.pop() {
        if !seen.insert((dir.clone(), at)) {
            continue;
        }
        let last = at + 1 == matchers.len();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        if matchers[at].is_none() {
            // `**`: zero folders here, or one more real (not linked) folder down.
            if at + 1 < matchers.len() {
                stack.push((dir.clone(), at + 1));
            }
        }
        for e in entries {
            visits += 1;
            if visits.is_multiple_of(1024) {
                if limits
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::SeqCst))
                {
                    return Err(GlobError::Invalid(format!(
                        "expanding {pattern:?} was cancelled"
                    )));
                }
                if visits > max_visits {
                    return Err(GlobError::Invalid(format!(
                        "{pattern:?} walks more than {max_visits} entries: narrow the pattern"
                    )));
                }
            }
            let Ok(e) = e else { continue };
            let Ok(kind) = e.file_type() else { continue };
            let path = e.path();
            match &matchers[at] {
                None => {
                    if kind.is_dir() {
                        stack.push((path.clone(), at));
                    }
                    if last && (kind.is_file() || kind.is_symlink()) && path.is_file() {
                        out.push(path);
                    }
                }
                Some(m) => {
                    if !m.matches_with(&e.file_name().to_string_lossy(), opts) {
                        continue;
                    }
                    if last {
                        if path.is_file() {
                            out.push(path);
                        }
                    } else if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
                        // A named component may pass through a link (bounded by the
                        // pattern's length); `**` never does. Under a confinement, a link out
                        // of the roots is not entered: its listing would say what is there.
                        let out_of_roots = kind.is_symlink()
                            && confine
                                .is_some_and(|c| c.check("", &path, "", Access::Read).is_err());
                        if !out_of_roots {
                            stack.push((path, at + 1));
                        }
                    }
                }
            }
            if out.len() > limits.max_files {
                return Err(GlobError::Invalid(format!(
                    "{pattern:?} matches more than {} files (the limit): narrow the pattern",
                    limits.max_files
                )));
            }
        }
    }
    out.sort();
    out.dedup();
    let mut found = Vec::with_capacity(out.len());
    for p in out {
        let shown = shown_of(&p);
        check(&p, &shown)?;
        found.push((p, shown));
    }
    Ok(found)
}

/// Open a file for reading; with `roots`, the file opened (not the path, which may have been
/// swapped for a link since it was checked) must lie inside one of them: on Linux its real
/// path is read from `/proc/self/fd`, elsewhere the path is resolved again after the open.
pub fn open_confined(path: &Path, roots: Option<&[PathBuf]>) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let Some(roots) = roots else {
        return Ok(file);
    };
    #[cfg(target_os = "linux")]
    let real = {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| path.canonicalize())
    };
    #[cfg(not(target_os = "linux"))]
    let real = path.canonicalize();
    match real {
        Ok(r) if roots.iter().any(|root| r.starts_with(root)) => Ok(file),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the file opened lies outside the data roots (the path changed after it was checked)",
        )),
    }
}

/// A text file read through [`open_confined`].
pub fn read_to_string_within(path: &Path, roots: Option<&[PathBuf]>) -> std::io::Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open_confined(path, roots)?, &mut text)?;
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // fixtures
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, "{}\n").expect("write");
    }

    #[test]
    fn globs_match_like_the_glob_crate_and_stay_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for f in [
            "a.jsonl",
            "b.jsonl",
            "c.csv",
            "x/d.jsonl",
            "x/y/e.jsonl",
            ".h.jsonl",
        ] {
            touch(&d.join(f));
        }
        let names = |pat: &str| -> Vec<String> {
            expand(d, pat, &Limits::default(), None)
                .expect("expand")
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        };
        assert_eq!(names("*.jsonl"), [".h.jsonl", "a.jsonl", "b.jsonl"]);
        assert_eq!(
            names("**/*.jsonl"),
            [".h.jsonl", "a.jsonl", "b.jsonl", "x/d.jsonl", "x/y/e.jsonl"]
        );
        assert_eq!(names("x/*/*.jsonl"), ["x/y/e.jsonl"]);
        assert_eq!(names("[ab].jsonl"), ["a.jsonl", "b.jsonl"]);
        assert_eq!(names("c.csv"), ["c.csv"]);
        assert!(names("missing/*.jsonl").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn link_loops_do_not_grow_a_walk_and_limits_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        touch(&d.join("data/a/f.jsonl"));
        std::os::unix::fs::symlink(d.join("data"), d.join("data/a/loop")).expect("link");
        std::os::unix::fs::symlink(d.join("data/a"), d.join("data/a/loop2")).expect("link");
        let found = expand(d, "data/**/*", &Limits::default(), None).expect("expand");
        let names: Vec<_> = found.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(names, ["data/a/f.jsonl"]);
        for i in 0..20 {
            touch(&d.join(format!("many/{i}.jsonl")));
        }
        let small = Limits {
            max_files: 10,
            cancel: None,
        };
        let err = expand(d, "many/*.jsonl", &small, None).expect_err("too many");
        assert!(
            matches!(&err, GlobError::Invalid(m) if m.contains("more than 10")),
            "{err:?}"
        );
    }

    #[test]
    fn a_cancel_stops_a_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..1500 {
            touch(&dir.path().join(format!("d/{i}.jsonl")));
        }
        let stop = Limits {
            max_files: 1_000_000,
            cancel: Some(Arc::new(AtomicBool::new(true))),
        };
        let err = expand(dir.path(), "d/*.jsonl", &stop, None).expect_err("cancelled");
        assert!(
            matches!(&err, GlobError::Invalid(m) if m.contains("cancelled")),
            "{err:?}"
        );
        let go = expand(dir.path(), "d/*.jsonl", &Limits::default(), None).expect("expand");
        assert_eq!(go.len(), 1500);
    }

    #[cfg(unix)]
    #[test]
    fn confined_paths_stay_inside_their_roots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        touch(&d.join("data/in.jsonl"));
        touch(&d.join("outside/secret.jsonl"));
        std::os::unix::fs::symlink(d.join("outside/secret.jsonl"), d.join("data/link.jsonl"))
            .expect("link");
        std::fs::create_dir_all(d.join("job")).expect("job");
        let c = Confinement::new(&[d.join("data")], &[d.join("job")], &[]);
        let base = d.join("data");
        let read = |p: &str| c.check("k", &resolve(&base, Path::new(p)), p, Access::Read);
        assert!(read("in.jsonl").is_ok());
        assert!(read("../outside/secret.jsonl").is_err());
        assert!(read("/etc/passwd").is_err());
        assert!(read("link.jsonl").is_err());
        assert!(read("new/not/yet.jsonl").is_ok());
        assert!(read("sub/../../outside/secret.jsonl").is_err());
        // A link to a folder outside, then `..`: the kernel lands outside, whatever a lexical
        // fold says (and whether or not the file exists).
        std::os::unix::fs::symlink(d.join("outside"), d.join("data/out_link")).expect("link");
        std::fs::create_dir_all(d.join("outside/sub")).expect("mkdir");
        std::os::unix::fs::symlink(d.join("outside/sub"), d.join("data/sub_link")).expect("link");
        assert!(read("out_link/../in.jsonl").is_err());
        assert!(read("sub_link/../secret.jsonl").is_err());
        assert!(read("sub_link/../missing.jsonl").is_err());
        assert!(c
            .check("k", &d.join("data/sub_link/.."), "p", Access::ReadDir)
            .is_err());
        assert!(matches!(
            expand(&base, "sub_link/../*.jsonl", &Limits::default(), Some(&c)),
            Err(GlobError::Forbidden(_))
        ));
        let write = |p: &Path| c.check("k", p, "p", Access::Write);
        assert!(write(&d.join("job/index")).is_ok());
        assert!(write(&d.join("data/index")).is_err());
        assert!(write(&d.join("job/../data/x")).is_err());
        let err = expand(&base, "*.jsonl", &Limits::default(), Some(&c)).expect_err("link out");
        assert!(matches!(err, GlobError::Forbidden(_)));
        assert!(matches!(
            expand(&base, "../outside/*.jsonl", &Limits::default(), Some(&c)),
            Err(GlobError::Forbidden(_))
        ));
        assert!(matches!(
            expand(&base, "/**/*.jsonl", &Limits::default(), Some(&c)),
            Err(GlobError::Forbidden(_))
        ));
        // A wildcard never lists a folder outside through a link (the names there would leak
        // as 403 messages): the link is passed over.
        std::os::unix::fs::symlink(d.join("outside"), d.join("data/dirlink")).expect("link");
        let found = expand(&base, "*/*.jsonl", &Limits::default(), Some(&c)).expect("expand");
        assert!(found.is_empty(), "{found:?}");
        // URLs: only under an allowed prefix, at a `/` boundary, without dot segments.
        let c = Confinement::new(&[], &[], &["s3://logs/team-a".to_string()]);
        assert!(c.check_url("k", "s3://logs/team-a/x.jsonl").is_ok());
        assert!(c.check_url("k", "s3://logs/team-ab/x.jsonl").is_err());
        assert!(c.check_url("k", "s3://logs/team-a/../team-b/x").is_err());
        assert!(c
            .check_url("k", "s3://logs/team-a/%2e%2e/team-b/x")
            .is_err());
        assert!(c.check_url("k", "file:///etc/passwd").is_err());
    }
}
