//! Charts as inline SVG, for pages that must open with no network (the run report; the
//! service's console draws with the same builder). Every text that reaches a chart is escaped:
//! labels come from data (input names, tag values, drop reasons) and may hold markup.

use std::fmt::Write;

/// Escape text for HTML and SVG (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Width of a chart, in SVG units (it scales to its container).
const WIDTH: f64 = 720.0;
/// Width of the label column.
const LABEL: f64 = 250.0;
/// Width of the value column at the right.
const VALUE: f64 = 150.0;
/// Height of one row.
const ROW: f64 = 22.0;

/// The colors of a chart's series, in order (kept, then drop reasons, …).
pub const PALETTE: [&str; 8] = [
    "#2f7d4f", "#c0392b", "#d68910", "#7d3c98", "#2874a6", "#a04000", "#17a589", "#5d6d7e",
];

/// One row of a bar chart: its label, its segments (value, series index) and what the value
/// column says.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Shown at the left (escaped).
    pub label: String,
    /// Segments, left to right: (value, series).
    pub segments: Vec<(f64, usize)>,
    /// Shown at the right (escaped).
    pub note: String,
}

impl Row {
    /// A row of one segment.
    pub fn single(label: impl Into<String>, value: f64, note: impl Into<String>) -> Row {
        Row {
            label: label.into(),
            segments: vec![(value, 0)],
            note: note.into(),
        }
    }

    fn total(&self) -> f64 {
        self.segments.iter().map(|(v, _)| clean(*v)).sum()
    }
}

/// A value a chart can draw: negative, NaN and infinite values draw as 0.
fn clean(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Where a value ends on the bar axis, for a chart whose largest row totals `max`.
pub fn bar_x(value: f64, max: f64) -> f64 {
    let plot = WIDTH - LABEL - VALUE;
    if clean(max) == 0.0 {
        return LABEL;
    }
    LABEL + plot * (clean(value) / max).min(1.0)
}

/// A horizontal bar chart: one row per `rows`, segments stacked, scaled to the largest row
/// (or to `scale` when given: a funnel keeps every row on the first row's scale). `legend`
/// names the series.
pub fn bars(title: &str, rows: &[Row], legend: &[&str], scale: Option<f64>) -> String {
    let legend: Vec<(&str, usize)> = legend.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    bars_keyed(title, rows, &legend, scale)
}

/// [`bars`] with a legend that names its series' colors: (name, series index).
pub fn bars_keyed(
    title: &str,
    rows: &[Row],
    legend: &[(&str, usize)],
    scale: Option<f64>,
) -> String {
    let max = scale.unwrap_or_else(|| rows.iter().map(Row::total).fold(0.0, f64::max));
    let legend_h = if legend.len() > 1 { ROW } else { 0.0 };
    let height = ROW * rows.len() as f64 + legend_h + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
    for (i, row) in rows.iter().enumerate() {
        let y = ROW * i as f64 + 4.0;
        let label = shorten(&row.label, 38);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text>"#,
            LABEL - 6.0,
            y + 14.0,
            escape(&label)
        );
        let mut x = LABEL;
        let mut sum = 0.0;
        for &(v, series) in &row.segments {
            sum += clean(v);
            let end = bar_x(sum, max);
            let w = (end - x).max(0.0);
            if w > 0.0 {
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{}" fill="{}"/>"#,
                    ROW - 6.0,
                    PALETTE[series % PALETTE.len()]
                );
            }
            x = end;
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="value">{}</text>"#,
            WIDTH - VALUE + 6.0,
            y + 14.0,
            escape(&row.note)
        );
    }
    if legend_h > 0.0 {
        let y = ROW * rows.len() as f64 + 8.0;
        let mut x = LABEL;
        for &(name, series) in legend {
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
                PALETTE[series % PALETTE.len()],
                x + 14.0,
                y + 10.0,
                escape(name)
            );
            x += 24.0 + 7.0 * name.chars().count() as f64;
        }
    }
    s.push_str("</svg>");
    s
}

/// Two bars per row (say a mix's requested and achieved share), both on one scale.
pub fn paired(title: &str, rows: &[(String, f64, f64)], names: [&str; 2], unit: &str) -> String {
    let scale = rows
        .iter()
        .map(|(_, a, b)| clean(*a).max(clean(*b)))
        .fold(0.0, f64::max);
    let mut out = Vec::with_capacity(rows.len() * 2);
    for (label, a, b) in rows {
        out.push(Row {
            label: format!("{label} · {}", names[0]),
            segments: vec![(*a, 4)],
            note: format!("{:.3}{unit}", clean(*a)),
        });
        out.push(Row {
            label: format!("{label} · {}", names[1]),
            segments: vec![(*b, 0)],
            note: format!("{:.3}{unit}", clean(*b)),
        });
    }
    bars_keyed(title, &out, &[(names[0], 4), (names[1], 0)], Some(scale))
}

