//! Metric metadata: the latest type, HELP and UNIT of every metric family, as agents send
//! them (see `docs/WIRE.md`), kept in the store's metadata entries under [`PREFIX`] so they
//! survive a restart, and served by `GET|POST /api/v1/metadata` in Prometheus' shape:
//!
//! ```json
//! {"status":"success","data":{"node_load1":[{"type":"gauge","help":"1m load average.","unit":""}]}}
//! ```
//!
//! Parameters as Prometheus 2.42 reads them: `metric` (only this family), `limit` (at most
//! this many families, in name order; negative means all, 0 none) and `limit_per_metric`
//! (entries per family; each family has one here). A family whose samples came without
//! metadata is absent, as in Prometheus.
//!
//! The ingest writer calls [`MetadataStore::changed`] to filter what agents resend on every
//! connection, writes [`MetadataStore::entries`] in one synced commit, and then
//! [`MetadataStore::committed`] makes it visible.

use crate::api::json;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use outpost_shared::metadata::{FamilyMetadata, Metadata};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Key prefix of metadata entries in the store; the family name follows.
pub const PREFIX: &[u8] = b"metadata/";

/// The latest metadata of every family, as durably stored.
#[derive(Debug, Default)]
pub struct MetadataStore {
    families: RwLock<BTreeMap<String, Metadata>>,
}

