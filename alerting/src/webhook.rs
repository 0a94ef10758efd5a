//! The webhook message Alertmanager 0.25 posts (`notify/webhook`, version 4), built from a
//! group of alerts, so an existing webhook receiver keeps working unchanged; and the
//! identifiers it carries: an alert's fingerprint and the group key.
//!
//! ```json
//! {"receiver":"team","status":"firing","alerts":[{"status":"firing","labels":{…},
//!  "annotations":{…},"startsAt":"…","endsAt":"…","generatorURL":"…","fingerprint":"…"}],
//!  "groupLabels":{…},"commonLabels":{…},"commonAnnotations":{…},"externalURL":"…",
//!  "version":"4","groupKey":"{}/{team=\"db\"}:{alertname=\"Down\"}","truncatedAlerts":0}
//! ```

use crate::rule::LabelMap;
use serde::Serialize;

/// Go's zero time, as Alertmanager writes a firing alert's `endsAt`.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifiedAlert {
    /// Its labels.
    pub labels: LabelMap,
    /// Its annotations.
    pub annotations: LabelMap,
    /// RFC 3339 times, as received or computed by the caller.
    pub starts_at: String,
    /// See `starts_at`; shown only once resolved.
    pub ends_at: String,
    /// Where it came from.
    pub generator_url: String,
    /// Resolved (its end has passed).
    pub resolved: bool,
}

/// Alertmanager's fingerprint of a label set (Prometheus' `model.LabelSet.Fingerprint`):
/// FNV-1a 64 over each name and value in name order, each followed by the byte 0xff.
pub fn fingerprint(labels: &LabelMap) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut add = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    };
    for (k, v) in labels {
        k.bytes().for_each(&mut add);
        add(0xff);
        v.bytes().for_each(&mut add);
        add(0xff);
    }
    h
}

/// A label set as Prometheus' `model.LabelSet.String` writes it: `{a="1", b="2"}`.
pub fn label_set_string(labels: &LabelMap) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// A group's key, as Alertmanager's aggregation groups are named: the route's key, a
/// colon and the group labels.
pub fn group_key(route_key: &str, group_labels: &LabelMap) -> String {
    format!("{route_key}:{}", label_set_string(group_labels))
}

/// Alertmanager's order of a notification's alerts (`types.AlertSlice`): by `job`, then
/// `instance` (an alert with the label before one without), then by the whole label set.
pub fn sort_alerts(alerts: &mut [NotifiedAlert]) {
    alerts.sort_by(|a, b| alert_order(&a.labels, &b.labels));
}

/// The comparison [`sort_alerts`] sorts by, on two alerts' labels.
pub fn alert_order(a: &LabelMap, b: &LabelMap) -> std::cmp::Ordering {
    for key in ["job", "instance"] {
        match (a.get(key), b.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => return std::cmp::Ordering::Greater,
            (Some(_), None) => return std::cmp::Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    let (x, y): (Vec<_>, Vec<_>) = (a.iter().collect(), b.iter().collect());
    x.cmp(&y)
}

/// What every map of `maps` shares (same key and value).
pub(crate) fn common(maps: &[&LabelMap]) -> LabelMap {
    let Some((first, rest)) = maps.split_first() else {
        return LabelMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Go's `regexp.QuoteMeta`, which Alertmanager applies to the receiver's name.
pub(crate) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertJson<'a> {
    status: &'static str,
    labels: &'a LabelMap,
    annotations: &'a LabelMap,
    starts_at: &'a str,
    ends_at: &'a str,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson<'a> {
    receiver: String,
    status: &'static str,
    alerts: Vec<AlertJson<'a>>,
    group_labels: &'a LabelMap,
    common_labels: LabelMap,
    common_annotations: LabelMap,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: String,
    truncated_alerts: u64,
}

/// The webhook message for `alerts` (sorted here as Alertmanager sorts them), of the group
/// with `group_labels` under the route with key `route_key`, for `receiver`; at most
/// `max_alerts` alerts (0: all), the rest counted in `truncatedAlerts`.
pub fn webhook_message(
    receiver: &str,
    route_key: &str,
    group_labels: &LabelMap,
    alerts: &[NotifiedAlert],
    external_url: &str,
    max_alerts: usize,
) -> String {
    let mut sorted = alerts.to_vec();
    sort_alerts(&mut sorted);
    let firing = sorted.iter().any(|a| !a.resolved);
    let labels: Vec<&LabelMap> = sorted.iter().map(|a| &a.labels).collect();
    let annotations: Vec<&LabelMap> = sorted.iter().map(|a| &a.annotations).collect();
    let keep = if max_alerts == 0 {
        sorted.len()
    } else {
        max_alerts.min(sorted.len())
    };
    let msg = MessageJson {
        receiver: quote_meta(receiver),
        status: if firing { "firing" } else { "resolved" },
        alerts: sorted[..keep]
            .iter()
            .map(|a| AlertJson {
                status: if a.resolved { "resolved" } else { "firing" },
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: &a.starts_at,
                // Alertmanager shows a firing alert's end as Go's zero time.
                ends_at: if a.resolved { &a.ends_at } else { GO_ZERO_TIME },
                generator_url: &a.generator_url,
                fingerprint: format!("{:016x}", fingerprint(&a.labels)),
            })
            .collect(),
        group_labels,
        common_labels: common(&labels),
        common_annotations: common(&annotations),
        external_url,
        version: "4",
        group_key: group_key(route_key, group_labels),
        truncated_alerts: (sorted.len() - keep) as u64,
    };
    serde_json::to_string(&msg).unwrap_or_default()
}
