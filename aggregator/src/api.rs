//! The Prometheus-compatible query HTTP API: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/{name}/values`, answering in
//! Prometheus' JSON format so Grafana's Prometheus data source works unchanged.
//!
//! A thin shell: it reads parameters (URL query and, for POST, a form body), reads the clock
//! for a missing `time`, runs [`crate::query`] on a blocking thread and writes the result.
//! Every failure goes through [`ApiError`]: 400 `bad_data` for bad input, 422 `execution` for
//! a query that cannot run, 500 `internal` for storage failures, whose details are only
//! logged.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_promql::{
    self as query, Matcher, Querier, QueryError, Queryable, Steps, StorageError, Value,
};
use outpost_shared::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Src = Arc<dyn Queryable>;

/// The query API's state: the store and the limits every query runs under.
#[derive(Clone)]
pub struct QueryApi {
    src: Src,
    limits: Arc<QueryLimits>,
}

/// The limits of `[query]`, shared by every query request.
pub struct QueryLimits {
    timeout: Duration,
    max_samples: usize,
    max_concurrency: usize,
    max_queued: usize,
    slots: Arc<tokio::sync::Semaphore>,
    gauges: QueryGauges,
    cache: Arc<crate::query_cache::QueryCache>,
}

/// The query API's own metrics, registered by the program.
#[derive(Clone, Default)]
pub struct QueryGauges {
    /// Queries being evaluated now.
    pub running: Gauge,
    /// Queries waiting for a slot.
    pub queued: Gauge,
    /// Queries refused or stopped by a limit, by `reason`: `queue_full`, `timeout`,
    /// `too_many_samples`.
    pub limited: Family<crate::metrics::ReasonLabel, Counter>,
    /// Range queries that found some of their steps in the result cache.
    pub cache_hits: Counter,
    /// Cacheable range queries that found none.
    pub cache_misses: Counter,
}

impl QueryLimits {
    /// The range query result cache.
    pub fn cache(&self) -> &crate::query_cache::QueryCache {
        &self.cache
    }

    /// Limits from `[query]`, reporting into `gauges`, with the range query result `cache`.
    pub fn new(
        cfg: &crate::config::QueryConfig,
        gauges: QueryGauges,
        cache: Arc<crate::query_cache::QueryCache>,
    ) -> QueryLimits {
        for reason in ["queue_full", "timeout", "too_many_samples"] {
            gauges
                .limited
                .get_or_create(&reason_label(reason))
                .inc_by(0);
        }
        QueryLimits {
            timeout: cfg.timeout.get(),
            max_samples: cfg.max_samples,
            max_concurrency: cfg.max_concurrency,
            max_queued: cfg.max_queued,
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrency)),
            gauges,
            cache,
        }
    }

    fn limited(&self, reason: &str) {
        self.gauges
            .limited
            .get_or_create(&reason_label(reason))
            .inc();
    }

    /// Runs `f` on a blocking thread once a slot is free, within `timeout` from now
    /// (queueing included), raising the query's cancel flag when the time is up.
    async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&query::Limits) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<(T, Timings), ApiError> {
        let started = Instant::now();
        let deadline = started + timeout;
        if self.gauges.queued.inc() >= self.max_queued as i64 {
            self.gauges.queued.dec();
            self.limited("queue_full");
            return Err(ApiError::Unavailable(format!(
                "too many queries waiting: {} running and {} queued ([query] max_concurrency, max_queued); retry later",
                self.max_concurrency, self.max_queued
            )));
        }
        let permit =
            tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await;
        self.gauges.queued.dec();
        let permit = match permit {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(ApiError::Unavailable("the aggregator is stopping".into())),
            Err(_) => {
                self.limited("timeout");
                return Err(ApiError::Timeout("query timed out in query queue".into()));
            }
        };
        let queued = started.elapsed();
        let limits = query::Limits {
            max_samples: self.max_samples,
            cancel: query::Cancel::default(),
        };
        let cancel = limits.cancel.clone();
        let running = self.gauges.running.clone();
        running.inc();
        let task = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let out = f(&limits);
            running.dec();
            drop(permit);
            out.map(|v| (v, t.elapsed()))
        });
        match tokio::time::timeout_at(deadline.into(), task).await {
            Err(_) => {
                // The evaluation sees the flag at its next check and frees its slot.
                cancel.cancel();
                self.limited("timeout");
                Err(QueryError::Timeout.into())
            }
            Ok(Err(e)) => Err(ApiError::Internal(format!("query task failed: {e}"))),
            Ok(Ok(Err(e))) => {
                if matches!(e, QueryError::TooManySamples) {
                    self.limited("too_many_samples");
                }
                if matches!(e, QueryError::Timeout) {
                    self.limited("timeout");
                }
                Err(e.into())
            }
            Ok(Ok(Ok((v, eval)))) => Ok((
                v,
                Timings {
                    queued,
                    eval,
                    total: started.elapsed(),
                },
            )),
        }
    }

    /// The request's `timeout` parameter, which may only shorten `[query] timeout`.
    fn timeout_for(&self, p: &Params) -> Result<Duration, ApiError> {
        match p.get("timeout") {
            None => Ok(self.timeout),
            Some(s) => {
                let ms = parse_duration_ms(s).map_err(|e| ApiError::param("timeout", e))?;
                Ok(self.timeout.min(Duration::from_millis(ms.max(0) as u64)))
            }
        }
    }
}

