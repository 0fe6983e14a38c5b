//! `logbook report chargeback`: cost and tokens by period and dimension, read straight
//! from the data folder (no server needed), in the formats FinOps tools take.

use anyhow::Context;
use logbook_query::report::{Chargeback, Dimension, Period};
use logbook_query::{Engine, Language, QueryRequest};
use std::io::Write;

/// What to report and how.
pub struct Args {
    /// `--by` values, each possibly comma-separated.
    pub by: Vec<String>,
    /// `day`, `week`, `month`.
    pub period: String,
    /// IANA zone.
    pub tz: String,
    /// Range, epoch ms.
    pub start_ms: i64,
    /// Range end, epoch ms.
    pub end_ms: i64,
    /// `table`, `csv`, `json`, `html`, `focus`.
    pub format: String,
    /// Log groups (none: every group).
    pub groups: Vec<String>,
}

/// Parse `--by` values (`team,model` or repeated).
pub fn dimensions(by: &[String]) -> anyhow::Result<Vec<Dimension>> {
    let mut out = Vec::new();
    for part in by.iter().flat_map(|b| b.split(',')) {
        if !part.trim().is_empty() {
            out.push(Dimension::parse(part)?);
        }
    }
    Ok(out)
}

/// Run the report and print it.
pub fn chargeback(config: &logbook_server::Config, a: Args) -> anyhow::Result<()> {
    let store = crate::query_cmd::open_for_query(config)?;
    let groups = if a.groups.is_empty() {
        store.groups().into_iter().map(|g| g.name).collect()
    } else {
        a.groups
    };
    if groups.is_empty() {
        anyhow::bail!(
            "there is no log group to report on in {}",
            config.data_dir.display()
        );
    }
    let spec = Chargeback {
        by: dimensions(&a.by)?,
        period: Period::parse(&a.period)?,
        tz: a.tz,
    };
    let focus = a.format == "focus";
    let engine = Engine::new(store, None);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let text = if focus {
        let req = QueryRequest {
            groups,
            start_ms: a.start_ms,
            end_ms: a.end_ms,
            query: spec.focus_sql()?,
            language: Language::Sql,
            limit: usize::MAX / 2,
            after_seq: 0,
            content: Default::default(),
        };
        let r = rt.block_on(engine.run(&req))?;
        spec.focus_csv(&r)?
    } else {
        // From the store files' rollups where they fit, the SQL for the rest.
        let (report, _) = rt.block_on(engine.chargeback(&spec, &groups, a.start_ms, a.end_ms))?;
        match a.format.as_str() {
            "csv" => report.to_csv(),
            "json" => serde_json::to_string_pretty(&report)? + "\n",
            "html" => report.to_html(),
            _ => report.to_table(),
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
