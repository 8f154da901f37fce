//! Parquet parts of curated and dropped samples (schema in `schemas/curated.md`).
//!
//! Row groups are cut by the samples alone (at most [`GROUP_ROWS`] rows or [`GROUP_BYTES`] of
//! strings, and at file ends), never by when a batch arrived or by an encoder's estimate, so
//! complete row groups can be encoded side by side on the worker threads and appended in order:
//! the bytes do not depend on the batching or on the thread count. Memory: about one row
//! group per worker thread waits or is being encoded.

use super::*;
use crate::error::{Error, Result};
use crate::sample::Sample;
use crate::storage::AtomicFile;
use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Parquet parts `part-00000.parquet`, … of at most `rows_per_file` rows each.
pub struct ParquetSink {
    prefix: String,
    root: PathBuf,
    dir: PathBuf,
    rows_per_file: usize,
    with_drop: bool,
    schema: Arc<Schema>,
    props: WriterProperties,
    /// Column writers for a row group of any part (they share schema and properties).
    factory: ArrowRowGroupWriterFactory,
    current: Option<(SerializedFileWriter<AtomicFile>, PathBuf, u64)>,
    files: Vec<OutputFile>,
    /// The row group being filled.
    open: Group,
    /// Complete row groups waiting to be encoded.
    ready: Vec<Group>,
    /// Rows given to the current part, encoded or not.
    file_rows: usize,
}

/// The rows of one row group.
#[derive(Default)]
struct Group {
    samples: Vec<Sample>,
    drops: Vec<DropInfo>,
    bytes: usize,
    /// The last row group of its part.
    ends_file: bool,
}

/// Rows per Arrow batch handed to the encoders (bounds the Arrow copy of a row group).
const CHUNK_ROWS: usize = 1024;

/// Rows in a row group at most.
const GROUP_ROWS: usize = 16 * 1024;

/// String bytes (see [`sample_bytes`]) at which a row group ends.
const GROUP_BYTES: usize = 8 << 20;

/// Bytes a sample holds, roughly: its strings.
pub(super) fn sample_bytes(s: &Sample) -> usize {
    let tags: usize = s.tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    s.content_parts().map(|(_, c)| c.len() + 16).sum::<usize>()
        + s.id.len()
        + s.source.len()
        + s.tools.as_ref().map_or(0, |t| t.len())
        + tags
        + 64
}

/// The Arrow schema of curated samples (plus drop columns for dropped samples).
pub fn sample_schema(with_drop: bool) -> Schema {
    let turn = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    // Tags are a list of {key, value} rather than an Arrow map: HF `datasets` cannot load maps.
    let tag = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]);
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("system", DataType::Utf8, true),
        Field::new("tools", DataType::Utf8, true),
        Field::new(
            "turns",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(turn), true))),
            false,
        ),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(tag), true))),
            false,
        ),
    ];
    if with_drop {
        fields.extend([
            Field::new("drop_stage", DataType::Utf8, false),
            Field::new("drop_reason", DataType::Utf8, false),
            Field::new("drop_detail", DataType::Utf8, true),
            Field::new("duplicate_of", DataType::Utf8, true),
        ]);
    }
    Schema::new(fields)
}

/// A `list<struct<2 × utf8>>` builder for the field `name` of `schema`.
pub(super) fn pair_list(schema: &Schema, name: &str) -> Result<ListBuilder<StructBuilder>, String> {
    let item = match schema.field_with_name(name).map(|f| f.data_type().clone()) {
        Ok(DataType::List(item)) => item,
        _ => return Err(format!("schema has no {name} list")),
    };
    let fields = match item.data_type() {
        DataType::Struct(f) => f.clone(),
        _ => return Err(format!("{name} items are not structs")),
    };
    Ok(ListBuilder::new(StructBuilder::new(
        fields,
        vec![
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
        ],
    ))
    .with_field(item))
}

