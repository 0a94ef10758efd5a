//! `outpost-alerting`: Prometheus rule files and their evaluation, as Prometheus 2.42 does it.
//!
//! - [`rulefile`]: rule files, read and validated as `promtool check rules` does.
//! - [`template`]: Go's `text/template` with Prometheus' functions, for alert labels and
//!   annotations.
//! - [`rule`]: recording and alerting rules evaluated at one time; alert state
//!   (pending → firing → resolved, `keep_firing_for`, resend bookkeeping).
//! - [`group`]: a group's evaluation (rules in order, each seeing the ones before, stale
//!   markers, `limit`), its Prometheus-slotted schedule and its persistable state.
//! - [`query`]: the query function rules read through, and one over the PromQL engine.
//! - [`duration`]: Prometheus' duration syntax (`1h30m`).
//! - [`amconfig`]: Alertmanager's configuration file, read and validated as `amtool
//!   check-config` does.
//! - [`dispatch`]: Alertmanager's aggregation groups, their timings and deduplication, in
//!   simulated time.
//! - [`escalation`]: escalation levels with reminders, stopped by an acknowledgement or
//!   the resolve (beyond Alertmanager).
//! - [`inhibit`]: Alertmanager's inhibition rules.
//! - [`silence`]: silences in Alertmanager's v2 API shape, and which alerts they mute.
//! - [`webhook`]: Alertmanager's webhook message, alert fingerprints and group keys.
//! - [`route`]: Alertmanager's routing tree (the `route:` section, matchers in all their
//!   spellings, inheritance, `continue`), as Alertmanager 0.25 walks it.
//! - [`timeinterval`]: Alertmanager's time intervals, which mute or activate routes.
//! - [`amtemplate`]: Alertmanager's notification templates: their data, the template set
//!   (default texts and the user's `templates:` files) and its expansion.
//! - [`payload`]: what each integration sends (Slack message, PagerDuty event, email,
//!   webhook) for a notification, built without sending.
//!
//! Pure: no runtime, no clock (every evaluation takes the time as an argument), no I/O
//! (but for [`amtemplate::read_template_files`], which reads the template files a
//! configuration names);
//! series are read only through a query function and written only through an append
//! hook, both passed in by the caller. It depends on `outpost-shared` and
//! `outpost-promql`, never on tokio, RocksDB or HTTP.

pub mod amconfig;
pub mod amtemplate;
pub mod dispatch;
pub mod duration;
pub mod escalation;
pub mod group;
pub mod inhibit;
pub mod payload;
pub mod query;
pub mod route;
pub mod rule;
pub mod rulefile;
pub mod silence;
pub mod template;
pub mod timeinterval;
pub mod webhook;
mod xxhash;

pub use group::{
    AlertToSend, EvalReport, Group, GroupOptions, GroupState, HeldFn, RestorePolicy, RuleOutcome,
    RuleState,
};
pub use query::{QueryFn, engine_query};
pub use rule::{Alert, AlertState, Health, Rule, SeriesSample};
pub use rulefile::{RuleFile, RuleProblem, parse_rule_file};
