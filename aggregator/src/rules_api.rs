//! `/api/v1/rules`, `/api/v1/alerts` and `POST /-/reload`, in Prometheus 2.42's shape.
//!
//! ```json
//! {"status":"success","data":{"groups":[{"name":"g","file":"/etc/outpost/rules.yml",
//!   "rules":[{"state":"firing","name":"HostDown","query":"up == 0","duration":300,
//!     "keepFiringFor":0,"labels":{},"annotations":{},"alerts":[...],"health":"ok",
//!     "evaluationTime":0.0003,"lastEvaluation":"2026-12-01T00:00:00.000Z","type":"alerting"}],
//!   "interval":30,"limit":0,"evaluationTime":0.0004,"lastEvaluation":"..."}]}}
//! ```
//!
//! `/api/v1/rules?type=alert|record` keeps one kind, as Prometheus does.

use crate::http::{AppState, rfc3339_nano};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_alerting::rulefile::RuleKind;
use outpost_alerting::template::gofmt::format_e_shortest;
use outpost_alerting::{Alert, Health, Rule};
use serde_json::{Value, json};

/// Go's zero time, which Prometheus shows for what has not happened yet.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn health(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Ok => "ok",
        Health::Err => "err",
    }
}

/// An alert; `ns` is its group's sub-millisecond slot offset ([`Group::slot_sub_ms_ns`]).
///
/// [`Group::slot_sub_ms_ns`]: outpost_alerting::Group::slot_sub_ms_ns
fn alert_json(a: &Alert, ns: u32) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339_nano(a.active_at_ms, ns),
        "value": format_e_shortest(a.value),
    });
    if let Some(k) = a.keep_firing_since_ms {
        v["keepFiringSince"] = Value::String(rfc3339_nano(k, ns));
    }
    v
}

/// Seconds as Go's JSON prints a float64: whole numbers without a fraction (`2`, not `2.0`).
fn secs_json(s: f64) -> Value {
    if s.fract() == 0.0 && s.abs() < 1e15 {
        Value::from(s as i64)
    } else {
        Value::from(s)
    }
}

fn rule_json(r: &Rule, secs: f64, ns: u32) -> Value {
    let last = r
        .last_eval_ms
        .map(|t| rfc3339_nano(t, ns))
        .unwrap_or_else(|| ZERO_TIME.into());
    let mut v = match &r.spec.kind {
        RuleKind::Alert(name) => json!({
            "state": r.alert_state().as_str(),
            "name": name,
            "query": r.spec.expr,
            "duration": secs_json(r.spec.for_ms as f64 / 1000.0),
            "keepFiringFor": secs_json(r.spec.keep_firing_for_ms as f64 / 1000.0),
            "labels": r.spec.labels,
            "annotations": r.spec.annotations,
            "alerts": r.active_alerts().into_iter().map(|a| alert_json(a, ns)).collect::<Vec<_>>(),
            "health": health(r.health),
            "evaluationTime": secs_json(secs),
            "lastEvaluation": last,
            "type": "alerting",
        }),
        RuleKind::Record(name) => {
            let mut v = json!({
                "name": name,
                "query": r.spec.expr,
                "health": health(r.health),
                "evaluationTime": secs_json(secs),
                "lastEvaluation": last,
                "type": "recording",
            });
            // Prometheus leaves out a recording rule's empty labels.
            if !r.spec.labels.is_empty() {
                v["labels"] = json!(r.spec.labels);
            }
            v
        }
    };
    if let Some(e) = &r.last_error {
        v["lastError"] = Value::String(e.clone());
    }
    v
}

fn bad_data(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "errorType": "bad_data", "error": msg})),
    )
        .into_response()
}

/// `GET /api/v1/rules`.
pub async fn rules(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let mut kind = None;
    for pair in q.as_deref().unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("type=") {
            match v {
                "alert" | "record" => kind = Some(v.to_string()),
                "" => {}
                other => return bad_data(format!("not supported value {other:?}")),
            }
        }
    }
    let groups = s.rules.groups();
    let out: Vec<Value> = groups
        .iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .group
                .rules()
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    !matches!(
                        (kind.as_deref(), &r.spec.kind),
                        (Some("alert"), RuleKind::Record(_)) | (Some("record"), RuleKind::Alert(_))
                    )
                })
                .map(|(i, r)| {
                    let secs = g.rule_seconds.get(i).copied().unwrap_or(0.0);
                    rule_json(r, secs, g.group.slot_sub_ms_ns())
                })
                .collect();
            json!({
                "name": g.group.name(),
                "file": g.group.file(),
                "rules": rules,
                "interval": secs_json(g.group.interval_ms() as f64 / 1000.0),
                "limit": g.group.limit(),
                "evaluationTime": secs_json(g.eval_seconds),
                "lastEvaluation": g
                    .last_eval_wall_ms
                    .map(|t| rfc3339_nano(t, 0))
                    .unwrap_or_else(|| ZERO_TIME.into()),
            })
        })
        .collect();
    axum::Json(json!({"status": "success", "data": {"groups": out}})).into_response()
}

/// `GET /api/v1/alerts`: every pending and firing alert.
pub async fn alerts(State(s): State<AppState>) -> Response {
    let groups = s.rules.groups();
    let out: Vec<Value> = groups
        .iter()
        .flat_map(|g| {
            let ns = g.group.slot_sub_ms_ns();
            g.group.rules().iter().flat_map(move |r| {
                r.active_alerts()
                    .into_iter()
                    .map(move |a| alert_json(a, ns))
            })
        })
        .collect();
    axum::Json(json!({"status": "success", "data": {"alerts": out}})).into_response()
}

/// `POST /-/reload`: the configuration and rule files again, as SIGHUP does; 500 with the
/// problems when refused.
pub async fn reload(State(s): State<AppState>) -> Response {
    let r = match &s.reload {
        Some(tx) => {
            let (reply, rx) = tokio::sync::oneshot::channel();
            match tx.send(reply).await {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err("the aggregator is shutting down".into())),
                Err(_) => Err("the aggregator is shutting down".into()),
            }
        }
        None => s.rules.reload(None).await.map(|_| ()),
    };
    match r {
        Ok(()) => (StatusCode::OK, "").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}
