//! The notification pipeline's HTTP API ([`crate::notify`]).
//!
//! In Alertmanager 0.25's v2 shape, so `amtool` and Grafana's Alertmanager data source
//! manage silences and read alerts as they would from Alertmanager:
//! - `GET /api/v2/alerts` (`filter`, `active`, `silenced`, `inhibited`, `unprocessed`,
//!   `receiver`), `POST /api/v2/alerts` (alerts from any client, as to Alertmanager);
//! - `GET`/`POST /api/v2/silences`, `GET`/`DELETE /api/v2/silence/{id}`;
//! - `GET /api/v2/status`, `GET /api/v2/receivers`.
//!
//! Outpost's own, beside Prometheus' `/api/v1/alerts`:
//! - `GET /api/v1/alerts/history[?fingerprint=…]`: each alert's events (fired, notified
//!   whom and when, acknowledged, notes, resolved) and its escalation;
//! - `POST /api/v1/alerts/acknowledge` and `POST /api/v1/alerts/note`, JSON
//!   `{"fingerprint":"<16 hex digits>","by":"ana","note":"on it"}`.
//!
//! Every route answers 404 with an explanation when `[alerting] notifications` is not set.

// Handlers return `Result<_, Response>` to answer early; the response is built once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use crate::http::{AppState, rfc3339};
use crate::notify::{AlertStatus, ApiProblem, Command, Notifications, StoredSilence};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use outpost_alerting::dispatch::DispatchedAlert;
use outpost_alerting::route::{matches_all, parse_matchers};
use outpost_alerting::rule::LabelMap;
use outpost_alerting::silence::SilenceMatcher;
use serde::Deserialize;
use serde_json::{Value, json};

/// The routes, to merge into the authenticated API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/alerts", get(list_alerts).post(post_alerts))
        .route("/api/v2/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .route("/api/v1/alerts/history", get(history))
        .route("/api/v1/alerts/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/note", post(note))
}

fn error(p: ApiProblem) -> Response {
    let code = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(Value::String(p.message))).into_response()
}

fn pipeline(s: &AppState) -> Result<&Notifications, Response> {
    s.notifications.as_ref().ok_or_else(|| {
        error(ApiProblem {
            status: 404,
            message: "notifications are not configured: set [alerting] notifications to an alertmanager.yml".into(),
        })
    })
}

fn params(q: Option<&str>) -> crate::api::Params {
    crate::api::Params::from_request(q, &HeaderMap::new(), &[])
}

fn flag(p: &crate::api::Params, name: &str) -> Result<bool, Response> {
    match p.get(name) {
        None => Ok(true),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(error(ApiProblem {
            status: 400,
            message: format!("{name}: {v:?} is not a boolean"),
        })),
    }
}

/// The `filter` parameters as matchers (`alertname="Down"`, `{a=~"x"}` spellings).
fn filters(p: &crate::api::Params) -> Result<Vec<outpost_promql::Matcher>, Response> {
    let mut out = vec![];
    for f in p.all("filter") {
        out.extend(parse_matchers(f).map_err(|e| {
            error(ApiProblem {
                status: 400,
                message: format!("bad matcher format: {f}: {e}"),
            })
        })?);
    }
    Ok(out)
}

fn alert_json(a: &AlertStatus) -> Value {
    let state = if a.silenced_by.is_empty() && a.inhibited_by.is_empty() {
        "active"
    } else {
        "suppressed"
    };
    let h = &a.alert;
    json!({
        "annotations": h.alert.annotations,
        "endsAt": rfc3339(h.alert.ends_at_ms.min(253_402_300_799_000)),
        "fingerprint": format!("{:016x}", outpost_alerting::webhook::fingerprint(&h.alert.labels)),
        "receivers": h.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "startsAt": rfc3339(h.alert.starts_at_ms),
        "status": {"inhibitedBy": a.inhibited_by, "silencedBy": a.silenced_by, "state": state},
        "updatedAt": rfc3339(h.updated_ms),
        "generatorURL": h.alert.generator_url,
        "labels": h.alert.labels,
    })
}

