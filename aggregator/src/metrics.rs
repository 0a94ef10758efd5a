//! The aggregator's own metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertmanagerLabel {
    pub alertmanager: String,
}

/// A rule group, named as Prometheus names it in its metrics: `file;group`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleGroupLabel {
    pub rule_group: String,
}

/// A receiver's integration, as Alertmanager labels its notification metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabel {
    pub receiver: String,
    pub integration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

pub struct Metrics {
    registry: Registry,
    pub batches: Counter,
    pub samples: Counter,
    pub duplicates: Counter,
    pub live_batches: Counter,
    pub errors: Counter,
    pub malformed: Counter,
    pub connections: Counter,
    pub refused: Family<ReasonLabel, Counter>,
    pub connected_agents: Gauge,
    pub commit_duration: Histogram,
    pub commit_batches: Histogram,
    pub series: Gauge,
    pub head_points: Gauge,
    pub storage_bytes: Gauge,
    pub compactions: Counter,
    pub compaction_errors: Counter,
    pub partitions_deleted: Family<ReasonLabel, Counter>,
    pub samples_deleted: Family<ReasonLabel, Counter>,
    /// Samples dropped on arrival for being older than the oldest time the store keeps.
    pub samples_too_old: Counter,
    /// Samples dropped on arrival for being stamped more than two days ahead of the clock.
    pub samples_too_new: Counter,
    pub partitions_merged: Counter,
    pub partitions_rolled_up: Counter,
    pub rollup_samples: Counter,
    pub maintenance_errors: Counter,
    pub oldest_partition: Gauge,
    /// 1 while ingestion is paused because the data folder's file system is full.
    pub storage_disk_full: Gauge,
    /// Writes the store refused, by reason (`no_space`, `other`).
    pub storage_write_errors: Family<ReasonLabel, Counter>,
    pub query: crate::api::QueryGauges,
    pub query_cache_points: Gauge,
    pub remote_write_requests: Family<OutcomeLabel, Counter>,
    pub remote_write_samples: Counter,
    pub http_duration: Family<HandlerLabel, Histogram>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub reload: outpost_service::metrics::ReloadGauges,
    pub checks: crate::checks::Gauges,
    pub process: outpost_service::metrics::ProcessInfo,
    pub rule_evaluations: Family<RuleGroupLabel, Counter>,
    pub rule_evaluation_failures: Family<RuleGroupLabel, Counter>,
    pub rule_group_last_duration: Family<RuleGroupLabel, Gauge<f64, AtomicU64>>,
    pub rule_group_last_evaluation: Family<RuleGroupLabel, Gauge<f64, AtomicU64>>,
    pub rule_group_rules: Family<RuleGroupLabel, Gauge>,
    pub rule_reloads: Family<OutcomeLabel, Counter>,
    pub notifications_sent: Family<AlertmanagerLabel, Counter>,
    pub notifications_errors: Family<AlertmanagerLabel, Counter>,
    pub notifications_dropped: Counter,
    pub receiver_notifications: Family<ReceiverLabel, Counter>,
    pub receiver_notifications_failed: Family<ReceiverLabel, Counter>,
    pub receiver_attempts_failed: Family<ReceiverLabel, Counter>,
    pub notifications_pending: Gauge,
    pub silences: Family<StateLabel, Gauge>,
    pub forward: std::sync::Arc<crate::forward::ForwardMetrics>,
    pub rule_cut_off_agents: Gauge,
    pub rules_last_reload_successful: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub handler: String,
    pub code: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 12))
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("outpost_aggregator");
        let m = Metrics {
            registry: Registry::default(),
            batches: Counter::default(),
            samples: Counter::default(),
            duplicates: Counter::default(),
            live_batches: Counter::default(),
            errors: Counter::default(),
            malformed: Counter::default(),
            connections: Counter::default(),
            refused: Family::default(),
            connected_agents: Gauge::default(),
            commit_duration: latency_histogram(),
            commit_batches: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            series: Gauge::default(),
            head_points: Gauge::default(),
            storage_bytes: Gauge::default(),
            compactions: Counter::default(),
            compaction_errors: Counter::default(),
            partitions_deleted: Family::default(),
            samples_deleted: Family::default(),
            samples_too_old: Counter::default(),
            samples_too_new: Counter::default(),
            partitions_merged: Counter::default(),
            partitions_rolled_up: Counter::default(),
            rollup_samples: Counter::default(),
            maintenance_errors: Counter::default(),
            oldest_partition: Gauge::default(),
            storage_disk_full: Gauge::default(),
            storage_write_errors: Family::default(),
            query: Default::default(),
            query_cache_points: Gauge::default(),
            remote_write_requests: Family::default(),
            remote_write_samples: Counter::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            reload: Default::default(),
            checks: Default::default(),
            process: Default::default(),
            rule_evaluations: Family::default(),
            rule_evaluation_failures: Family::default(),
            rule_group_last_duration: Family::default(),
            rule_group_last_evaluation: Family::default(),
            rule_group_rules: Family::default(),
            rule_reloads: Family::default(),
            notifications_sent: Family::default(),
            notifications_errors: Family::default(),
            notifications_dropped: Counter::default(),
            receiver_notifications: Family::default(),
            receiver_notifications_failed: Family::default(),
            receiver_attempts_failed: Family::default(),
            notifications_pending: Gauge::default(),
            silences: Family::default(),
            forward: Default::default(),
            rule_cut_off_agents: Gauge::default(),
            rules_last_reload_successful: Gauge::default(),
        };
        m.rules_last_reload_successful.set(1);
        r.register(
            "rules_last_reload_successful",
            "Whether the last reading of the rule files (at start, on a change, SIGHUP or /-/reload) was taken (1) or refused (0)",
            m.rules_last_reload_successful.clone(),
        );
        r.register(
            "rule_cut_off_agents",
            "Agents cut off (not connected, or no data since they reconnected) whose alerts are held instead of resolved",
            m.rule_cut_off_agents.clone(),
        );
        r.register(
            "rule_evaluations",
            "Rule evaluations, by group `file;group` (Prometheus' prometheus_rule_evaluations_total)",
            m.rule_evaluations.clone(),
        );
        r.register(
            "rule_evaluation_failures",
            "Rule evaluations that failed",
            m.rule_evaluation_failures.clone(),
        );
        r.register_with_unit(
            "rule_group_last_duration",
            "How long the group's last evaluation took (Prometheus' prometheus_rule_group_last_duration_seconds)",
            Unit::Seconds,
            m.rule_group_last_duration.clone(),
        );
        r.register_with_unit(
            "rule_group_last_evaluation_timestamp",
            "The slot the group was last evaluated at, Unix seconds",
            Unit::Seconds,
            m.rule_group_last_evaluation.clone(),
        );
        r.register(
            "rule_group_rules",
            "Rules in the group",
            m.rule_group_rules.clone(),
        );
        r.register(
            "rule_reloads",
            "Rule file reloads, by outcome (success, refused)",
            m.rule_reloads.clone(),
        );
        r.register(
            "notifications_sent",
            "Alerts sent to an Alertmanager (Prometheus' prometheus_notifications_sent_total)",
            m.notifications_sent.clone(),
        );
        r.register(
            "notifications_errors",
            "Alerts that could not be sent to an Alertmanager after every retry",
            m.notifications_errors.clone(),
        );
        r.register(
            "notifications_dropped",
            "Alerts dropped because the notification queue was full",
            m.notifications_dropped.clone(),
        );
        r.register(
            "receiver_notifications",
            "Notifications a receiver's integration accepted ([alerting] notifications; Alertmanager's alertmanager_notifications_total)",
            m.receiver_notifications.clone(),
        );
        r.register(
            "receiver_notifications_failed",
            "Notifications given up: refused with a 4xx, or not accepted within an hour of retries",
            m.receiver_notifications_failed.clone(),
        );
        r.register(
            "receiver_notification_attempts_failed",
            "Delivery attempts that failed (each retry counts)",
            m.receiver_attempts_failed.clone(),
        );
        r.register(
            "notifications_pending",
            "Notifications decided and stored but not yet accepted by their receiver",
            m.notifications_pending.clone(),
        );
        let f = &m.forward;
        r.register(
            "forward_samples_sent",
            "Samples a [[forward]] destination accepted",
            f.sent.clone(),
        );
        r.register(
            "forward_samples_failed",
            "Samples in requests a destination refused for good (4xx other than 408/429); not retried",
            f.failed.clone(),
        );
        r.register(
            "forward_samples_dropped",
            "Samples skipped because the destination's backlog passed its max_pending_bytes",
            f.dropped.clone(),
        );
        r.register(
            "forward_retries",
            "Requests retried after a 5xx, 429 or network error",
            f.retries.clone(),
        );
        r.register(
            "forward_pending_records",
            "Forward-log records (committed batches) behind the destination's cursor",
            f.pending.clone(),
        );
        r.register_with_unit(
            "forward_lag",
            "Age of the oldest record the destination has not accepted yet (0 when caught up)",
            Unit::Seconds,
            f.lag.clone(),
        );
        r.register(
            "silences",
            "Silences by state (active, pending, expired)",
            m.silences.clone(),
        );
        r.register(
            "ingest_batches",
            "Batches applied to storage",
            m.batches.clone(),
        );
        r.register(
            "ingest_samples",
            "Samples applied to storage",
            m.samples.clone(),
        );
        r.register(
            "ingest_duplicate_batches",
            "Resent batches acknowledged without storing them again",
            m.duplicates.clone(),
        );
        r.register(
            "ingest_live_batches",
            "Live copies of batches stored ahead of an agent's backlog (acknowledged later with the batch)",
            m.live_batches.clone(),
        );
        r.register(
            "ingest_errors",
            "Batches that could not be stored",
            m.errors.clone(),
        );
        r.register(
            "ingest_malformed_frames",
            "Connections closed for a malformed frame or batch",
            m.malformed.clone(),
        );
        r.register(
            "connections",
            "Agent sessions accepted",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Agent connections refused, by reason",
            m.refused.clone(),
        );
        r.register(
            "connected_agents",
            "Agents connected now",
            m.connected_agents.clone(),
        );
        r.register_with_unit(
            "ingest_commit_duration",
            "Time of one group commit (synced write)",
            Unit::Seconds,
            m.commit_duration.clone(),
        );
        r.register(
            "ingest_commit_batches",
            "Batches per group commit",
            m.commit_batches.clone(),
        );
        r.register(
            "queries_running",
            "Queries being evaluated now ([query] max_concurrency caps it)",
            m.query.running.clone(),
        );
        r.register(
            "queries_queued",
            "Queries waiting for an evaluation slot ([query] max_queued caps it)",
            m.query.queued.clone(),
        );
        r.register(
            "queries_limited",
            "Queries refused or stopped by a limit, by reason: queue_full, timeout, too_many_samples",
            m.query.limited.clone(),
        );
        r.register(
            "query_cache_hits",
            "Range queries that took some of their steps from the result cache",
            m.query.cache_hits.clone(),
        );
        r.register(
            "query_cache_misses",
            "Cacheable range queries that found no cached steps",
            m.query.cache_misses.clone(),
        );
        r.register(
            "query_cache_points",
            "Points held in cached range query answers ([query] cache_points caps it)",
            m.query_cache_points.clone(),
        );
        r.register(
            "remote_write_requests",
            "POST /api/v1/write requests by outcome: stored, bad_request (400: nothing stored), \
             error (500: the store failed), unavailable (503: shutting down, or the data folder is full)",
            m.remote_write_requests.clone(),
        );
        for outcome in ["stored", "bad_request", "error", "unavailable"] {
            m.remote_write_requests
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.into(),
                })
                .inc_by(0);
        }
        r.register(
            "remote_write_samples",
            "Samples received by POST /api/v1/write and acknowledged, including those dropped as too old or too new (counted in storage_samples_too_old and storage_samples_too_new)",
            m.remote_write_samples.clone(),
        );
        r.register(
            "storage_series",
            "Series known to storage",
            m.series.clone(),
        );
        r.register(
            "storage_head_points",
            "Points in the in-memory head, not yet compacted",
            m.head_points.clone(),
        );
        r.register_with_unit(
            "storage",
            "Bytes the store takes on disk: its tables and write-ahead log files",
            Unit::Bytes,
            m.storage_bytes.clone(),
        );
        r.register(
            "storage_compactions",
            "Head compactions into chunks",
            m.compactions.clone(),
        );
        r.register(
            "storage_compaction_errors",
            "Failed head compactions",
            m.compaction_errors.clone(),
        );
        // Both reasons from the start: `rate()` and alerts over them see a series before the
        // first deletion.
        for reason in ["retention", "max_bytes"] {
            let l = ReasonLabel {
                reason: reason.into(),
            };
            m.partitions_deleted.get_or_create(&l).inc_by(0);
            m.samples_deleted.get_or_create(&l).inc_by(0);
        }
        r.register(
            "storage_partitions_deleted",
            "Time partitions (days, raw or rollup) deleted, by reason: retention or max_bytes",
            m.partitions_deleted.clone(),
        );
        r.register(
            "storage_samples_deleted",
            "Raw samples deleted with their partitions, by reason (rollup days count buckets, not samples, and are left out)",
            m.samples_deleted.clone(),
        );
        r.register(
            "storage_samples_too_old",
            "Samples dropped on arrival (yet acknowledged) for being older than the raw retention horizon or a raw day already deleted",
            m.samples_too_old.clone(),
        );
        r.register(
            "storage_samples_too_new",
            "Samples dropped on arrival (yet acknowledged) for being stamped more than two days ahead of the aggregator's clock",
            m.samples_too_new.clone(),
        );
        r.register(
            "storage_partitions_merged",
            "Partition merges (each series' chunks of a day rewritten as one)",
            m.partitions_merged.clone(),
        );
        r.register(
            "storage_partitions_rolled_up",
            "Raw days downsampled into 5-minute and 1-hour rollups (again when late points land)",
            m.partitions_rolled_up.clone(),
        );
        r.register(
            "storage_rollup_samples",
            "Raw samples read to make rollups",
            m.rollup_samples.clone(),
        );
        r.register(
            "storage_maintenance_errors",
            "Failed merge or retention passes, and days left unmerged for a damaged chunk",
            m.maintenance_errors.clone(),
        );
        r.register(
            "storage_disk_full",
            "Whether ingestion is paused because the data folder's file system is full (1): agents keep buffering until it has space again",
            m.storage_disk_full.clone(),
        );
        for reason in ["no_space", "other"] {
            m.storage_write_errors
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(0);
        }
        r.register(
            "storage_write_errors",
            "Writes the store refused, by reason: no_space (its file system is full; retries of the held batches and writes refused while paused count too) or other",
            m.storage_write_errors.clone(),
        );
        r.register_with_unit(
            "storage_oldest_partition_start",
            "Start of the oldest time partition held, Unix time",
            Unit::Seconds,
            m.oldest_partition.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request latency by handler",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        // Every reason starts at 0, so alerts on increase() see the first refusal.
        for reason in ["certificate", "identity", "malformed", "tls", "version"] {
            m.refused
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(0);
        }
        r.register(
            "http_requests",
            "HTTP requests by handler and status code",
            m.http_requests.clone(),
        );
        m.reload.register(&mut r);
        r.register(
            "checks",
            "Synthetic checks loaded from checks_file",
            m.checks.checks.clone(),
        );
        r.register(
            "checks_last_reload_successful",
            "1 if the last load of checks_file succeeded, 0 if it was refused",
            m.checks.reload_ok.clone(),
        );
        r.register(
            "checks_assigned",
            "Check locations (a check in one region) with an agent running them",
            m.checks.assigned.clone(),
        );
        r.register(
            "checks_unassigned",
            "Check locations with no connected agent in their region",
            m.checks.unassigned.clone(),
        );
        let now = outpost_service::now_ms();
        m.process.register(&mut r, "aggregator", now);
        m.reload.succeeded(now);
        Metrics { registry: r, ..m }
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts `n` alerts sent to (`ok`) or failed at Alertmanager `am`.
    pub fn notification(&self, am: &str, n: u64, ok: bool) {
        let l = AlertmanagerLabel {
            alertmanager: redact_url(am),
        };
        if ok {
            self.notifications_sent.get_or_create(&l).inc_by(n);
        } else {
            self.notifications_errors.get_or_create(&l).inc_by(n);
        }
    }

    /// Counts a notification accepted (`ok`) or given up by a receiver's integration.
    pub fn notification_delivery(&self, receiver: &str, integration: &str, ok: bool) {
        let l = ReceiverLabel {
            receiver: receiver.to_string(),
            integration: integration.to_string(),
        };
        if ok {
            self.receiver_notifications.get_or_create(&l).inc();
        } else {
            self.receiver_notifications_failed.get_or_create(&l).inc();
        }
    }

    /// Counts a failed delivery attempt.
    pub fn notification_attempt_failed(&self, receiver: &str, integration: &str) {
        self.receiver_attempts_failed
            .get_or_create(&ReceiverLabel {
                receiver: receiver.to_string(),
                integration: integration.to_string(),
            })
            .inc();
    }

    /// Sets the number of silences in `state`.
    pub fn silences(&self, state: &str, n: i64) {
        self.silences
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(n);
    }

    /// Counts a rule file reload.
    pub fn rule_reload(&self, ok: bool) {
        self.rules_last_reload_successful.set(i64::from(ok));
        self.rule_reloads
            .get_or_create(&OutcomeLabel {
                outcome: if ok { "success" } else { "refused" }.into(),
            })
            .inc();
    }

    pub fn remote_write(&self, outcome: &str) {
        self.remote_write_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A URL with its password hidden, as Go's `url.URL.Redacted` shows it
/// (`http://user:xxxxx@host:9093`), for labels and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:xxxxx{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("http://user:secret@127.0.0.1:9093/am"),
            "http://user:xxxxx@127.0.0.1:9093/am"
        );
        assert_eq!(redact_url("http://user@h:9093"), "http://user@h:9093");
        assert_eq!(redact_url("http://h:9093/a@b"), "http://h:9093/a@b");
        assert_eq!(redact_url("h:9093"), "h:9093");
    }
}