fn reason_label(reason: &str) -> crate::metrics::ReasonLabel {
    crate::metrics::ReasonLabel {
        reason: reason.into(),
    }
}

/// Where a query's time went, for the `stats` parameter.
struct Timings {
    queued: Duration,
    eval: Duration,
    total: Duration,
}

impl Timings {
    /// Prometheus' `stats.timings` object, in seconds.
    fn json(&self) -> String {
        let s = |d: Duration| d.as_secs_f64();
        format!(
            r#"{{"timings":{{"evalTotalTime":{},"resultSortTime":0,"queryPreparationTime":0,"innerEvalTime":{},"execQueueTime":{},"execTotalTime":{}}}}}"#,
            s(self.eval),
            s(self.eval),
            s(self.queued),
            s(self.total)
        )
    }
}

/// A range query through the result cache (see [`crate::query_cache`]): the steps a
/// previous answer still covers come from it, the rest are evaluated, and the whole answer
/// is kept for the next refresh. Queries that read past their step (`@`, negative
/// `offset`) always evaluate in full.
fn cached_range(
    src: &dyn Queryable,
    cache: &crate::query_cache::QueryCache,
    gauges: &QueryGauges,
    text: &str,
    expr: &query::Expr,
    steps: &Steps,
    limits: &query::Limits,
) -> Result<Value, QueryError> {
    use crate::query_cache::{Key, merge};
    if !expr.reads_only_up_to_step() {
        return query::range_query_with(src, expr, steps, limits);
    }
    let (start, end, step) = (steps.start_ms(), steps.end_ms(), steps.step_ms());
    let key = Key::new(text, start, step);
    let epoch = cache.epoch();
    let hit = cache.lookup(&key, start, end);
    if hit.is_some() {
        gauges.cache_hits.inc();
    } else {
        gauges.cache_misses.inc();
    }
    // The first step the cache does not cover.
    let next = hit.as_ref().map_or(start, |h| {
        start + ((h.last - start).div_euclid(step) + 1) * step
    });
    let fresh = if next <= end {
        match query::range_query_with(src, expr, &Steps::new(next, end, step)?, limits)? {
            Value::Matrix(m) => m,
            other => return Ok(other),
        }
    } else {
        vec![]
    };
    let series = match hit {
        Some(h) => merge(h.series, fresh),
        None => fresh,
    };
    cache.store(key, start, end, &series, epoch);
    Ok(Value::Matrix(series))
}

/// A query answer, with `stats` when the request asked for them.
fn query_success(value: &Value, timings: &Timings, p: &Params) -> Response {
    let data = value_json(value);
    match p.get("stats") {
        None => success(&data),
        Some(_) => {
            let data = format!("{},\"stats\":{}}}", &data[..data.len() - 1], timings.json());
            success(&data)
        }
    }
}

