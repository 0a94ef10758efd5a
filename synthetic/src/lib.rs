//! `outpost-synthetic`: synthetic checks. Definitions ([`def`]) and their validation
//! ([`validate`]), pure assertion and capture logic ([`assert`]), one runner per check type
//! (`http`, `journey`, `tcp`, `dns`, `icmp`, `tls`, `http3`) with the address selection
//! ([`addr`]) and body decoding ([`coding`]) they share, the [`Scheduler`] that runs a
//! changing set of checks, and [`Outcome::to_batch`], which turns a run into samples named
//! like blackbox_exporter's. Knows nothing of QUIC transport to the aggregator or storage.
//!
//! Definitions, validation, assertions and outcomes are pure and always built. The runners,
//! the address selection and body decoding they use, and the scheduler need a runtime and
//! network libraries: they are behind the `runners` feature (on by default), which the
//! aggregator, which only reads and places checks, leaves off.

#[cfg(feature = "runners")]
pub mod addr;
pub mod assert;
#[cfg(feature = "runners")]
pub mod coding;
pub mod def;
#[cfg(feature = "runners")]
mod dns;
#[cfg(feature = "runners")]
mod http;
#[cfg(feature = "runners")]
mod http3;
#[cfg(feature = "runners")]
mod icmp;
#[cfg(feature = "runners")]
mod journey;
mod outcome;
#[cfg(feature = "runners")]
mod scheduler;
#[cfg(feature = "runners")]
mod tcp;
#[cfg(feature = "runners")]
mod tls;
pub mod validate;

pub use def::{AlertDef, CheckDef, CheckKind, IpProtocol, parse_checks_file};
pub use outcome::{Metric, Outcome, StepOutcome};
#[cfg(feature = "runners")]
pub use scheduler::{Clock, Scheduler, start_offset};

#[cfg(feature = "runners")]
use std::time::Instant;

#[cfg(feature = "runners")]
/// Runs one check once, within its timeout, and reports the outcome. Never panics: a panic
/// inside a runner becomes a failed outcome naming it.
pub async fn run(def: &CheckDef) -> Outcome {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + def.timeout());
    let d = def.clone();
    let task = tokio::spawn(async move { run_inner(&d, deadline).await });
    // The runners stop at the deadline themselves; the outer limit is a safety net.
    let grace = def.timeout() + std::time::Duration::from_millis(500);
    let mut out = match tokio::time::timeout(grace, task).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::failed(def, format!("internal error: runner stopped: {e}")),
        Err(_) => Outcome::failed(def, timeout_reason(def)),
    };
    out.check = def.name.clone();
    out.duration = start.elapsed();
    out
}

#[cfg(feature = "runners")]
/// Runs `probe` with a fresh outcome until `deadline`; a probe still running then fails with
/// the timeout as its reason, keeping the metrics it recorded so far.
pub(crate) async fn probe_until(
    def: &CheckDef,
    deadline: tokio::time::Instant,
    probe: impl AsyncFnOnce(&CheckDef, &mut Outcome) -> Result<(), String>,
) -> Outcome {
    let mut o = Outcome::new(def);
    let r = match tokio::time::timeout_at(deadline, probe(def, &mut o)).await {
        Ok(r) => r,
        Err(_) => Err(timeout_reason(def)),
    };
    o.finish(r)
}

#[cfg(feature = "runners")]
pub(crate) fn timeout_reason(def: &CheckDef) -> String {
    format!(
        "timed out after {}",
        outpost_shared::units::Duration(def.timeout())
    )
}

#[cfg(feature = "runners")]
async fn run_inner(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    match def.kind {
        CheckKind::Http if !def.steps.is_empty() => journey::run(def, deadline).await,
        CheckKind::Http => http::run_check(def, deadline).await,
        CheckKind::Tcp => tcp::run(def, deadline).await,
        CheckKind::Dns => dns::run(def, deadline).await,
        CheckKind::Icmp => icmp::run(def, deadline).await,
        CheckKind::Tls => tls::run(def, deadline).await,
        CheckKind::Http3 => http3::run(def, deadline).await,
    }
}