/// One line of a line chart: its name, its points (x, y) and its color (a [`PALETTE`] index).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend (escaped).
    pub name: String,
    /// Points in x order; points that are not finite are left out.
    pub points: Vec<(f64, f64)>,
    /// Index into [`PALETTE`].
    pub color: usize,
}

/// The plot area of a line chart: left, top, right, bottom.
const PLOT: (f64, f64, f64, f64) = (70.0, 12.0, WIDTH - 16.0, 232.0);
/// Height of a line chart (plot area, axis labels and legend).
const LINES_HEIGHT: f64 = 272.0;

/// Where (x, y) lands in a line chart's plot area, for data in x0..=x1 and y0..=y1 (a range of
/// one value is widened so it draws in the middle).
pub fn line_xy(x: f64, y: f64, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> (f64, f64) {
    let (left, top, right, bottom) = PLOT;
    let fx = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.5 };
    let fy = if y1 > y0 { (y - y0) / (y1 - y0) } else { 0.5 };
    (
        left + (right - left) * fx.clamp(0.0, 1.0),
        bottom - (bottom - top) * fy.clamp(0.0, 1.0),
    )
}

/// The opening of a plotted chart (lines, scatter): the SVG element, its title and the plot
/// area's frame.
fn plot_frame(title: &str) -> String {
    let (left, top, right, bottom) = PLOT;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {LINES_HEIGHT}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
    let _ = write!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>",
        right - left,
        bottom - top
    );
    s
}

/// A plotted chart's legend (name, [`PALETTE`] index) under the plot, and its end.
fn plot_legend<'a>(mut s: String, items: impl Iterator<Item = (&'a str, usize)>) -> String {
    let mut x = PLOT.0;
    for (name, color) in items {
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{}" class="legend">{}</text>"#,
            LINES_HEIGHT - 14.0,
            PALETTE[color % PALETTE.len()],
            x + 14.0,
            LINES_HEIGHT - 4.0,
            escape(name)
        );
        x += 30.0 + 7.0 * name.chars().count() as f64;
    }
    s.push_str("</svg>");
    s
}

/// A plotted chart with nothing to plot, closed.
fn no_data(mut s: String) -> String {
    s.push_str(r#"<text x="360" y="130" text-anchor="middle" class="label">no data</text></svg>"#);
    s
}

/// A line chart of `series` on shared axes, with vertical marks at `events` (x, label).
pub fn lines(title: &str, series: &[Series], events: &[(f64, String)]) -> String {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().filter(finite).copied())
        .collect();
    let (left, top, right, bottom) = PLOT;
    let mut s = plot_frame(title);
    if all.is_empty() {
        return no_data(s);
    }
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        all.iter().map(pick).fold(init, f)
    };
    let xs = (
        fold(f64::min, f64::MAX, |p| p.0),
        fold(f64::max, f64::MIN, |p| p.0),
    );
    let ys = (
        fold(f64::min, f64::MAX, |p| p.1),
        fold(f64::max, f64::MIN, |p| p.1),
    );
    // Axis labels: the ranges' ends.
    let num = |v: f64| {
        if v.abs() >= 1000.0 || v == v.trunc() {
            format!("{v:.0}")
        } else if v.abs() >= 0.01 {
            format!("{v:.3}")
        } else {
            format!("{v:.2e}")
        }
    };
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end" class="label">{}</text><text x="{}" y="{}" text-anchor="end" class="label">{}</text>"#,
        left - 6.0,
        top + 10.0,
        num(ys.1),
        left - 6.0,
        bottom,
        num(ys.0)
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" class="label">{}</text><text x="{right}" y="{}" text-anchor="end" class="label">{}</text>"#,
        bottom + 16.0,
        num(xs.0),
        bottom + 16.0,
        num(xs.1)
    );
    for (x, label) in events {
        if !x.is_finite() {
            continue;
        }
        let (px, _) = line_xy(*x, ys.0, xs, ys);
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"><title>{}</title></line>",
            escape(label)
        );
    }
    for line in series {
        let pts: Vec<String> = line
            .points
            .iter()
            .filter(finite)
            .map(|&(x, y)| {
                let (px, py) = line_xy(x, y, xs, ys);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let color = PALETTE[line.color % PALETTE.len()];
        if pts.len() == 1 {
            let (px, py) = pts[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{color}\"/>"
            );
        } else {
            let _ = write!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                pts.join(" ")
            );
        }
    }
    plot_legend(s, series.iter().map(|l| (l.name.as_str(), l.color)))
}

