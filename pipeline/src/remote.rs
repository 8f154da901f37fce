//! Object storage through the `object_store` crate: inputs, outputs and shared work folders
//! at URLs (`s3://bucket/prefix`, `file:///abs/path`) beside plain local paths.
//!
//! - Inputs: a URL pattern (`s3://logs/2026/*.jsonl.gz`) is listed and each matching object
//!   fetched into a local cache keyed by URL, size and ETag (a re-run fetches nothing new);
//!   readers then see local files, and reports show the URLs.
//! - Outputs: the run is built and published locally in a staging folder, then every file is
//!   uploaded under the URL and `_SUCCESS` is written last: a consumer that sees `_SUCCESS`
//!   sees a whole run (object stores have no atomic rename).
//!
//! S3 settings come from the environment as the AWS tools read them: `AWS_ENDPOINT` (or
//! `AWS_ENDPOINT_URL`) for S3-compatible servers, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for plain-HTTP endpoints.

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What went wrong with object storage: which URL or file, doing what, and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A URL or pattern that cannot be used (unparseable, no bucket, a bad glob).
    #[error("{url}: {message}")]
    BadUrl {
        /// As written.
        url: String,
        /// Why.
        message: String,
    },
    /// A scheme other than `s3://` and `file://`.
    #[error("{url}: storage scheme {scheme:?} is not supported (s3:// and file:// are)")]
    Unsupported {
        /// As written.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The store refused or failed an operation.
    #[error("{doing} {url}: {source}")]
    Store {
        /// What was being done (`listing`, `reading`, `uploading`, …).
        doing: &'static str,
        /// The object or prefix.
        url: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file of the cache or of an upload.
    #[error("{path}: {source}", path = .path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The storage runtime could not start.
    #[error("cannot start the storage runtime: {0}")]
    Runtime(String),
}

impl RemoteError {
    fn url(url: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::BadUrl {
            url: url.to_string(),
            message: e.to_string(),
        }
    }

    fn store(
        doing: &'static str,
        url: impl std::fmt::Display,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> RemoteError {
        RemoteError::Store {
            doing,
            url: url.to_string(),
            source: e.into(),
        }
    }

    fn local(path: &Path, source: std::io::Error) -> RemoteError {
        RemoteError::Local {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Results of object storage.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// Whether a path in a config or on the command line is a URL.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// The process's one storage runtime (two worker threads), started on first use; every call
/// blocks on it rather than starting a runtime of its own.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sluice-storage")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| RemoteError::Runtime(e.clone()))
}

/// The process's clients, one per bucket and settings (and one for `file://`), built on first
/// use: a client keeps its connection pool and credentials between calls.
fn client(
    key: &str,
    build: impl FnOnce() -> Result<Arc<dyn ObjectStore>>,
) -> Result<Arc<dyn ObjectStore>> {
    type Clients = Mutex<HashMap<String, Arc<dyn ObjectStore>>>;
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(c) = clients.lock().ok().and_then(|m| m.get(key).cloned()) {
        return Ok(c);
    }
    let c = build()?;
    if let Ok(mut m) = clients.lock() {
        m.entry(key.to_string()).or_insert_with(|| c.clone());
    }
    Ok(c)
}

/// The store and the path within it that a URL names.
pub fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath)> {
    let parsed = url::Url::parse(url).map_err(|e| RemoteError::url(url, e))?;
    match parsed.scheme() {
        "s3" | "s3a" => {
            let bucket = parsed
                .host_str()
                .ok_or_else(|| RemoteError::url(url, "no bucket"))?;
            // The settings are part of the key: a process whose environment changes (tests
            // with several endpoints) never reuses a client built for other settings.
            let settings: Vec<String> = [
                "AWS_ENDPOINT",
                "AWS_ENDPOINT_URL",
                "AWS_REGION",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_ALLOW_HTTP",
            ]
            .iter()
            .map(|k| std::env::var(k).unwrap_or_default())
            .collect();
            let key = format!("s3://{bucket}\n{}", settings.join("\n"));
            let store = client(&key, || {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                // AWS_ENDPOINT_URL is what the AWS CLI reads; object_store reads AWS_ENDPOINT.
                if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
                    b = b.with_endpoint(e);
                }
                Ok(Arc::new(b.build().map_err(|e| RemoteError::url(url, e))?))
            })?;
            let path =
                ObjPath::from_url_path(parsed.path()).map_err(|e| RemoteError::url(url, e))?;
            Ok((store, path))
        }
        "file" => {
            let path =
                ObjPath::from_url_path(parsed.path()).map_err(|e| RemoteError::url(url, e))?;
            let store = client("file://", || {
                Ok(Arc::new(object_store::local::LocalFileSystem::new()))
            })?;
            Ok((store, path))
        }
        other => Err(RemoteError::Unsupported {
            url: url.to_string(),
            scheme: other.to_string(),
        }),
    }
}

/// Where fetched inputs and staged outputs live locally: `SLUICE_CACHE`, else a folder in
/// the system's temporary directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SLUICE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-cache"))
}

fn hex(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The local staging folder of an output URL.
pub fn staging_dir(url: &str) -> PathBuf {
    cache_dir().join("staging").join(hex(url.as_bytes()))
}

/// List the objects a URL pattern matches (glob characters in the last part(s) only), sorted,
/// and fetch each into the cache. Returns (local path, URL) pairs.
pub fn fetch(pattern: &str) -> Result<Vec<(PathBuf, String)>> {
    let glob_at = pattern.find(['*', '?', '[']);
    let (base, prefix) = match glob_at {
        Some(i) => {
            let cut = pattern[..i].rfind('/').map_or(0, |j| j + 1);
            (&pattern[..cut], &pattern[cut..])
        }
        None => (pattern, ""),
    };
    let (store, root) = open(base.trim_end_matches('/'))?;
    let rt = runtime()?;
    let matcher = if prefix.is_empty() {
        None
    } else {
        Some(
            glob::Pattern::new(prefix)
                .map_err(|e| RemoteError::url(pattern, format!("invalid glob: {e}")))?,
        )
    };
    let mut metas = rt
        .block_on(async {
            if matcher.is_none() {
                // A single object.
                return store
                    .head(&root)
                    .await
                    .map(|m| vec![m])
                    .or_else(|e| match e {
                        object_store::Error::NotFound { .. } => Ok(vec![]),
                        e => Err(e),
                    });
            }
            store.list(Some(&root)).try_collect::<Vec<_>>().await
        })
        .map_err(|e| RemoteError::store("listing", pattern, e))?;
    let root_s = root.to_string();
    metas.retain(|m| {
        let key = m.location.to_string();
        let rel = key
            .strip_prefix(&root_s)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&key);
        matcher.as_ref().is_none_or(|g| g.matches(rel))
    });
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let scheme_host = &base[..base.find("://").map_or(0, |i| i + 3)];
    let bucket = base[scheme_host.len()..].split('/').next().unwrap_or("");
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        let url = if scheme_host.starts_with("file") {
            format!("file:///{}", m.location)
        } else {
            format!("{scheme_host}{bucket}/{}", m.location)
        };
        let name = m.location.filename().unwrap_or("object").to_string();
        let tag = format!("{url}\n{}\n{}", m.size, m.e_tag.clone().unwrap_or_default());
        let local = cache_dir()
            .join("objects")
            .join(hex(tag.as_bytes()))
            .join(&name);
        if !local.is_file() {
            fetch_one(rt, &*store, &m.location, &local)?;
        }
        out.push((local, url));
    }
    Ok(out)
}