async fn list_alerts(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p = params(q.as_deref());
    let (active, silenced, inhibited) = match (
        flag(&p, "active"),
        flag(&p, "silenced"),
        flag(&p, "inhibited"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let matchers = match filters(&p) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let receiver = match p
        .get("receiver")
        .map(|r| regex::Regex::new(&format!("^(?:{r})$")))
    {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            return error(ApiProblem {
                status: 400,
                message: format!("receiver: {e}"),
            });
        }
    };
    let all = match n.ask(Command::ListAlerts).await {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let mut out: Vec<&AlertStatus> = all
        .iter()
        .filter(|a| matches_all(&matchers, &a.alert.alert.labels))
        .filter(|a| {
            receiver
                .as_ref()
                .is_none_or(|r| a.alert.receivers.iter().any(|x| r.is_match(x)))
        })
        .filter(|a| {
            let (sil, inh) = (!a.silenced_by.is_empty(), !a.inhibited_by.is_empty());
            (active || sil || inh) && (silenced || !sil) && (inhibited || !inh)
        })
        .collect();
    out.sort_by_key(|a| outpost_alerting::webhook::fingerprint(&a.alert.alert.labels));
    axum::Json(out.into_iter().map(alert_json).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: LabelMap,
    #[serde(default)]
    annotations: LabelMap,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

fn time(field: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    match v.as_deref() {
        None | Some("") | Some("0001-01-01T00:00:00Z") => Ok(None),
        Some(t) => crate::api::parse_time(t)
            .map(Some)
            .map_err(|e| format!("{field}: {e}")),
    }
}

async fn post_alerts(State(s): State<AppState>, body: Bytes) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let list: Vec<PostableAlert> = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => {
            return error(ApiProblem {
                status: 400,
                message: format!("body: {e}"),
            });
        }
    };
    let now = outpost_service::now_ms();
    let resolve_timeout = n.resolve_timeout_ms();
    let mut alerts = vec![];
    for (i, a) in list.into_iter().enumerate() {
        let bad = |m: String| {
            error(ApiProblem {
                status: 400,
                message: format!("alert {i}: {m}"),
            })
        };
        if a.labels.is_empty() {
            return bad("at least one label pair required".into());
        }
        if let Some(k) = a
            .labels
            .keys()
            .find(|k| !outpost_alerting::rulefile::is_valid_label_name(k))
        {
            return bad(format!("invalid label name {k:?}"));
        }
        let (start, end) = match (time("startsAt", &a.starts_at), time("endsAt", &a.ends_at)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(m), _) | (_, Err(m)) => return bad(m),
        };
        let start = start.unwrap_or(now);
        let end = end.unwrap_or(now.max(start) + resolve_timeout);
        if end < start {
            return bad("start time must be before end time".into());
        }
        alerts.push(DispatchedAlert {
            labels: a.labels,
            annotations: a.annotations,
            starts_at_ms: start,
            ends_at_ms: end,
            generator_url: a.generator_url,
        });
    }
    n.alerts(alerts);
    StatusCode::OK.into_response()
}

fn silence_json(s: &StoredSilence, now: i64) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now)},
        "updatedAt": rfc3339(s.updated_at_ms),
        "comment": s.comment,
        "createdBy": s.created_by,
        "endsAt": rfc3339(s.ends_at_ms),
        "matchers": s.matchers,
        "startsAt": rfc3339(s.starts_at_ms),
    })
}

async fn list_silences(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let matchers = match filters(&params(q.as_deref())) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut all = match n.ask(Command::ListSilences).await {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    // A silence is listed when its own equality matchers satisfy the filter, as
    // Alertmanager checks filters against a silence's matchers.
    all.retain(|s| {
        let labels: LabelMap = s
            .matchers
            .iter()
            .filter(|m| m.is_equal && !m.is_regex)
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect();
        matches_all(&matchers, &labels)
    });
    let now = outpost_service::now_ms();
    // Alertmanager's order: active by end, then pending by start, then expired, latest end
    // first.
    let rank = |s: &StoredSilence| match s.state(now) {
        "active" => (0, s.ends_at_ms),
        "pending" => (1, s.starts_at_ms),
        _ => (2, -s.ends_at_ms),
    };
    all.sort_by_key(rank);
    axum::Json(all.iter().map(|s| silence_json(s, now)).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: String,
    matchers: Vec<SilenceMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

async fn post_silence(State(s): State<AppState>, body: Bytes) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(ApiProblem {
                status: 400,
                message: format!("body: {e}"),
            });
        }
    };
    let times = (
        crate::api::parse_time(&p.starts_at),
        crate::api::parse_time(&p.ends_at),
    );
    let (start, end) = match times {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return error(ApiProblem {
                status: 400,
                message: e,
            });
        }
    };
    if p.created_by.is_empty() || p.comment.is_empty() {
        return error(ApiProblem {
            status: 400,
            message: "silence invalid: createdBy and comment must not be empty".into(),
        });
    }
    let silence = StoredSilence {
        id: p.id,
        matchers: p.matchers,
        starts_at_ms: start,
        ends_at_ms: end,
        updated_at_ms: 0,
        created_by: p.created_by,
        comment: p.comment,
    };
    match n.ask(|tx| Command::PutSilence(silence, tx)).await {
        Ok(Ok(id)) => axum::Json(json!({"silenceID": id})).into_response(),
        Ok(Err(e)) | Err(e) => error(e),
    }
}