/// One point of a scatter chart: its label, x, y and color (a [`PALETTE`] index).
#[derive(Debug, Clone, PartialEq)]
pub struct Dot {
    /// Written beside the point (escaped).
    pub label: String,
    /// Horizontal value.
    pub x: f64,
    /// Vertical value.
    pub y: f64,
    /// Index into [`PALETTE`].
    pub color: usize,
}

/// A scatter chart of labelled points on axes named `axes` (x, y), with optional vertical
/// guides (x, label) such as a limit, and a legend of (name, color).
pub fn scatter(
    title: &str,
    dots: &[Dot],
    axes: (&str, &str),
    guides: &[(f64, String)],
    legend: &[(&str, usize)],
) -> String {
    let finite: Vec<&Dot> = dots
        .iter()
        .filter(|d| d.x.is_finite() && d.y.is_finite())
        .collect();
    let (left, top, right, bottom) = PLOT;
    let mut s = plot_frame(title);
    if finite.is_empty() {
        return no_data(s);
    }
    // Ranges padded by a tenth so no point sits on the frame; guides widen the x range.
    let span = |vals: Vec<f64>| {
        let lo = vals.iter().copied().fold(f64::MAX, f64::min);
        let hi = vals.iter().copied().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.01).max(1e-9);
        (lo - pad, hi + pad)
    };
    let mut xs_all: Vec<f64> = finite.iter().map(|d| d.x).collect();
    xs_all.extend(guides.iter().map(|g| g.0).filter(|x| x.is_finite()));
    let xs = span(xs_all);
    let ys = span(finite.iter().map(|d| d.y).collect());
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end" class="label">{:.3}</text><text x="{}" y="{}" text-anchor="end" class="label">{:.3}</text>"#,
        left - 6.0,
        top + 10.0,
        ys.1,
        left - 6.0,
        bottom,
        ys.0
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" class="label">{:.3}</text><text x="{right}" y="{}" text-anchor="end" class="label">{:.3}</text><text x="{}" y="{}" text-anchor="middle" class="label">{}</text><text x="{}" y="{}" class="label">{}</text>"#,
        bottom + 16.0,
        xs.0,
        bottom + 16.0,
        xs.1,
        (left + right) / 2.0,
        bottom + 16.0,
        escape(axes.0),
        left + 4.0,
        top + 12.0,
        escape(axes.1)
    );
    for (x, label) in guides {
        if !x.is_finite() {
            continue;
        }
        let (px, _) = line_xy(*x, ys.0, xs, ys);
        // The label on the side of the line with room for it.
        let (tx, anchor) = if px + 90.0 > right {
            (px - 4.0, "end")
        } else {
            (px + 4.0, "start")
        };
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/><text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"label\">{}</text>",
            bottom - 6.0,
            escape(label)
        );
    }
    for d in &finite {
        let (px, py) = line_xy(d.x, d.y, xs, ys);
        let _ = write!(
            s,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"{}\"><title>{}: {:.4}, {:.4}</title></circle><text x=\"{:.1}\" y=\"{:.1}\" class=\"label\">{}</text>",
            PALETTE[d.color % PALETTE.len()],
            escape(&d.label),
            d.x,
            d.y,
            px + 8.0,
            py + 4.0,
            escape(&shorten(&d.label, 32))
        );
    }
    plot_legend(s, legend.iter().copied())
}