fn fetch_one(
    rt: &tokio::runtime::Runtime,
    store: &dyn ObjectStore,
    at: &ObjPath,
    local: &Path,
) -> Result<()> {
    // The cache is published like every other file: written under a temporary name, synced,
    // renamed ([`sluice_shards::atomic`]).
    let mut f = sluice_shards::atomic::AtomicFile::create(local)
        .map_err(|e| RemoteError::local(local, e))?;
    rt.block_on(async {
        let mut stream = store.get(at).await?.into_stream();
        while let Some(chunk) = stream.try_next().await? {
            f.write_all(&chunk)
                .map_err(|e| object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })?;
        }
        Ok::<(), object_store::Error>(())
    })
    .map_err(|e| RemoteError::store("fetching", at, e))?;
    f.commit().map_err(|e| RemoteError::local(local, e))
}

/// Upload every file under `local` to `url` (same relative names), then `_SUCCESS`. Returns
/// the number of files uploaded.
pub fn upload(local: &Path, url: &str) -> Result<usize> {
    let (store, root) = open(url.trim_end_matches('/'))?;
    let rt = runtime()?;
    let mut files = Vec::new();
    let mut stack = vec![local.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| RemoteError::local(&d, e))? {
            let p = e.map_err(|e| RemoteError::local(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let key = |p: &Path| -> String {
        let rel = p
            .strip_prefix(local)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/");
        if root.as_ref().is_empty() {
            rel
        } else {
            format!("{root}/{rel}")
        }
    };
    rt.block_on(async {
        // A run published earlier under the same URL loses its marker first.
        let _ = store
            .delete(&ObjPath::from(key(Path::new("_SUCCESS"))))
            .await;
        for f in &files {
            let to = ObjPath::from(key(f));
            let size = std::fs::metadata(f).map_or(0, |m| m.len());
            if size <= 16 << 20 {
                let bytes = std::fs::read(f).map_err(|e| RemoteError::local(f, e))?;
                store
                    .put(&to, PutPayload::from(bytes))
                    .await
                    .map_err(|e| RemoteError::store("uploading", to, e))?;
            } else {
                upload_large(&*store, &to, f).await?;
            }
        }
        store
            .put(
                &ObjPath::from(key(Path::new("_SUCCESS"))),
                PutPayload::from_static(b""),
            )
            .await
            .map_err(|e| RemoteError::store("writing _SUCCESS under", url, e))?;
        Ok::<(), RemoteError>(())
    })?;
    Ok(files.len())
}

/// Multipart upload in 8 MiB parts: memory stays at one part.
async fn upload_large(store: &dyn ObjectStore, to: &ObjPath, f: &Path) -> Result<()> {
    use std::io::Read;
    let mut upload = store
        .put_multipart(to)
        .await
        .map_err(|e| RemoteError::store("uploading", to, e))?;
    let mut file = std::fs::File::open(f).map_err(|e| RemoteError::local(f, e))?;
    loop {
        let mut buf = vec![0u8; 8 << 20];
        let mut n = 0;
        while n < buf.len() {
            let got = file
                .read(&mut buf[n..])
                .map_err(|e| RemoteError::local(f, e))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        upload
            .put_part(PutPayload::from(buf))
            .await
            .map_err(|e| RemoteError::store("uploading", to, e))?;
    }
    upload
        .complete()
        .await
        .map_err(|e| RemoteError::store("uploading", to, e))?;
    Ok(())
}

/// Write one object.
pub fn put_bytes(url: &str, bytes: Vec<u8>) -> Result<()> {
    let (store, path) = open(url)?;
    runtime()?
        .block_on(store.put(&path, PutPayload::from(bytes)))
        .map(drop)
        .map_err(|e| RemoteError::store("writing", url, e))
}

/// Read one object; `None` when it does not exist.
pub fn get_bytes(url: &str) -> Result<Option<Vec<u8>>> {
    let (store, path) = open(url)?;
    runtime()?.block_on(async {
        match store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| RemoteError::store("reading", url, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RemoteError::store("reading", url, e)),
        }
    })
}

/// Upload the named files of `local` under `url` (no `_SUCCESS`): a task's share of a phase.
pub fn put_files(local: &Path, names: &[String], url: &str) -> Result<()> {
    for n in names {
        let p = local.join(n);
        let bytes = std::fs::read(&p).map_err(|e| RemoteError::local(&p, e))?;
        put_bytes(&format!("{}/{n}", url.trim_end_matches('/')), bytes)?;
    }
    Ok(())
}

/// Download every object under `url` into `local` (same relative names).
pub fn get_dir(url: &str, local: &Path) -> Result<()> {
    let (store, root) = open(url.trim_end_matches('/'))?;
    let rt = runtime()?;
    let metas = rt
        .block_on(store.list(Some(&root)).try_collect::<Vec<_>>())
        .map_err(|e| RemoteError::store("listing", url, e))?;
    let root_s = root.to_string();
    for m in metas {
        let key = m.location.to_string();
        let rel = key
            .strip_prefix(&root_s)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(&key)
            .to_string();
        // An object's name becomes a local path: it must stay under `local`.
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\\'))
        {
            return Err(RemoteError::store(
                "listing",
                url,
                format!("object name {key:?} would leave the local folder"),
            ));
        }
        fetch_one(rt, &*store, &m.location, &local.join(rel))?;
    }
    Ok(())
}

/// Delete every object under `url` (best effort).
pub fn delete_prefix(url: &str) -> Result<()> {
    let (store, root) = open(url.trim_end_matches('/'))?;
    let rt = runtime()?;
    rt.block_on(async {
        let metas = store.list(Some(&root)).try_collect::<Vec<_>>().await?;
        for m in metas {
            store.delete(&m.location).await?;
        }
        Ok::<(), object_store::Error>(())
    })
    .map_err(|e| RemoteError::store("deleting", url, e))
}
