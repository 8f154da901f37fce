//! Parquet input: rows become JSON values (nested lists and structs included) so that every
//! record format that works for JSON works for Parquet too, sluice's own `turns` list<struct>
//! among them. Memory is bounded by one record batch.

use super::lines::too_long;
use super::{FileCx, Payload, RawRecord};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const BATCH_ROWS: usize = 1024;
/// Decoded bytes a batch aims at.
const BATCH_BYTES: u64 = 8 << 20;

pub(super) fn read(
    path: &Path,
    cx: Arc<FileCx>,
    max: usize,
    bytes_read: &Arc<AtomicU64>,
    emit: &mut dyn FnMut(RawRecord) -> crate::Result<()>,
) -> crate::Result<Result<(), String>> {
    let file = match crate::confine::open_confined(path, cx.plan.confined_to.as_deref()) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("cannot open: {e}"))),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = match ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| {
        // Rows per decoded batch: at most BATCH_ROWS, and about BATCH_BYTES of the widest row
        // group's rows (rows of megabytes decode a few at a time, not a thousand).
        let widest = b
            .metadata()
            .row_groups()
            .iter()
            .map(|g| {
                u64::try_from(g.total_byte_size()).unwrap_or(0)
                    / u64::try_from(g.num_rows()).unwrap_or(1).max(1)
            })
            .max()
            .unwrap_or(0)
            .max(1);
        let rows = usize::try_from(BATCH_BYTES / widest)
            .unwrap_or(BATCH_ROWS)
            .clamp(1, BATCH_ROWS);
        b.with_batch_size(rows).build()
    }) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("not a readable Parquet file: {e}"))),
    };
    let mut number = 0u64;
    for batch in reader {
        let batch: RecordBatch = match batch {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("Parquet read failed after row {number}: {e}"))),
        };
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            number += 1;
            let mut obj = Map::new();
            let mut problem = None;
            for (field, col) in schema.fields().iter().zip(batch.columns()) {
                match to_json(col, row) {
                    Ok(v) => {
                        obj.insert(field.name().clone(), v);
                    }
                    Err(e) => {
                        problem = Some(format!("column {:?}: {e}", field.name()));
                        break;
                    }
                }
            }
            let payload = match problem {
                Some(p) => Payload::Error(p),
                None => {
                    let v = Value::Object(obj);
                    let approx = approx_size(&v);
                    if approx > max {
                        Payload::Error(too_long(approx, max))
                    } else {
                        Payload::Value(v)
                    }
                }
            };
            emit(RawRecord {
                cx: cx.clone(),
                line: 0,
                number,
                split: None,
                payload,
            })?;
        }
    }
    bytes_read.fetch_add(size, Ordering::Relaxed);
    Ok(Ok(()))
}

fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(approx_size).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + approx_size(v)).sum(),
        _ => 8,
    }
}

/// One cell as JSON.
fn to_json(col: &ArrayRef, row: usize) -> Result<Value, String> {
    if col.is_null(row) {
        return Ok(Value::Null);
    }
    macro_rules! num {
        ($t:ty) => {
            Value::from(col.as_primitive::<$t>().value(row))
        };
    }
    Ok(match col.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => num!(Float32Type),
        DataType::Float64 => num!(Float64Type),
        DataType::Utf8 => Value::from(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(col.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(col.as_string_view().value(row)),
        DataType::List(_) => list(&col.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(&col.as_list::<i64>().value(row))?,
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let mut obj = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                obj.insert(f.name().clone(), to_json(c, row)?);
            }
            Value::Object(obj)
        }
        DataType::Map(_, _) => {
            let m = col.as_map();
            let entries = m.value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut obj = Map::new();
            for i in 0..entries.len() {
                let k = match to_json(keys, i)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(k, to_json(values, i)?);
            }
            Value::Object(obj)
        }
        DataType::Dictionary(_, _) => {
            let d = col.as_any_dictionary();
            let key = d.normalized_keys()[row];
            to_json(d.values(), key)?
        }
        other => return Err(format!("unsupported Parquet type {other}")),
    })
}

fn list(values: &ArrayRef) -> Result<Value, String> {
    (0..values.len())
        .map(|i| to_json(values, i))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}
