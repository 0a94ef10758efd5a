//! QUIC transport settings for the uplink. Both ends use the same idle timeout, so a dead
//! link is noticed by both sides after the same time, and a keep-alive well inside it, so a
//! quiet but healthy link stays up (the agent sets a longer one of its own:
//! `outpost_agent::uplink::KEEP_ALIVE`).

use std::time::Duration;

/// How often an idle connection sends a keep-alive (10 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a connection may hear nothing before it is closed (30 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// quinn's transport config with [`KEEP_ALIVE`] and [`IDLE_TIMEOUT`]; everything else is
/// quinn's default.
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        quinn::VarInt::from_u32(IDLE_TIMEOUT.as_millis() as u32).into(),
    ));
    t
}
