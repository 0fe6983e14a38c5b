//! Metric filters (`PutMetricFilter`, `DescribeMetricFilters`, `DeleteMetricFilter` on
//! the CloudWatch Logs API): a filter pattern over a log group that turns matching records
//! into a metric in a namespace of the caller's choosing, which `GetMetricStatistics` and
//! alarms read like Bedrock's. The values are computed from the group's records when
//! asked for (Logs Insights over the store), so a filter also covers the records that
//! arrived before it; definitions live in `control/metric_filters.json`.

use logbook_journal::Disk;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Most filters per log group (CloudWatch's limit).
pub const MAX_PER_GROUP: usize = 100;

/// One metric filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricFilter {
    /// Name, unique per log group.
    pub filter_name: String,
    /// The pattern, as given.
    pub filter_pattern: String,
    /// The pattern as a Logs Insights filter expression (`None`: every record).
    pub insights_filter: Option<String>,
    /// The log group.
    pub log_group_name: String,
    /// Metric name.
    pub metric_name: String,
    /// Metric namespace.
    pub metric_namespace: String,
    /// `"1"` (a number) or `"$.path"` (a field of the record).
    pub metric_value: String,
    /// Value for periods with no match (CloudWatch's `defaultValue`).
    pub default_value: Option<f64>,
    /// Unit.
    pub unit: Option<String>,
    /// Epoch ms.
    pub creation_time: i64,
}

impl MetricFilter {
    /// The Insights expression of the value: a number, or a backquoted field.
    pub fn value_expr(&self) -> Result<String, String> {
        let v = self.metric_value.trim();
        if let Some(path) = v.strip_prefix("$.") {
            if path.is_empty()
                || !path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
            {
                return Err(format!(
                    "metricValue {v:?}: a field must look like $.input.inputTokenCount"
                ));
            }
            return Ok(format!("`{path}`"));
        }
        match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(format!("{n}")),
            _ => Err(format!(
                "metricValue {v:?}: expected a number or a field ($.input.inputTokenCount)"
            )),
        }
    }
}

/// The filters of one gateway.
#[derive(Debug)]
pub struct MetricFilters {
    path: PathBuf,
    inner: Mutex<BTreeMap<(String, String), MetricFilter>>,
}

impl MetricFilters {
    /// Open (or create) `control/metric_filters.json`.
    pub fn open(data_dir: &std::path::Path) -> Result<MetricFilters, String> {
        let path = data_dir.join("control").join("metric_filters.json");
        let list: Vec<MetricFilter> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(MetricFilters {
            path,
            inner: Mutex::new(
                list.into_iter()
                    .map(|f| ((f.log_group_name.clone(), f.filter_name.clone()), f))
                    .collect(),
            ),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), MetricFilter>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, m: &BTreeMap<(String, String), MetricFilter>) -> std::io::Result<()> {
        let list: Vec<&MetricFilter> = m.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
        logbook_journal::RealDisk.write_atomic(&self.path, &bytes)
    }

    /// Create or replace a filter.
    pub fn put(&self, f: MetricFilter) -> Result<(), String> {
        f.value_expr()?;
        let mut m = self.lock();
        let key = (f.log_group_name.clone(), f.filter_name.clone());
        let in_group = m.keys().filter(|(g, _)| *g == f.log_group_name).count();
        if !m.contains_key(&key) && in_group >= MAX_PER_GROUP {
            return Err(format!(
                "The log group already has {MAX_PER_GROUP} metric filters"
            ));
        }
        let mut next = m.clone();
        next.insert(key, f);
        self.save(&next).map_err(|e| e.to_string())?;
        *m = next;
        Ok(())
    }

    /// Delete one; `false` when there is none by that name.
    pub fn delete(&self, group: &str, name: &str) -> Result<bool, String> {
        let mut m = self.lock();
        let mut next = m.clone();
        if next
            .remove(&(group.to_string(), name.to_string()))
            .is_none()
        {
            return Ok(false);
        }
        self.save(&next).map_err(|e| e.to_string())?;
        *m = next;
        Ok(true)
    }

    /// Every filter, by group then name.
    pub fn list(&self) -> Vec<MetricFilter> {
        self.lock().values().cloned().collect()
    }

    /// The filters that produce `namespace` / `metric`.
    pub fn producing(&self, namespace: &str, metric: &str) -> Vec<MetricFilter> {
        self.lock()
            .values()
            .filter(|f| f.metric_namespace == namespace && f.metric_name == metric)
            .cloned()
            .collect()
    }
}