/// The query API's routes with their state applied, ready to `.merge()`.
pub fn query_router(src: Src, limits: Arc<QueryLimits>) -> Router {
    Router::new()
        .route("/api/v1/query", get(instant).post(instant))
        .route("/api/v1/query_range", get(range).post(range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route(
            "/api/v1/metadata",
            get(crate::metadata::handler).post(crate::metadata::handler),
        )
        .with_state(QueryApi { src, limits })
}

pub use outpost_service::now_ms;

/// Every way a query API request fails, as Prometheus reports it.
#[derive(Debug)]
pub enum ApiError {
    /// 400, `bad_data`: the request's parameters are wrong.
    BadData(String),
    /// 422, `execution`: a valid query that cannot be run.
    Execution(String),
    /// 500, `internal`: the detail is logged; the client sees only "internal error".
    Internal(String),
    /// 503, `timeout`: the query ran out of time (`[query] timeout` or `timeout=`).
    Timeout(String),
    /// 503, `unavailable`: too many queries are waiting, or the aggregator is stopping.
    Unavailable(String),
}

impl ApiError {
    fn param(name: &str, err: impl std::fmt::Display) -> Self {
        ApiError::BadData(format!("invalid parameter {name:?}: {err}"))
    }

    /// Maps a query error, blaming `param` for errors in the query text.
    fn query(param: &str, e: QueryError) -> Self {
        match e {
            QueryError::Storage(e) => e.into(),
            QueryError::Timeout => ApiError::Timeout(e.to_string()),
            QueryError::TooManySamples | QueryError::Execution(_) => {
                ApiError::Execution(e.to_string())
            }
            e if e.is_query_text_error() => ApiError::param(param, e),
            e => ApiError::BadData(e.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadData(_) => StatusCode::BAD_REQUEST,
            ApiError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::query("query", e)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, msg) = match self {
            ApiError::BadData(m) => ("bad_data", m),
            ApiError::Execution(m) => ("execution", m),
            ApiError::Timeout(m) => ("timeout", m),
            ApiError::Unavailable(m) => ("unavailable", m),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "query API request failed");
                ("internal", "internal error".to_string())
            }
        };
        let mut body = format!(r#"{{"status":"error","errorType":"{kind}","error":"#);
        push_json_str(&mut body, &msg);
        body.push('}');
        json(status, body)
    }
}

pub(crate) fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"status":"success","data":<data>}`; `data` is already JSON.
fn success(data: &str) -> Response {
    json(
        StatusCode::OK,
        format!(r#"{{"status":"success","data":{data}}}"#),
    )
}

async fn instant(
    State(api): State<QueryApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    let t = match p.get("time") {
        Some(s) => parse_time(s).map_err(|e| ApiError::param("time", e))?,
        None => now_ms(),
    };
    let timeout = api.limits.timeout_for(&p)?;
    let expr = parse_query(&p)?;
    let src = api.src.clone();
    let (value, timings) = api
        .limits
        .run(timeout, move |l| {
            query::instant_query_with(src.as_ref(), &expr, t, l)
        })
        .await?;
    Ok(query_success(&value, &timings, &p))
}

async fn range(
    State(api): State<QueryApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    // The order of checks, and so which error a request with several problems gets, is
    // Prometheus'.
    let start =
        parse_time(p.get("start").unwrap_or("")).map_err(|e| ApiError::param("start", e))?;
    let end = parse_time(p.get("end").unwrap_or("")).map_err(|e| ApiError::param("end", e))?;
    if end < start {
        return Err(QueryError::EndBeforeStart.into());
    }
    let step =
        parse_duration_ms(p.get("step").unwrap_or("")).map_err(|e| ApiError::param("step", e))?;
    let steps = Steps::new(start, end, step)?;
    let timeout = api.limits.timeout_for(&p)?;
    let text = p.get("query").unwrap_or("").to_string();
    let expr = parse_query(&p)?;
    let src = api.src.clone();
    let cache = api.limits.cache.clone();
    let gauges = api.limits.gauges.clone();
    let (value, timings) = api
        .limits
        .run(timeout, move |l| {
            cached_range(src.as_ref(), &cache, &gauges, &text, &expr, &steps, l)
        })
        .await?;
    Ok(query_success(&value, &timings, &p))
}

fn parse_query(p: &Params) -> Result<query::Expr, ApiError> {
    match p.get("query") {
        Some(q) => Ok(query::parse(q)?),
        None => Err(QueryError::Parse("no expression found in input".into()).into()),
    }
}

/// What `/series`, `/labels` and `/label/<name>/values` select: the `match[]` selectors,
/// the time range (`start`/`end`; all time when both are absent), and `limit`.
struct SeriesRequest {
    sets: Vec<Vec<Matcher>>,
    range: Option<(i64, i64)>,
    /// At most this many results; 0 means no limit.
    limit: usize,
}

/// Reads [`SeriesRequest`]'s parameters; `match[]` must be present when `required`.
fn series_request(p: &Params, required: bool) -> Result<SeriesRequest, ApiError> {
    let time = |name: &str, default: i64| match p.get(name) {
        Some(s) => parse_time(s).map_err(|e| ApiError::param(name, e)),
        None => Ok(default),
    };
    let start = time("start", MIN_TIME.1)?;
    let end = time("end", MAX_TIME.1)?;
    let range = (p.get("start").is_some() || p.get("end").is_some()).then_some((start, end));
    let limit = parse_limit(p)?;
    let sets = p
        .all("match[]")
        .map(|s| query::parse_series_selector(s).map_err(|e| ApiError::query("match[]", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if required && sets.is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    Ok(SeriesRequest { sets, range, limit })
}

/// `limit`: a non-negative integer, 0 (the default) for none; as Prometheus' metadata APIs.
fn parse_limit(p: &Params) -> Result<usize, ApiError> {
    match p.get("limit") {
        None => Ok(0),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::param("limit", format!("cannot parse {s:?} to a valid limit"))),
    }
}

/// The label sets of every series any of `req.sets` selects (every series when there are
/// none) with data in `req.range`, sorted and without repeats.
fn select_series(
    q: &dyn Querier,
    req: &SeriesRequest,
    limits: &query::Limits,
) -> Result<BTreeSet<Labels>, QueryError> {
    let everything = [Matcher::new("__name__", query::MatchOp::Regex, ".+")
        .map_err(|e| QueryError::Execution(e.to_string()))?];
    let sets: Vec<&[Matcher]> = if req.sets.is_empty() {
        vec![&everything]
    } else {
        req.sets.iter().map(Vec::as_slice).collect()
    };
    let mut out = BTreeSet::new();
    for matchers in sets {
        for (id, labels) in q.select(matchers)? {
            limits.cancel.check()?;
            let keep = match req.range {
                None => true,
                Some((start, end)) => q.has_points(id, start, end)?,
            };
            if keep {
                out.insert(Labels::clone(&labels));
            }
        }
    }
    Ok(out)
}

/// The warning Prometheus adds when `limit` cut a list short.
const TRUNCATED: &str = "results truncated due to limit";

/// `{"status":"success","data":<data>}` with `warnings` when `truncated`.
fn success_limited(data: &str, truncated: bool) -> Response {
    if !truncated {
        return success(data);
    }
    json(
        StatusCode::OK,
        format!(r#"{{"status":"success","data":{data},"warnings":["{TRUNCATED}"]}}"#),
    )
}

/// A querier over all stored time.
fn all_time(src: &dyn Queryable) -> Result<Box<dyn Querier + '_>, StorageError> {
    src.querier(i64::MIN, i64::MAX)
}

async fn series(
    State(QueryApi { src, limits }): State<QueryApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    let req = series_request(&p, true)?;
    let (found, _) = limits
        .run(limits.timeout_for(&p)?, move |l| {
            select_series(all_time(src.as_ref())?.as_ref(), &req, l)
        })
        .await?;
    let limit = parse_limit(&p)?;
    let mut data = String::from("[");
    for (i, labels) in found.iter().enumerate() {
        if limit > 0 && i == limit {
            break;
        }
        if i > 0 {
            data.push(',');
        }
        push_labels(&mut data, labels);
    }
    data.push(']');
    Ok(success_limited(&data, limit > 0 && found.len() > limit))
}

/// Label names (`name` = `None`) or one name's values, for the series `req` selects.
fn label_strings(
    src: &dyn Queryable,
    req: &SeriesRequest,
    name: Option<&str>,
    limits: &query::Limits,
) -> Result<Vec<String>, QueryError> {
    let q = all_time(src)?;
    if req.sets.is_empty() && req.range.is_none() {
        return Ok(match name {
            None => q.label_names()?,
            Some(n) => q.label_values(n)?,
        });
    }
    let found: BTreeSet<String> = select_series(q.as_ref(), req, limits)?
        .iter()
        .flat_map(|l| match name {
            None => l.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
            Some(n) => l.get(n).map(str::to_string).into_iter().collect(),
        })
        .collect();
    Ok(found.into_iter().collect())
}

fn limited_list(mut items: Vec<String>, limit: usize) -> Response {
    let truncated = limit > 0 && items.len() > limit;
    if truncated {
        items.truncate(limit);
    }
    success_limited(&string_list(&items), truncated)
}

async fn labels(
    State(QueryApi { src, limits }): State<QueryApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    let req = series_request(&p, false)?;
    let limit = req.limit;
    let (names, _) = limits
        .run(limits.timeout_for(&p)?, move |l| {
            label_strings(src.as_ref(), &req, None, l)
        })
        .await?;
    Ok(limited_list(names, limit))
}

async fn label_values(
    State(QueryApi { src, limits }): State<QueryApi>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &HeaderMap::new(), &[]);
    if !outpost_shared::remote_write::valid_label_name(&name) {
        return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
    }
    let req = series_request(&p, false)?;
    let limit = req.limit;
    let (values, _) = limits
        .run(limits.timeout_for(&p)?, move |l| {
            label_strings(src.as_ref(), &req, Some(&name), l)
        })
        .await?;
    Ok(limited_list(values, limit))
}

/// `/api/v1/query_exemplars`: Outpost stores no exemplars, so after checking the
/// parameters as Prometheus does the answer is always an empty list.
async fn query_exemplars(
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    for name in ["start", "end"] {
        if let Some(s) = p.get(name) {
            parse_time(s).map_err(|e| ApiError::param(name, e))?;
        }
    }
    parse_query(&p)?;
    Ok(success("[]"))
}

/// `/api/v1/format_query`: the query laid out as Prometheus' `promtool`/API prettier does.
async fn format_query(
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::from_request(q.as_deref(), &headers, &body);
    let text = p.get("query").unwrap_or("");
    let pretty = query::format_query(text).map_err(|e| ApiError::query("query", e))?;
    let mut data = String::new();
    push_json_str(&mut data, &pretty);
    Ok(success(&data))
}

/// Request parameters from the URL query and, when the body is a form, the body; as in Go's
/// `Request.Form`, body values come first, and a name may repeat.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn from_request(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut pairs = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if is_form {
            parse_form(&String::from_utf8_lossy(body), &mut pairs);
        }
        if let Some(q) = query {
            parse_form(q, &mut pairs);
        }
        Params(pairs)
    }

    /// The first non-empty value of `name`; an empty value counts as absent, as in Prometheus.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `application/x-www-form-urlencoded` pairs. Lenient: a `%` not followed by two hex digits
/// is kept as it is.
pub(crate) fn parse_form(s: &str, out: &mut Vec<(String, String)>) {
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((percent_decode(k), percent_decode(v)));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Prometheus' limits for `start`/`end` given as these exact strings (clients send them to
/// mean "all time"); Go's parser cannot read them either.
const MIN_TIME: (&str, i64) = ("-292273086-05-16T16:47:06Z", -9_223_309_901_257_974_000);
const MAX_TIME: (&str, i64) = (
    "292277025-08-18T07:12:54.999999999Z",
    9_223_309_901_257_974_999,
);

/// A time parameter: Unix seconds with up to millisecond precision (`1700000000.123`) or
/// RFC 3339 (`2026-11-22T10:00:00Z`, `2026-11-22T10:00:00.123+02:00`); milliseconds since
/// the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(f) = s.parse::<f64>() {
        // Beyond this the milliseconds no longer fit an i64.
        if !f.is_finite() || f.abs() >= 9.2e15 {
            return Err(bad());
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        return Ok(secs as i64 * 1000 + ms as i64);
    }
    if let Some(ms) = parse_rfc3339(s) {
        return Ok(ms);
    }
    [MIN_TIME, MAX_TIME]
        .iter()
        .find(|(text, _)| *text == s)
        .map(|&(_, ms)| ms)
        .ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, to milliseconds since the epoch (a finer
/// fraction is truncated, as Prometheus does).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let lit = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
    if !(lit(4, b"-") && lit(7, b"-") && lit(10, b"Tt") && lit(13, b":") && lit(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if lit(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // The first three digits, right-padded: ".5" is 500 ms, ".123456" is 123 ms.
        for k in 0..3 {
            frac_ms = frac_ms * 10 + if k < digits { num(i + 1 + k, 1)? } else { 0 };
        }
        i += 1 + digits;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && lit(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration parameter: float seconds (`15`, `0.5`) or a Prometheus duration (`1m30s`), in
/// whole milliseconds (a finer part is truncated, as Prometheus does).
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if f.is_nan() {
            return Err(format!("cannot parse {s:?} to a valid duration"));
        }
        // Prometheus keeps nanoseconds in an i64.
        if ms.abs() >= 9.2e15 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms.trunc() as i64);
    }
    match s.parse::<outpost_shared::units::Duration>() {
        Ok(d) => i64::try_from(d.get().as_millis())
            .map_err(|_| format!("cannot parse {s:?} to a valid duration. It overflows int64")),
        Err(_) => Err(format!("cannot parse {s:?} to a valid duration")),
    }
}

/// A sample value as Prometheus writes it: Go's `strconv.FormatFloat(v, 'f', -1, 64)`, or
/// `'e'` when `|v| < 1e-6` or `|v| >= 1e21`; `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` has the same shortest digits as Go but writes the exponent bare
        // ("1e-7", "1.5e21"); Go signs it and pads it to two digits ("1e-07", "1.5e+21").
        let s = format!("{v:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return s;
    }
    // Display is the shortest round-trip decimal, never with an exponent, like Go's 'f', -1.
    format!("{v}")
}

/// A timestamp as Prometheus writes it: seconds, then `.` and three digits of milliseconds
/// unless they are zero (`1700000000`, `1700000000.500`).
fn push_timestamp(out: &mut String, ms: i64) {
    if ms < 0 {
        out.push('-');
    }
    let abs = ms.unsigned_abs();
    let (secs, frac) = (abs / 1000, abs % 1000);
    let _ = write!(out, "{secs}");
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

fn push_sample(out: &mut String, ts: i64, v: f64) {
    out.push('[');
    push_timestamp(out, ts);
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `{"name":"value",...}` in label order.
fn push_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, &l.name);
        out.push(':');
        push_json_str(out, &l.value);
    }
    out.push('}');
}

fn string_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, s);
    }
    out.push(']');
    out
}

/// `{"resultType":...,"result":[...]}`.
fn value_json(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Scalar(p) => {
            out.push_str(r#"{"resultType":"scalar","result":"#);
            push_sample(&mut out, p.ts, p.value);
            out.push('}');
            return out;
        }
        Value::String { ts, value } => {
            out.push_str(r#"{"resultType":"string","result":["#);
            push_timestamp(&mut out, *ts);
            out.push(',');
            push_json_str(&mut out, value);
            out.push_str("]}");
            return out;
        }
        Value::Vector(samples) => {
            out.push_str(r#"{"resultType":"vector","result":["#);
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                push_labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                push_sample(&mut out, s.point.ts, s.point.value);
                out.push('}');
            }
        }
        Value::Matrix(series) => {
            out.push_str(r#"{"resultType":"matrix","result":["#);
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                push_labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, p) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_sample(&mut out, p.ts, p.value);
                }
                out.push_str("]}");
            }
        }
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt;
    use outpost_promql::memory::MemStorage as MemSource;
    use outpost_shared::model::stale_nan;
    use tower::ServiceExt;

    /// 2023-11-14T22:13:20Z.
    const T: i64 = 1_700_000_000_000;
    const MIN: i64 = 60_000;

    fn source() -> MemSource {
        MemSource::default()
            .with(
                Labels::metric("up", [("job", "node"), ("instance", "a")]),
                &[(T - 2 * MIN, 0.0), (T - 10_000, 1.0), (T + MIN, 1.0)],
            )
            // Older than the 5-minute lookback at T.
            .with(
                Labels::metric("up", [("job", "node"), ("instance", "b")]),
                &[(T - 6 * MIN, 1.0)],
            )
            // Ends in a stale marker before T.
            .with(
                Labels::metric("up", [("job", "node"), ("instance", "c")]),
                &[(T - 2 * MIN, 1.0), (T - MIN, stale_nan())],
            )
            .with(
                Labels::metric("up", [("job", "db"), ("instance", "d")]),
                &[(T - MIN, 0.5)],
            )
            .with(
                Labels::metric("node_load1", [("instance", "a")]),
                &[(T - 1_500, 1e21), (T - 500, 1e-7)],
            )
    }

    async fn call(
        src: MemSource,
        method: Method,
        uri: &str,
        form: Option<&str>,
    ) -> (StatusCode, String) {
        let limits = QueryLimits::new(
            &Default::default(),
            QueryGauges::default(),
            Arc::new(crate::query_cache::QueryCache::new(0, 0)),
        );
        let router = query_router(Arc::new(src), Arc::new(limits));
        let mut req = Request::builder().method(method).uri(uri);
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f.to_string())
            }
            None => Body::empty(),
        };
        let resp = router
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{uri}"
        );
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    async fn get(uri: &str) -> (StatusCode, String) {
        call(source(), Method::GET, uri, None).await
    }

    fn bad(msg: &str) -> String {
        let mut s = String::from(r#"{"status":"error","errorType":"bad_data","error":"#);
        push_json_str(&mut s, msg);
        s.push('}');
        s
    }

    #[tokio::test]
    async fn instant_queries() {
        let cases: &[(&str, &str)] = &[
            // Lookback drops b (too old) and c (stale marker); samples carry the query time.
            (
                "/api/v1/query?query=up&time=1700000000",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"a","job":"node"},"value":[1700000000,"1"]},{"metric":{"__name__":"up","instance":"d","job":"db"},"value":[1700000000,"0.5"]}]}}"#,
            ),
            // Regex and `!=` on a label the series lacks, URL-encoded; RFC 3339 time.
            (
                "/api/v1/query?query=%7B__name__%3D~%22up%7Cnode_.%2A%22%2Cjob%3D~%22d.%22%2Cenv!%3D%22prod%22%7D&time=2023-11-14T22:13:20.250Z",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"d","job":"db"},"value":[1700000000.250,"0.5"]}]}}"#,
            ),
            // `!~` and the value formatting of tiny numbers.
            (
                "/api/v1/query?query=node_load1{instance!~%22b%22}&time=1700000000",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"node_load1","instance":"a"},"value":[1700000000,"1e-07"]}]}}"#,
            ),
            // A matrix selector: raw points with their own timestamps, stale marker dropped.
            (
                "/api/v1/query?query=up{instance=~%22a|c%22}[3m]&time=1700000000",
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"a","job":"node"},"values":[[1699999880,"0"],[1699999990,"1"]]},{"metric":{"__name__":"up","instance":"c","job":"node"},"values":[[1699999880,"1"]]}]}}"#,
            ),
            (
                "/api/v1/query?query=node_load1[2s]&time=1700000000",
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"node_load1","instance":"a"},"values":[[1699999998.500,"1e+21"],[1699999999.500,"1e-07"]]}]}}"#,
            ),
            (
                "/api/v1/query?query=absent_metric&time=1700000000",
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            ),
            // Scalars and strings in Prometheus' shape: `[time, "value"]`.
            (
                "/api/v1/query?query=1%2B2*3&time=1700000000",
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#,
            ),
            (
                "/api/v1/query?query=%22a%5C%22b%22&time=1700000000.5",
                r#"{"status":"success","data":{"resultType":"string","result":[1700000000.500,"a\"b"]}}"#,
            ),
            // An aggregation over the selected series; the name is dropped.
            (
                "/api/v1/query?query=sum%20by%20(job)%20(up)&time=1700000000",
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"node"},"value":[1700000000,"1"]},{"metric":{"job":"db"},"value":[1700000000,"0.5"]}]}}"#,
            ),
        ];
        for (uri, want) in cases {
            let (status, body) = get(uri).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, *want), "{uri}");
        }
    }

    #[tokio::test]
    async fn post_form_as_grafana_sends_it() {
        let (status, body) = call(
            source(),
            Method::POST,
            "/api/v1/query",
            Some("query=up%7Bjob%3D%22db%22%7D&time=1700000000.5&timeout=30s"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"d","job":"db"},"value":[1700000000.500,"0.5"]}]}}"#
        );
        let (status, body) = call(
            source(),
            Method::POST,
            "/api/v1/query_range",
            Some("query=up%7Binstance%3D%22a%22%7D&start=1699999980&end=1700000100&step=60"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"a","job":"node"},"values":[[1699999980,"0"],[1700000040,"1"],[1700000100,"1"]]}]}}"#
        );
    }

    #[tokio::test]
    async fn range_queries() {
        let cases: &[(&str, &str)] = &[
            // Steps at T-90s, T-30s, T+30s. b's point (T-6m) is in the lookback of the first
            // step only; c's stale marker (T-1m) ends it after the first step; d starts at T-1m.
            (
                "/api/v1/query_range?query=up&start=1699999910&end=1700000030&step=1m",
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"a","job":"node"},"values":[[1699999910,"0"],[1699999970,"0"],[1700000030,"1"]]},{"metric":{"__name__":"up","instance":"b","job":"node"},"values":[[1699999910,"1"]]},{"metric":{"__name__":"up","instance":"c","job":"node"},"values":[[1699999910,"1"]]},{"metric":{"__name__":"up","instance":"d","job":"db"},"values":[[1699999970,"0.5"],[1700000030,"0.5"]]}]}}"#,
            ),
            (
                "/api/v1/query_range?query=up{job=%22db%22}&start=2023-11-14T22:13:20Z&end=2023-11-15T00:13:20%2B02:00&step=0.5",
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"d","job":"db"},"values":[[1700000000,"0.5"]]}]}}"#,
            ),
        ];
        for (uri, want) in cases {
            let (status, body) = get(uri).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, *want), "{uri}");
        }
    }

    #[tokio::test]
    async fn bad_requests() {
        let unsupported = r#"invalid parameter "query": unsupported expression: function call mad_over_time(); this version cannot evaluate it yet"#;
        let cases: &[(&str, String)] = &[
            (
                "/api/v1/query?query=mad_over_time(up%5B5m%5D)",
                bad(unsupported),
            ),
            (
                "/api/v1/query?query=histogram_count(up)",
                bad(
                    r#"invalid parameter "query": unsupported expression: function call histogram_count(); this version cannot evaluate it yet"#,
                ),
            ),
            (
                "/api/v1/query",
                bad(r#"invalid parameter "query": parse error: no expression found in input"#),
            ),
            (
                "/api/v1/query?query={job=~%22.*%22}",
                bad(
                    r#"invalid parameter "query": parse error: vector selector must contain at least one non-empty matcher"#,
                ),
            ),
            (
                "/api/v1/query?query=up&time=yesterday",
                bad(r#"invalid parameter "time": cannot parse "yesterday" to a valid timestamp"#),
            ),
            (
                "/api/v1/query_range?query=up&start=0&end=11001&step=1",
                bad(
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
                ),
            ),
            (
                "/api/v1/query_range?query=up&start=0&end=100&step=0",
                bad(
                    "zero or negative query resolution step widths are not accepted. Try a positive integer",
                ),
            ),
            (
                "/api/v1/query_range?query=up&start=100&end=0&step=1",
                bad("end timestamp must not be before start time"),
            ),
            (
                "/api/v1/query_range?query=up&end=0&step=1",
                bad(r#"invalid parameter "start": cannot parse "" to a valid timestamp"#),
            ),
            (
                "/api/v1/query_range?query=up&start=0&end=1&step=fast",
                bad(r#"invalid parameter "step": cannot parse "fast" to a valid duration"#),
            ),
            (
                "/api/v1/query_range?query=up%5B5m%5D&start=0&end=100&step=10",
                bad(
                    r#"invalid expression type "range vector" for range query, must be Scalar or instant Vector"#,
                ),
            ),
            (
                "/api/v1/query_range?query=%22x%22&start=0&end=100&step=10",
                bad(
                    r#"invalid expression type "string" for range query, must be Scalar or instant Vector"#,
                ),
            ),
            ("/api/v1/series", bad("no match[] parameter provided")),
            (
                "/api/v1/series?match[]=rate(up%5B1m%5D)",
                bad(
                    r#"invalid parameter "match[]": expected a series selector such as up{job="node"}, got function call rate()"#,
                ),
            ),
        ];
        for (uri, want) in cases {
            let (status, body) = get(uri).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::BAD_REQUEST, want.as_str()),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn storage_errors_are_internal_and_hide_details() {
        let src = MemSource::failing("rocksdb: corruption in /var/lib/outpost");
        let (status, body) = call(src, Method::GET, "/api/v1/query?query=up&time=0", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            r#"{"status":"error","errorType":"internal","error":"internal error"}"#
        );
    }

    #[test]
    fn error_statuses() {
        let cases = [
            (
                ApiError::from(QueryError::TooManySamples),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ApiError::from(QueryError::Execution("x".into())),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ApiError::from(QueryError::TooManySteps),
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::from(QueryError::Storage(StorageError("x".into()))),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.status(), want, "{e:?}");
        }
    }

    #[tokio::test]
    async fn series_labels_and_values() {
        let cases: &[(Method, &str, Option<&str>, &str)] = &[
            // Two match[]; the series both select appears once; sorted by labels.
            (
                Method::GET,
                "/api/v1/series?match[]=up%7Bjob%3D%22db%22%7D&match%5B%5D=%7Binstance%3D%22a%22%7D&start=0&end=2023-11-14T22:13:20Z",
                None,
                r#"{"status":"success","data":[{"__name__":"node_load1","instance":"a"},{"__name__":"up","instance":"a","job":"node"},{"__name__":"up","instance":"d","job":"db"}]}"#,
            ),
            (
                Method::POST,
                "/api/v1/series",
                Some("match%5B%5D=node_load1&match%5B%5D=node_load1"),
                r#"{"status":"success","data":[{"__name__":"node_load1","instance":"a"}]}"#,
            ),
            (
                Method::GET,
                "/api/v1/labels",
                None,
                r#"{"status":"success","data":["__name__","instance","job"]}"#,
            ),
            (
                Method::GET,
                "/api/v1/labels?match[]=node_load1",
                None,
                r#"{"status":"success","data":["__name__","instance"]}"#,
            ),
            (
                Method::GET,
                "/api/v1/label/job/values",
                None,
                r#"{"status":"success","data":["db","node"]}"#,
            ),
            (
                Method::GET,
                "/api/v1/label/__name__/values",
                None,
                r#"{"status":"success","data":["node_load1","up"]}"#,
            ),
            (
                Method::GET,
                "/api/v1/label/instance/values?match[]=up{job=%22node%22}",
                None,
                r#"{"status":"success","data":["a","b","c"]}"#,
            ),
            (
                Method::GET,
                "/api/v1/label/nope/values",
                None,
                r#"{"status":"success","data":[]}"#,
            ),
        ];
        for (method, uri, form, want) in cases {
            let (status, body) = call(source(), method.clone(), uri, *form).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, *want),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn time_parameters() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1700000000", Some(T)),
            ("1700000000.123", Some(T + 123)),
            ("1700000000.1235", Some(T + 124)),
            ("-1.5", Some(-1_500)),
            ("0", Some(0)),
            ("2023-11-14T22:13:20Z", Some(T)),
            ("2023-11-14T22:13:20.5Z", Some(T + 500)),
            ("2023-11-14T22:13:20.123456789Z", Some(T + 123)),
            ("2023-11-15T00:13:20+02:00", Some(T)),
            ("2023-11-14T19:43:20.123-02:30", Some(T + 123)),
            ("2026-11-22T10:00:00Z", Some(1_795_341_600_000)),
            ("2026-11-22T10:00:00.123+02:00", Some(1_795_334_400_123)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000)),
            ("1969-12-31T23:59:59Z", Some(-1_000)),
            ("1970-01-01T00:00:00z", Some(0)),
            ("2023-02-29T00:00:00Z", None),
            ("2023-11-14T24:00:00Z", None),
            ("2023-11-14T22:13:20", None),
            ("2023-11-14 22:13:20Z", None),
            ("2023-11-14T22:13:20.Z", None),
            ("2023-11-14T22:13:20+0200", None),
            ("2023-11-14T22:13:20Zjunk", None),
            ("NaN", None),
            ("inf", None),
            ("", None),
            (
                "-292273086-05-16T16:47:06Z",
                Some(-9_223_309_901_257_974_000),
            ),
            (
                "292277025-08-18T07:12:54.999999999Z",
                Some(9_223_309_901_257_974_999),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_time(s).ok(), *want, "{s:?}");
        }
    }

    #[test]
    fn duration_parameters() {
        let cases: &[(&str, Result<i64, &str>)] = &[
            ("15", Ok(15_000)),
            ("0.5", Ok(500)),
            ("15s", Ok(15_000)),
            ("1m30s", Ok(90_000)),
            ("250ms", Ok(250)),
            ("-10", Ok(-10_000)),
            (
                "1e300",
                Err(r#"cannot parse "1e300" to a valid duration. It overflows int64"#),
            ),
            ("soon", Err(r#"cannot parse "soon" to a valid duration"#)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration_ms(s), want.map_err(str::to_string), "{s:?}");
        }
    }

    #[test]
    fn value_formatting() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (-1e21, "-1e+21"),
            (1e20, "100000000000000000000"),
            (123456789.125, "123456789.125"),
            (1e-7, "1e-07"),
            (1e-6, "0.000001"),
            (2.5e-10, "2.5e-10"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(format_value(*v), *want, "{v:e}");
        }
    }

    #[test]
    fn timestamp_formatting() {
        let cases: &[(i64, &str)] = &[
            (T, "1700000000"),
            (T + 5, "1700000000.005"),
            (T + 50, "1700000000.050"),
            (T + 500, "1700000000.500"),
            (-1_500, "-1.500"),
            (0, "0"),
        ];
        for (ms, want) in cases {
            let mut s = String::new();
            push_timestamp(&mut s, *ms);
            assert_eq!(s, *want, "{ms}");
        }
    }

    #[test]
    fn form_decoding_is_lenient() {
        let mut pairs = Vec::new();
        parse_form(
            "a=1&&match%5B%5D=x%7By%7D&match[]=z+w&bad=%zz%4&flag",
            &mut pairs,
        );
        let want = [
            ("a", "1"),
            ("match[]", "x{y}"),
            ("match[]", "z w"),
            ("bad", "%zz%4"),
            ("flag", ""),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, want);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }
}
