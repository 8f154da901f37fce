//! The web console at `/ui`: one page and one script embedded in the binary (no build step),
//! and the HTML its views show, drawn on the server with the run report's chart builder
//! ([`sluice_pipeline::chart`]) so that a preview and a report look alike.
//!
//! The page and the script hold no data and are served to anyone; every view fetches its data
//! from the API with the token the user entered (kept in the tab's `sessionStorage`), so the
//! console has exactly the API's auth. Its responses carry a Content-Security-Policy that
//! allows only the service's own script, and a job's report is shown in a sandboxed frame.

use crate::routes::{require_read, Problem};
use crate::State;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sluice_pipeline::chart::{bars, bars_keyed, escape, paired, Row};
use sluice_pipeline::report::Report;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

const PAGE: &str = include_str!("ui/console.html");
const SCRIPT: &str = include_str!("ui/console.js");

/// What the console's page may load: its own script, its inline styles, data from the API.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    connect-src 'self'; img-src 'self' data:; frame-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// A report page has no script at all and opens sandboxed wherever it is shown.
const REPORT_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'";

/// The console's routes.
pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/console.js", get(script))
        .route("/ui/mix", get(mix_view))
        .route("/ui/catalog", get(catalog_view))
        .route("/v1/jobs/{id}/report.html", get(report_page))
        .route("/v1/whoami", get(whoami))
}

/// `GET /v1/whoami`: the name and scope of the request's token (what the console shows as
/// "signed in as"); `anonymous` without one where anonymous reads are allowed.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, description = "{\"name\", \"scope\"}: read, write, metrics or anonymous"), (status = 401, description = "No or unknown token", body = crate::routes::ProblemBody)))]
pub(crate) async fn whoami(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let body = match crate::routes::bearer(&headers).map(|t| state.config.token(t)) {
        Some(Some(t)) => serde_json::json!({ "name": t.name, "scope": t.scope }),
        Some(None) => return Err(Problem::new(401, "unknown token")),
        None if state.config.anonymous_read => {
            serde_json::json!({ "name": null, "scope": "anonymous" })
        }
        None => return Err(crate::routes::token_required()),
    };
    Ok(axum::Json(body).into_response())
}

fn with_headers(mut resp: Response, content_type: &'static str, policy: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn page() -> Response {
    with_headers(
        PAGE.into_response(),
        "text/html; charset=utf-8",
        PAGE_POLICY,
    )
}

async fn script() -> Response {
    with_headers(
        SCRIPT.into_response(),
        "text/javascript; charset=utf-8",
        PAGE_POLICY,
    )
}

pub(crate) fn html_fragment(body: String) -> Response {
    with_headers(
        body.into_response(),
        "text/html; charset=utf-8",
        REPORT_POLICY,
    )
}

/// `GET /v1/jobs/{id}/report.html`: the job's report as the page `sluice run` writes, with
/// paths relative to their roots (drawn from the stored report.json).
#[utoipa::path(get, path = "/v1/jobs/{id}/report.html", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "report.html of the run", content_type = "text/html"), (status = 404, description = "No such job, or no report yet", body = crate::routes::ProblemBody)))]
pub(crate) async fn report_page(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let text = match state.store.report(&id).map_err(crate::routes::internal)? {
        None => return Err(Problem::new(404, format!("no job {id}"))),
        Some(None) => return Err(Problem::new(404, format!("job {id} has no report yet"))),
        Some(Some(r)) => state.config.relative_paths(&r),
    };
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        Problem::new(
            500,
            format!("job {id}'s report.json could not be read back: {e}"),
        )
    })?;
    Ok(html_fragment(sluice_pipeline::report_html::render(&report)))
}

/// `GET /ui/mix?…` (the parameters of `/mix`): the preview drawn, for the console's form.
async fn mix_view(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let json = crate::routes::mix_json(&state, &headers, &q).await?;
    let plan: serde_json::Value = serde_json::from_str(&json).map_err(crate::routes::internal)?;
    Ok(html_fragment(mix_html(&plan)))
}

/// Query of `/ui/catalog` and `/v1/datasets`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupQuery {
    /// Columns to group by, comma separated (default `domain,task`).
    pub by: Option<String>,
    /// A condition over catalog columns.
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

/// Most columns one group-by may name.
const MAX_GROUP_BY: usize = 8;

impl GroupQuery {
    /// The columns, checked for shape (existence is checked against the catalog).
    pub fn columns(&self) -> Result<Vec<String>, Problem> {
        let by = self.by.as_deref().unwrap_or("domain,task");
        let cols: Vec<String> = by
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        if cols.len() > MAX_GROUP_BY {
            return Err(
                Problem::new(422, format!("by: at most {MAX_GROUP_BY} columns")).field("by"),
            );
        }
        if let Some(c) = cols.iter().find(|c| {
            c.len() > 64
                || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                || c.starts_with(|ch: char| ch.is_ascii_digit())
        }) {
            return Err(Problem::new(
                422,
                format!(
                    "by: {:?} is not a column name",
                    c.chars().take(64).collect::<String>()
                ),
            )
            .field("by"));
        }
        Ok(cols)
    }
}

