//! Catalog frames as aligned text tables for the terminal.

use sluice_pipeline::catalog;

/// A frame as an aligned text table in its column order: every value whole (no `…`), numbers
/// right-aligned, CJK characters counted two columns wide.
pub fn text_table(df: &catalog::DataFrame) -> String {
    let json = catalog::frame_json(df);
    let Some(rows) = json.as_array().filter(|r| !r.is_empty()) else {
        return "(no rows)\n".into();
    };
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let width = |s: &str| {
        s.chars()
            .map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 })
            .sum::<usize>()
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| names.iter().map(|n| cell(&r[n])).collect())
        .collect();
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            cells
                .iter()
                .map(|c| width(&c[i]))
                .chain([width(n)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = names
        .iter()
        .map(|n| rows.iter().all(|r| r[n].is_number() || r[n].is_null()))
        .collect();
    let line = |vals: &[String]| {
        let mut l = String::new();
        for (i, v) in vals.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(width(v)));
            if i > 0 {
                l.push_str("  ");
            }
            if numeric[i] {
                l.push_str(&pad);
                l.push_str(v);
            } else {
                l.push_str(v);
                l.push_str(&pad);
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&names);
    out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for c in &cells {
        out += &line(c);
    }
    out
}
