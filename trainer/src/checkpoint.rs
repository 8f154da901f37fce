//! Safetensors files in the HF layout (with the `{"format": "pt"}` metadata transformers
//! expects) and checkpoint directories, all published atomically.
//!
//! Files are published through the workspace's one temp-then-rename writer,
//! [`sluice_shards::atomic`] (the trainer does not depend on the pipeline crate).
#![allow(clippy::disallowed_methods)]

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Write tensors to a safetensors file through a temporary name, converting to `dtype`.
pub fn save_tensors(path: &Path, tensors: &BTreeMap<String, Tensor>, dtype: DType) -> Result<()> {
    let converted: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| {
            Ok((
                k.clone(),
                t.to_device(&Device::Cpu)?.to_dtype(dtype)?.contiguous()?,
            ))
        })
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = sluice_shards::atomic::tmp_path(path);
    safetensors::serialize_to_file(converted.iter().map(|(k, t)| (k, t)), Some(meta), &tmp)
        .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
    sluice_shards::atomic::publish(&tmp, path).map_err(|e| Error::Io(path.to_path_buf(), e))
}

/// Read every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let map = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
    Ok(map.into_iter().collect())
}

/// Write a text file atomically (the shards crate's temp-then-rename, synced).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    Ok(sluice_shards::native::write_atomic(path, text.as_bytes())?)
}

/// Parse a dtype name of the configuration (`f32`, `bf16`, `f16`).
pub fn dtype_named(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(Error::Config(format!("unknown dtype {other:?}"))),
    }
}

/// The checkpoints directory of an output directory.
pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

/// Directory name of the checkpoint of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The latest published checkpoint, if any.
pub fn latest(output: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(output).join("latest");
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = checkpoints_dir(output).join(name.trim());
            if dir.join("state.json").is_file() {
                Ok(Some(dir))
            } else {
                Err(Error::Data(format!(
                    "{} names {}, which is not a complete checkpoint",
                    pointer.display(),
                    dir.display()
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(pointer, e)),
    }
}

/// Publish a checkpoint written by `fill` into a temporary directory: rename it to its final
/// name, point `latest` at it, and remove all but the newest `keep`.
pub fn publish(
    output: &Path,
    step: u64,
    keep: usize,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = checkpoints_dir(output);
    std::fs::create_dir_all(&root).map_err(|e| Error::Io(root.clone(), e))?;
    let name = checkpoint_name(step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!("{name}.tmp"));
    for d in [&tmp, &final_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::Io(d.to_path_buf(), e))?;
        }
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::Io(tmp.clone(), e))?;
    fill(&tmp)?;
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::Io(final_dir.clone(), e))?;
    write_text(&root.join("latest"), &format!("{name}\n"))?;
    let mut all: Vec<String> = std::fs::read_dir(&root)
        .map_err(|e| Error::Io(root.clone(), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep.max(1));
    for old in all.into_iter().take(excess) {
        if old != name {
            let d = root.join(old);
            std::fs::remove_dir_all(&d).map_err(|e| Error::Io(d, e))?;
        }
    }
    Ok(final_dir)
}