/// Append one (a, b) struct to a pair list's current row.
pub(super) fn push_pair(
    list: &mut ListBuilder<StructBuilder>,
    a: &str,
    b: &str,
) -> Result<(), String> {
    let sb = list.values();
    sb.field_builder::<StringBuilder>(0)
        .ok_or("pair builder")?
        .append_value(a);
    sb.field_builder::<StringBuilder>(1)
        .ok_or("pair builder")?
        .append_value(b);
    sb.append(true);
    Ok(())
}

pub(super) fn to_batch(
    schema: &Arc<Schema>,
    samples: &[Sample],
    drops: Option<&[DropInfo]>,
) -> Result<RecordBatch, String> {
    let n = samples.len();
    let mut cols: Vec<StringBuilder> = (0..8)
        .map(|_| StringBuilder::with_capacity(n, n * 16))
        .collect();
    let mut turns = pair_list(schema, "turns")?;
    let mut tags = pair_list(schema, "tags")?;
    let mut text = StringBuilder::new();
    for s in samples {
        cols[0].append_value(&s.id);
        cols[1].append_value(&s.source);
        cols[2].append_value(&s.domain);
        cols[3].append_value(&s.task);
        cols[4].append_value(s.kind.as_str());
        cols[5].append_option(s.user_id.as_deref());
        cols[6].append_option(s.system.as_deref());
        cols[7].append_option(s.tools.as_deref());
        for t in &s.turns {
            push_pair(&mut turns, t.role.as_str(), &t.content)?;
        }
        turns.append(true);
        text.append_option(s.text.as_deref());
        for (k, v) in &s.tags {
            push_pair(&mut tags, k, v)?;
        }
        tags.append(true);
    }
    let mut arrays: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(turns.finish()));
    arrays.push(Arc::new(text.finish()));
    arrays.push(Arc::new(tags.finish()));
    if let Some(drops) = drops {
        let mut d: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
        for info in drops {
            d[0].append_value(&info.stage);
            d[1].append_value(info.reason);
            d[2].append_option(info.detail.as_deref());
            d[3].append_option(info.duplicate_of.as_deref());
        }
        arrays.extend(d.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    }
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
}

fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(GROUP_ROWS))
        .build()
}