/// `GET /ui/catalog?by=domain,task&where=…`: the catalog grouped, as a chart and a table.
async fn catalog_view(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<GroupQuery>,
) -> Result<Response, Problem> {
    require_read(&state, &headers)?;
    let by = q.columns()?;
    let filtered = q.filter.as_deref().is_some_and(|f| !f.trim().is_empty());
    let (rows, warnings) = crate::routes::catalog_groups(&state, by.clone(), q.filter).await?;
    let mut h = String::new();
    if !warnings.is_empty() {
        h.push_str("<ul id=\"catalog-warnings\" class=\"warn\">");
        for w in &warnings {
            let _ = write!(h, "<li>{}</li>", escape(w));
        }
        h.push_str("</ul>");
    }
    h.push_str(&catalog_html(&by, &rows, filtered));
    Ok(html_fragment(h))
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "(none)".into(),
        v => v.to_string(),
    }
}

/// A whole number with separators of thousands (12,345,678), as the console writes them.
fn count(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A mix plan (the JSON `/mix` answers) as charts: each pool's share requested and planned,
/// each task's quota split into what the data gives once and what is upsampled, then a table.
pub fn mix_html(plan: &serde_json::Value) -> String {
    let mut h = String::new();
    let unit = plan["unit"].as_str().unwrap_or("samples");
    let pools = plan["pools"].as_array().cloned().unwrap_or_default();
    let _ = write!(
        h,
        "<p id=\"mix-summary\">{} <b>{}</b> by {} · planned total <b id=\"mix-total\">{}</b> {}</p>",
        escape(plan["mode"].as_str().unwrap_or("")),
        escape(&text(&plan["ratio"])),
        escape(unit),
        count(num(&plan["total"])),
        escape(unit)
    );
    if let Some(w) = plan["warnings"].as_array().filter(|w| !w.is_empty()) {
        h.push_str("<ul id=\"mix-warnings\" class=\"warn\">");
        for w in w {
            let _ = write!(h, "<li>{}</li>", escape(&text(w)));
        }
        h.push_str("</ul>");
    }
    let shares: Vec<(String, f64, f64)> = pools
        .iter()
        .map(|p| {
            (
                text(&p["pool"]),
                num(&p["requested_share"]),
                num(&p["share"]),
            )
        })
        .collect();
    h.push_str(&paired(
        "pool shares",
        &shares,
        ["requested", "planned"],
        "",
    ));
    let in_unit = |p: &serde_json::Value| {
        if unit == "tokens" {
            num(&p["available_tokens"])
        } else {
            num(&p["available_samples"])
        }
    };
    let mut rows = Vec::new();
    for p in &pools {
        for t in p["tasks"].as_array().into_iter().flatten() {
            let (quota, avail) = (num(&t["quota"]), in_unit(t));
            let once = quota.min(avail);
            rows.push(Row {
                label: format!("{} · {}", text(&p["pool"]), text(&t["task"])),
                segments: vec![(once, 0), (quota - once, 2)],
                note: format!(
                    "{} of {}{}",
                    count(quota),
                    count(avail),
                    if num(&t["repeat"]) > 1.0 {
                        format!(" (×{:.2})", num(&t["repeat"]))
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }
    if !rows.is_empty() {
        let _ = write!(
            h,
            "<h3>Quota per task ({})</h3>{}",
            escape(unit),
            bars_keyed(
                "quota per task",
                &rows,
                &[("from the data once", 0), ("upsampled", 2)],
                None
            )
        );
    }
    h.push_str("<table id=\"mix-pools\"><tr><th>pool</th><th>available samples</th><th>available tokens</th><th>quota</th><th>selected samples</th><th>selected tokens</th><th>share</th><th title=\"passes over the pool's data: below 1 a part is used, above 1 it is upsampled\">epochs</th></tr>");
    for p in &pools {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.2}</td></tr>",
            escape(&text(&p["pool"])),
            count(num(&p["available_samples"])),
            count(num(&p["available_tokens"])),
            count(num(&p["quota"])),
            count(num(&p["selected_samples"])),
            count(num(&p["selected_tokens"])),
            num(&p["share"]),
            num(&p["repeat"]),
        );
    }
    h.push_str("</table>");
    for p in &pools {
        let ids: Vec<String> = p["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
            .map(|e| format!("<code>{}</code>", escape(&text(e))))
            .collect();
        if !ids.is_empty() {
            let _ = write!(
                h,
                "<p class=\"muted\">{} examples: {}</p>",
                escape(&text(&p["pool"])),
                ids.join(" ")
            );
        }
    }
    h
}

/// Catalog groups (rows of `frame_json`) as a chart of samples and a table.
pub fn catalog_html(by: &[String], groups: &serde_json::Value, filtered: bool) -> String {
    let rows = groups.as_array().cloned().unwrap_or_default();
    let mut h = String::new();
    if rows.is_empty() {
        h.push_str(if filtered {
            "<p id=\"catalog-empty\">No curated sample matches the condition.</p>"
        } else {
            "<p id=\"catalog-empty\">The catalog is empty: no job has curated anything yet.</p>"
        });
        return h;
    }
    let label = |r: &serde_json::Value| {
        if by.is_empty() {
            "all".to_string()
        } else {
            by.iter()
                .map(|b| text(&r[b]))
                .collect::<Vec<_>>()
                .join(" · ")
        }
    };
    let chart_rows: Vec<Row> = rows
        .iter()
        .take(40)
        .map(|r| {
            Row::single(
                label(r),
                num(&r["samples"]),
                format!(
                    "{} · {} tok",
                    count(num(&r["samples"])),
                    count(num(&r["tokens"]))
                ),
            )
        })
        .collect();
    h.push_str(&bars("samples per group", &chart_rows, &[], None));
    if rows.len() > 40 {
        let _ = write!(
            h,
            "<p class=\"muted\">The chart shows the 40 largest of {} groups; the table has them all.</p>",
            rows.len()
        );
    }
    h.push_str("<table id=\"catalog-groups\"><tr>");
    for b in by {
        let _ = write!(h, "<th>{}</th>", escape(b));
    }
    h.push_str("<th>samples</th><th>turns</th><th>tokens</th><th>chars</th><th>copies</th></tr>");
    for r in &rows {
        h.push_str("<tr>");
        for b in by {
            let _ = write!(h, "<td>{}</td>", escape(&text(&r[b])));
        }
        for c in ["samples", "turns", "tokens", "chars", "copies"] {
            let _ = write!(h, "<td>{}</td>", count(num(&r[c])));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plan_draws_shares_quotas_and_escaped_names() {
        let plan = json!({
            "mode": "sft", "unit": "samples", "ratio": "1:5", "total": 600.0,
            "warnings": ["pool <b>domain</b> is short"],
            "pools": [
                {"pool": "domain", "requested_share": 0.1667, "share": 0.1667, "available_samples": 50,
                 "available_tokens": 5000, "quota": 100.0, "selected_samples": 100.0, "selected_tokens": 10000.0,
                 "repeat": 2.0, "examples": ["<script>alert(1)</script>"],
                 "tasks": [{"task": "qa", "available_samples": 50, "available_tokens": 5000, "quota": 100.0, "repeat": 2.0}]},
                {"pool": "general", "requested_share": 0.8333, "share": 0.8333, "available_samples": 900,
                 "available_tokens": 90000, "quota": 500.0, "selected_samples": 500.0, "selected_tokens": 50000.0,
                 "repeat": 0.556, "examples": [],
                 "tasks": [{"task": "chat", "available_samples": 900, "available_tokens": 90000, "quota": 500.0, "repeat": 0.556}]}
            ]
        });
        let h = mix_html(&plan);
        assert!(h.contains("<b id=\"mix-total\">600</b>"), "{h}");
        assert!(h.contains("pool &lt;b&gt;domain&lt;/b&gt; is short"));
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;"));
        // The domain task: 50 from the data, 50 upsampled, "100 of 50 (×2.00)".
        assert!(h.contains("100 of 50 (×2.00)"), "{h}");
        assert!(h.contains("upsampled"));
        // Shares drawn on one scale: the planned general share is the widest bar.
        assert_eq!(h.matches("<svg").count(), 2);
        assert!(h.contains("<td>0.833</td>"));
    }

    #[test]
    fn catalog_groups_draw_a_row_per_group() {
        let by = vec!["domain".to_string(), "task".to_string()];
        let groups = json!([
            {"domain": "medical", "task": "qa", "samples": 1200, "turns": 2400, "tokens": 123456, "chars": 300000, "copies": 0},
            {"domain": null, "task": "<i>chat</i>", "samples": 7, "turns": 14, "tokens": 100, "chars": 200, "copies": 0}
        ]);
        let h = catalog_html(&by, &groups, false);
        assert!(
            h.contains("<td>medical</td><td>qa</td><td>1,200</td>"),
            "{h}"
        );
        assert!(h.contains("(none) · &lt;i&gt;chat&lt;/i&gt;"));
        assert!(!h.contains("<i>"));
        assert!(catalog_html(&by, &json!([]), false).contains("no job has curated"));
        assert!(catalog_html(&by, &json!([]), true).contains("matches the condition"));
    }

    #[test]
    fn group_by_names_are_checked_for_shape() {
        let q = |by: &str| GroupQuery {
            by: Some(by.into()),
            filter: None,
        };
        assert_eq!(
            q("domain, region").columns().ok(),
            Some(vec!["domain".to_string(), "region".to_string()])
        );
        for bad in ["a;DROP", "1x", "a b", "x\"", "a,b,c,d,e,f,g,h,i"] {
            assert!(q(bad).columns().is_err(), "{bad}");
        }
    }
}