/// `s` cut to at most `n` characters (an ellipsis marks the cut).
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scatter_places_and_escapes_its_points() {
        let dots = [
            Dot {
                label: "<b>low</b>".into(),
                x: 1.0,
                y: 1.0,
                color: 0,
            },
            Dot {
                label: "high".into(),
                x: 3.0,
                y: 2.0,
                color: 1,
            },
            Dot {
                label: "nan".into(),
                x: f64::NAN,
                y: 1.0,
                color: 1,
            },
        ];
        let svg = scatter(
            "t",
            &dots,
            ("general", "domain"),
            &[(2.0, "limit".into())],
            &[],
        );
        assert!(svg.contains("&lt;b&gt;low&lt;/b&gt;") && !svg.contains("<b>"));
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "the NaN point is left out"
        );
        // The low point is left of and below the high one (SVG y grows downwards).
        let centers: Vec<(f64, f64)> = svg
            .split("<circle cx=\"")
            .skip(1)
            .map(|r| {
                let cx: f64 = r
                    .split('"')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("cx");
                let cy: f64 = r
                    .split("cy=\"")
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .and_then(|v| v.parse().ok())
                    .expect("cy");
                (cx, cy)
            })
            .collect();
        assert!(
            centers[0].0 < centers[1].0 && centers[0].1 > centers[1].1,
            "{centers:?}"
        );
        assert!(svg.contains("stroke-dasharray"), "the guide");
    }

    #[test]
    fn values_map_to_the_bar_axis() {
        let plot = WIDTH - LABEL - VALUE;
        assert_eq!(bar_x(0.0, 10.0), LABEL);
        assert_eq!(bar_x(10.0, 10.0), LABEL + plot);
        assert_eq!(bar_x(5.0, 10.0), LABEL + plot / 2.0);
        // Nothing to scale by, or values a chart cannot draw: no bar, never NaN.
        assert_eq!(bar_x(3.0, 0.0), LABEL);
        assert_eq!(bar_x(f64::NAN, 10.0), LABEL);
        assert_eq!(bar_x(-4.0, 10.0), LABEL);
        assert_eq!(bar_x(20.0, 10.0), LABEL + plot, "clamped to the axis");
    }

    #[test]
    fn stacked_segments_add_up_to_the_row_and_rows_share_a_scale() {
        let rows = vec![
            Row {
                label: "stage".into(),
                segments: vec![(60.0, 0), (40.0, 1)],
                note: "100".into(),
            },
            Row::single("half", 50.0, "50"),
        ];
        let svg = bars("t", &rows, &["kept", "dropped"], None);
        let plot = WIDTH - LABEL - VALUE;
        let widths: Vec<f64> = svg
            .split("width=\"")
            .skip(1)
            .filter_map(|w| w.split('"').next()?.parse().ok())
            .filter(|&w: &f64| w != 10.0) // legend swatches
            .collect();
        let expect = [plot * 0.6, plot * 0.4, plot * 0.5];
        assert_eq!(widths.len(), 3, "{svg}");
        for (w, e) in widths.iter().zip(expect) {
            assert!((w - e).abs() < 0.11, "{w} vs {e}");
        }
        assert!(svg.contains(">kept</text>") && svg.contains(">dropped</text>"));
    }

    #[test]
    fn untrusted_text_is_text() {
        let evil = "<script>alert('x')</script> & \"q\"";
        let svg = bars(evil, &[Row::single(evil, 1.0, evil)], &[evil, "b"], None);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert!(!svg.contains("\"q\""));
        assert_eq!(escape("a<b>&'\""), "a&lt;b&gt;&amp;&#39;&quot;");
    }

    #[test]
    fn line_points_map_to_the_plot_area() {
        let (left, top, right, bottom) = PLOT;
        assert_eq!(line_xy(0.0, 0.0, (0.0, 10.0), (0.0, 1.0)), (left, bottom));
        assert_eq!(line_xy(10.0, 1.0, (0.0, 10.0), (0.0, 1.0)), (right, top));
        let (x, y) = line_xy(5.0, 0.5, (0.0, 10.0), (0.0, 1.0));
        assert!((x - (left + right) / 2.0).abs() < 1e-9 && (y - (top + bottom) / 2.0).abs() < 1e-9);
        // One value: in the middle, never NaN.
        let (x, y) = line_xy(3.0, 2.0, (3.0, 3.0), (2.0, 2.0));
        assert!(x.is_finite() && y.is_finite());
        let svg = lines(
            "<loss>",
            &[Series {
                name: "<b>train</b>".into(),
                points: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)],
                color: 0,
            }],
            &[(2.0, "rollback <at> 2".into())],
        );
        assert!(!svg.contains("<b>") && !svg.contains("<loss>") && !svg.contains("<at>"));
        assert!(!svg.contains("NaN"), "{svg}");
        let poly = svg
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next());
        assert_eq!(
            poly.map(|p| p.split(' ').count()),
            Some(2),
            "the NaN point is left out"
        );
        assert!(svg.contains("stroke-dasharray"), "the event is marked");
        assert!(lines("empty", &[], &[]).contains("no data"));
    }

    #[test]
    fn long_labels_are_cut() {
        let svg = bars("t", &[Row::single("x".repeat(100), 1.0, "1")], &[], None);
        assert!(svg.contains(&format!("{}…", "x".repeat(37))));
        assert!(!svg.contains(&"x".repeat(39)));
    }
}