/// Encode one row group's columns.
fn encode_group(
    factory: &ArrowRowGroupWriterFactory,
    schema: &Arc<Schema>,
    group: &Group,
    with_drop: bool,
) -> std::result::Result<Vec<ArrowColumnChunk>, String> {
    let mut writers = factory
        .create_column_writers(0)
        .map_err(|e| e.to_string())?;
    for (i, rows) in group.samples.chunks(CHUNK_ROWS).enumerate() {
        let drops = with_drop.then(|| {
            let at = i * CHUNK_ROWS;
            &group.drops[at.min(group.drops.len())..(at + rows.len()).min(group.drops.len())]
        });
        let batch = to_batch(schema, rows, drops)?;
        let mut leaves_out = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field.as_ref(), column).map_err(|e| e.to_string())? {
                leaves_out
                    .next()
                    .ok_or("more leaves than column writers")?
                    .write(&leaf)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    writers
        .into_iter()
        .map(|w| w.close().map_err(|e| e.to_string()))
        .collect()
}

impl ParquetSink {
    /// Parts go to `dir`; paths are reported relative to `root`.
    pub fn new(root: &Path, dir: PathBuf, rows_per_file: usize, with_drop: bool) -> ParquetSink {
        let schema = Arc::new(sample_schema(with_drop));
        let props = writer_props();
        // Any part's factory serves every part: take one from a writer that writes nowhere.
        let factory = ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(props.clone()))
            .and_then(|w| w.into_serialized_writer())
            .map(|(_, f)| f)
            .unwrap_or_else(|e| unreachable!("the sample schema converts to Parquet: {e}"));
        ParquetSink {
            root: root.to_path_buf(),
            dir,
            prefix: "part".into(),
            rows_per_file: rows_per_file.max(1),
            with_drop,
            schema,
            props,
            factory,
            current: None,
            files: Vec::new(),
            open: Group::default(),
            ready: Vec::new(),
            file_rows: 0,
        }
    }

    /// Name parts `<prefix>-00000.parquet` (default `part`).
    pub fn with_prefix(mut self, prefix: &str) -> ParquetSink {
        self.prefix = prefix.to_string();
        self
    }

    fn output_err(&self, message: String) -> Error {
        Error::Output {
            path: self
                .current
                .as_ref()
                .map_or_else(|| self.dir.clone(), |c| c.1.clone()),
            message,
        }
    }

    /// End the open row group (if it has rows).
    fn end_group(&mut self) {
        if self.open.samples.is_empty() {
            return;
        }
        let mut g = std::mem::take(&mut self.open);
        g.ends_file = self.file_rows >= self.rows_per_file;
        if g.ends_file {
            self.file_rows = 0;
        }
        self.ready.push(g);
    }

    /// Encode the complete row groups side by side, then append them in order.
    fn encode_ready(&mut self) -> Result<()> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let (factory, schema, with_drop) = (&self.factory, &self.schema, self.with_drop);
        let encoded: Vec<std::result::Result<Vec<ArrowColumnChunk>, String>> = self
            .ready
            .par_iter()
            .map(|g| encode_group(factory, schema, g, with_drop))
            .collect();
        let ready = std::mem::take(&mut self.ready);
        for (g, chunks) in ready.into_iter().zip(encoded) {
            let chunks = chunks.map_err(|m| self.output_err(m))?;
            if self.current.is_none() {
                let path =
                    self.dir
                        .join(format!("{}-{:05}.parquet", self.prefix, self.files.len()));
                let file = AtomicFile::create(&path)?;
                let w = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                    .and_then(|w| w.into_serialized_writer())
                    .map_err(|e| Error::Output {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                self.current = Some((w.0, path, 0));
            }
            let Some((w, path, rows)) = self.current.as_mut() else {
                continue;
            };
            let err = |e: parquet::errors::ParquetError| Error::Output {
                path: path.clone(),
                message: e.to_string(),
            };
            let mut rg = w.next_row_group().map_err(err)?;
            for c in chunks {
                c.append_to_row_group(&mut rg).map_err(err)?;
            }
            rg.close().map_err(err)?;
            *rows += g.samples.len() as u64;
            if g.ends_file {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((w, path, rows)) = self.current.take() {
            let file = w.into_inner().map_err(|e| Error::Output {
                path: path.clone(),
                message: e.to_string(),
            })?;
            file.commit()?;
            self.files.push(OutputFile {
                path: rel(&self.root, &path),
                records: rows,
                bytes: file_size(&path),
            });
        }
        Ok(())
    }
}

impl SampleSink for ParquetSink {
    fn write(&mut self, samples: &[Sample], drops: Option<&[DropInfo]>) -> Result<()> {
        if self.with_drop && drops.is_none() {
            return Err(Error::Output {
                path: self.dir.clone(),
                message: "dropped sink without drop reasons".into(),
            });
        }
        for (i, s) in samples.iter().enumerate() {
            self.open.samples.push(s.clone());
            if let Some(d) = drops.filter(|_| self.with_drop).and_then(|d| d.get(i)) {
                self.open.drops.push(d.clone());
            }
            self.open.bytes += sample_bytes(s);
            self.file_rows += 1;
            if self.open.samples.len() >= GROUP_ROWS
                || self.open.bytes >= GROUP_BYTES
                || self.file_rows >= self.rows_per_file
            {
                self.end_group();
                if self.ready.len() >= rayon::current_num_threads() {
                    self.encode_ready()?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<OutputFile>> {
        self.end_group();
        self.encode_ready()?;
        self.close_current()?;
        Ok(self.files)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // fixtures
    use super::*;

    fn parquet_bytes(samples: &[Sample], cuts: &[usize]) -> Vec<Vec<u8>> {
        parquet_bytes_on(samples, cuts, 3000)
    }

    fn parquet_bytes_on(samples: &[Sample], cuts: &[usize], rows: usize) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink: Box<dyn SampleSink> = Box::new(ParquetSink::new(
            dir.path(),
            dir.path().to_path_buf(),
            rows,
            false,
        ));
        let mut start = 0;
        for &end in cuts.iter().chain([samples.len()].iter()) {
            sink.write(&samples[start..end], None).expect("write");
            start = end;
        }
        let files = sink.finish().expect("finish");
        files
            .iter()
            .map(|f| std::fs::read(dir.path().join(&f.path)).expect("read"))
            .collect()
    }

    #[test]
    fn parquet_bytes_do_not_depend_on_how_samples_were_batched() {
        let samples: Vec<Sample> = (0..7000)
            .map(|i| {
                Sample::document(
                    format!("d{i}"),
                    format!("{i} {}", "文本 ".repeat(i % 397 + 1)),
                )
            })
            .collect();
        let one = parquet_bytes(&samples, &[]);
        assert_eq!(one.len(), 3, "3000 rows per file");
        assert_eq!(parquet_bytes(&samples, &[1, 1000, 1001, 2999, 5000]), one);
        let small: Vec<usize> = (1..7000).step_by(333).collect();
        assert_eq!(parquet_bytes(&samples, &small), one);
    }

    /// Row groups are encoded side by side on the worker threads: the bytes are the same on
    /// one thread as on four, with row groups cut by rows, by bytes and at file ends.
    #[test]
    fn parquet_bytes_do_not_depend_on_the_thread_count() {
        let samples: Vec<Sample> = (0..40_000)
            .map(|i| {
                let mut s = Sample::document(
                    format!("d{i}"),
                    format!("{i} {}", "文本 ".repeat(i * 7919 % 1500 + 1)),
                );
                s.tags.insert("lang".into(), "zh".into());
                s
            })
            .collect();
        let on = |threads: usize, cuts: &[usize]| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| parquet_bytes_on(&samples, cuts, 25_000))
        };
        let one = on(1, &[]);
        assert_eq!(one.len(), 2, "25,000 rows per file");
        assert_eq!(on(4, &[]), one);
        assert_eq!(on(3, &[5, 16_385, 24_999, 25_001, 39_000]), one);
        // Several row groups per file: cut by bytes (the texts average ~2.2 KB, so 8 MiB
        // ends a group before 16k rows) and at the file end.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.parquet"), &one[0]).expect("write");
        let file = std::fs::File::open(dir.path().join("p.parquet")).expect("open");
        let meta = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
        use parquet::file::reader::FileReader;
        let groups: Vec<i64> = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert!(groups.len() >= 4, "{groups:?}");
        assert_eq!(groups.iter().sum::<i64>(), 25_000);
    }

    /// Regression (attacker walk of #18): a row group is held until it is written, and rows of
    /// megabytes piled up to 16k rows (40 rows of 6.7 MB: 397 MB). Row groups now end by bytes.
    #[test]
    fn row_groups_end_by_bytes_too() {
        // Text that does not compress: what is held is what is written.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut text = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from_u32(0x4E00 + (x % 0x5000) as u32).unwrap_or('字')
                })
                .collect()
        };
        let samples: Vec<Sample> = (0..200)
            .map(|i| Sample::document(format!("d{i}"), text(350_000)))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink: Box<dyn SampleSink> = Box::new(ParquetSink::new(
            dir.path(),
            dir.path().to_path_buf(),
            100_000,
            false,
        ));
        sink.write(&samples, None).expect("write");
        let files = sink.finish().expect("finish");
        let file = std::fs::File::open(dir.path().join(&files[0].path)).expect("open");
        let meta = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
        use parquet::file::reader::FileReader;
        let groups = meta.metadata().num_row_groups();
        assert!(groups >= 2, "{groups} row group(s) for 200 MB of rows");
        let rows: i64 = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .sum();
        assert_eq!(rows, 200);
    }
}