impl MetadataStore {
    /// The store as its entries under [`PREFIX`] record it. An entry that does not decode is
    /// skipped with a warning: the next agent to connect sends that family again.
    pub fn load(entries: Vec<(Vec<u8>, Vec<u8>)>) -> MetadataStore {
        let mut families = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.strip_prefix(PREFIX) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            match Metadata::decode(&v) {
                Ok(m) => {
                    families.insert(name, m);
                }
                Err(e) => tracing::warn!(family = %name, "skipping stored metadata: {e}"),
            }
        }
        MetadataStore {
            families: RwLock::new(families),
        }
    }

    /// How many families have metadata.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no family has metadata.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metadata stored for `family`.
    pub fn get(&self, family: &str) -> Option<Metadata> {
        self.read().get(family).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Metadata>> {
        self.families.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries of `families` that differ from what is stored (the rest need no write).
    pub fn changed(&self, families: Vec<FamilyMetadata>) -> Vec<FamilyMetadata> {
        let stored = self.read();
        families
            .into_iter()
            .filter(|f| stored.get(&f.family) != Some(&f.meta))
            .collect()
    }

    /// The store entries (key, value) that record `families`.
    pub fn entries(families: &[FamilyMetadata]) -> Vec<(Vec<u8>, Vec<u8>)> {
        families
            .iter()
            .map(|f| {
                let mut k = PREFIX.to_vec();
                k.extend_from_slice(f.family.as_bytes());
                (k, f.meta.encode())
            })
            .collect()
    }

    /// `families` were durably written: serve them from now on.
    pub fn committed(&self, families: Vec<FamilyMetadata>) {
        let mut stored = self.families.write().unwrap_or_else(|p| p.into_inner());
        for f in families {
            stored.insert(f.family, f.meta);
        }
    }

    /// The `data` object of a metadata answer: families named `metric` (all when `None`),
    /// at most `limit` of them in name order when `limit` is not negative.
    pub fn answer(&self, metric: Option<&str>, limit: i64) -> String {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            help: &'a str,
            unit: &'a str,
        }
        let stored = self.read();
        let picked: Box<dyn Iterator<Item = (&String, &Metadata)>> = match metric {
            Some(m) => Box::new(stored.get_key_value(m).into_iter()),
            None => Box::new(stored.iter()),
        };
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let data: BTreeMap<&str, [Entry<'_>; 1]> = picked
            .take(take)
            .map(|(name, m)| {
                (
                    name.as_str(),
                    [Entry {
                        kind: m.kind.as_str(),
                        help: &m.help,
                        unit: &m.unit,
                    }],
                )
            })
            .collect();
        serde_json::to_string(&data).unwrap_or_else(|_| "{}".into())
    }
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn bad_data(msg: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        format!(r#"{{"status":"error","errorType":"bad_data","error":"{msg}"}}"#),
    )
}

/// `GET|POST /api/v1/metadata`. The store comes from a request extension the HTTP router
/// adds (`axum::Extension<Arc<MetadataStore>>`).
pub async fn handler(
    Extension(store): Extension<Arc<MetadataStore>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = crate::api::Params::from_request(q.as_deref(), &headers, &body);
    let param = |name: &str| p.get(name).map(str::to_string);
    let limit = match param("limit") {
        None => -1,
        Some(s) => match atoi(&s) {
            Some(n) => n,
            None => return bad_data("limit must be a number"),
        },
    };
    // Each family has one entry, which any limit per metric keeps.
    if let Some(s) = param("limit_per_metric")
        && atoi(&s).is_none()
    {
        return bad_data("limit_per_metric must be a number");
    }
    let metric = param("metric");
    let data = store.answer(metric.as_deref(), limit);
    json(
        StatusCode::OK,
        format!(r#"{{"status":"success","data":{data}}}"#),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_shared::metadata::MetricType;

    fn fam(name: &str, kind: MetricType, help: &str, unit: &str) -> FamilyMetadata {
        FamilyMetadata {
            family: name.into(),
            meta: Metadata {
                kind,
                help: help.into(),
                unit: unit.into(),
            },
        }
    }

    fn store() -> MetadataStore {
        let s = MetadataStore::default();
        s.committed(vec![
            fam("up", MetricType::Unknown, "", ""),
            fam("node_load1", MetricType::Gauge, "1m load average.", ""),
            fam(
                "req_seconds",
                MetricType::Histogram,
                "Latency \"quoted\"\nline",
                "seconds",
            ),
        ]);
        s
    }

    #[test]
    fn stored_entries_load_back_and_only_changes_need_writing() {
        let s = store();
        let all = vec![
            fam("up", MetricType::Unknown, "", ""),
            fam("node_load1", MetricType::Gauge, "1m load average.", ""),
            fam(
                "req_seconds",
                MetricType::Histogram,
                "Latency \"quoted\"\nline",
                "seconds",
            ),
        ];
        let mut entries = MetadataStore::entries(&all);
        entries.push((b"metadata/broken".to_vec(), vec![200]));
        entries.push((b"agent/x".to_vec(), vec![1]));
        let loaded = MetadataStore::load(entries);
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded.answer(None, -1), s.answer(None, -1));
        let changed = loaded.changed(vec![
            fam("up", MetricType::Unknown, "", ""),
            fam("up2", MetricType::Gauge, "", ""),
            fam("node_load1", MetricType::Gauge, "Load.", ""),
        ]);
        let names: Vec<&str> = changed.iter().map(|f| f.family.as_str()).collect();
        assert_eq!(names, ["up2", "node_load1"]);
    }

    #[test]
    fn answers_have_prometheus_shape_and_limits() {
        let s = store();
        assert_eq!(
            s.answer(None, -1),
            r#"{"node_load1":[{"type":"gauge","help":"1m load average.","unit":""}],"req_seconds":[{"type":"histogram","help":"Latency \"quoted\"\nline","unit":"seconds"}],"up":[{"type":"unknown","help":"","unit":""}]}"#
        );
        assert_eq!(
            s.answer(Some("node_load1"), -1),
            r#"{"node_load1":[{"type":"gauge","help":"1m load average.","unit":""}]}"#
        );
        assert_eq!(s.answer(Some("nope"), -1), "{}");
        assert_eq!(s.answer(None, 0), "{}");
        assert_eq!(
            s.answer(None, 1),
            r#"{"node_load1":[{"type":"gauge","help":"1m load average.","unit":""}]}"#
        );
        assert_eq!(s.answer(Some("up"), 0), "{}");
    }

    #[test]
    fn parameters_are_read_as_go_reads_them() {
        assert_eq!(atoi("12"), Some(12));
        assert_eq!(atoi("-1"), Some(-1));
        assert_eq!(atoi("+3"), Some(3));
        for bad in ["", "1.5", "x", " 1", "1e3", "-"] {
            assert_eq!(atoi(bad), None, "{bad:?}");
        }
        let mut form = HeaderMap::new();
        form.insert(
            axum::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let v = |n: &str, q: Option<&str>, h: &HeaderMap, b: &str| {
            crate::api::Params::from_request(q, h, b.as_bytes())
                .get(n)
                .map(str::to_string)
        };
        assert_eq!(
            v(
                "metric",
                Some("metric=a%5Fb&limit=2"),
                &HeaderMap::new(),
                ""
            ),
            Some("a_b".into())
        );
        assert_eq!(
            v("metric", Some("metric=from_url"), &form, "metric=from_body"),
            Some("from_body".into())
        );
        assert_eq!(
            v(
                "metric",
                Some("metric=from_url"),
                &HeaderMap::new(),
                "metric=ignored"
            ),
            Some("from_url".into())
        );
        assert_eq!(
            v("metric", Some("metric=&metric=b"), &form, ""),
            Some("b".into())
        );
        assert_eq!(v("limit", Some("metric=a"), &form, ""), None);
    }
}