async fn get_silence(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match n.ask(Command::ListSilences).await {
        Ok(all) => match all.iter().find(|s| s.id == id) {
            Some(s) => axum::Json(silence_json(s, outpost_service::now_ms())).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Err(e) => error(e),
    }
}

async fn delete_silence(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match n.ask(|tx| Command::ExpireSilence(id, tx)).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) | Err(e) => error(e),
    }
}

async fn status(State(s): State<AppState>) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let original = n.config_text();
    axum::Json(json!({
        "cluster": {"status": "disabled", "peers": []},
        "config": {"original": original},
        "uptime": rfc3339(s.start.start_ms),
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "branch": "", "buildDate": "", "buildUser": "", "goVersion": "", "revision": "",
        },
    }))
    .into_response()
}

async fn receivers(State(s): State<AppState>) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let names = n.receiver_names();
    axum::Json(names.iter().map(|r| json!({"name": r})).collect::<Vec<_>>()).into_response()
}

async fn history(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p = params(q.as_deref());
    let fp = match p.get("fingerprint").map(|f| u64::from_str_radix(f, 16)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(_)) => {
            return error(ApiProblem {
                status: 400,
                message: "fingerprint: 16 hex digits, as /api/v2/alerts shows".into(),
            });
        }
    };
    let all = match n.ask(|tx| Command::Histories(fp, tx)).await {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let out: Vec<Value> = all
        .into_iter()
        .map(|(h, esc)| {
            let events: Vec<Value> = h
                .events
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["at"] = Value::String(rfc3339(e.at_ms));
                    if let Some(o) = v.as_object_mut() {
                        o.remove("at_ms");
                    }
                    v
                })
                .collect();
            let escalation = esc.map(|e| {
                json!({
                    "levelsPaged": e.paged,
                    "reminders": e.reminders,
                    "acknowledged": e.ack.as_ref().map(|a| json!({"by": a.by, "note": a.note, "at": rfc3339(a.at_ms)})),
                    "resolved": e.resolved_ms.is_some(),
                })
            });
            json!({"fingerprint": h.fingerprint, "labels": h.labels, "events": events, "escalation": escalation})
        })
        .collect();
    axum::Json(json!({"status": "success", "data": out})).into_response()
}

#[derive(Deserialize)]
struct AckBody {
    fingerprint: String,
    by: String,
    #[serde(default)]
    note: String,
}

fn ack_body(body: &[u8]) -> Result<(u64, String, String), Response> {
    let b: AckBody = serde_json::from_slice(body).map_err(|e| {
        error(ApiProblem {
            status: 400,
            message: format!(
                "body: {e} (expected {{\"fingerprint\":\"…\",\"by\":\"…\",\"note\":\"…\"}})"
            ),
        })
    })?;
    let fp = u64::from_str_radix(&b.fingerprint, 16).map_err(|_| {
        error(ApiProblem {
            status: 400,
            message: "fingerprint: 16 hex digits, as /api/v2/alerts shows".into(),
        })
    })?;
    if b.by.trim().is_empty() {
        return Err(error(ApiProblem {
            status: 400,
            message: "by: say who you are".into(),
        }));
    }
    Ok((fp, b.by, b.note))
}

async fn acknowledge(State(s): State<AppState>, body: Bytes) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let (fp, by, note) = match ack_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match n.ask(|tx| Command::Ack(fp, by, note, tx)).await {
        Ok(Ok(())) => axum::Json(json!({"status": "success"})).into_response(),
        Ok(Err(e)) | Err(e) => error(e),
    }
}

async fn note(State(s): State<AppState>, body: Bytes) -> Response {
    let n = match pipeline(&s) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let (fp, by, note) = match ack_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match n.ask(|tx| Command::Note(fp, by, note, tx)).await {
        Ok(Ok(())) => axum::Json(json!({"status": "success"})).into_response(),
        Ok(Err(e)) | Err(e) => error(e),
    }
}
