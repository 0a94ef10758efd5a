//! Which agents are connected right now, through which connection, and what their last
//! heartbeat said. Persisted facts (applied seq, last batch time) are in the ledger.

use outpost_shared::frame::{Heartbeat, Hello};
use quinn::Connection;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct ConnectedAgent {
    pub id: String,
    pub conn_id: u64,
    pub conn: Connection,
    pub region: String,
    pub version: String,
    pub connected_since_ms: i64,
    pub last_heartbeat_ms: i64,
    /// Agent clock minus ours, from the hello (one-way; the agent's own estimate is better).
    pub clock_skew_ms: i64,
    pub dropped_samples: u64,
    pub backlog_bytes: u64,
    /// The protocol version the connection speaks.
    pub protocol: u16,
    /// When anything (a batch, a live copy, a control frame) last arrived from it, ms.
    pub last_heard_ms: i64,
}

impl ConnectedAgent {
    pub fn new(conn_id: u64, conn: Connection, h: &Hello, protocol: u16, now_ms: i64) -> Self {
        ConnectedAgent {
            id: h.agent_id.clone(),
            conn_id,
            conn,
            region: h.region.clone(),
            version: h.agent_version.clone(),
            connected_since_ms: now_ms,
            last_heartbeat_ms: now_ms,
            clock_skew_ms: h.clock_ms - now_ms,
            dropped_samples: 0,
            backlog_bytes: 0,
            protocol,
            last_heard_ms: now_ms,
        }
    }
}

/// A snapshot for the API.
#[derive(Clone, Debug, Default)]
pub struct AgentView {
    pub connected: bool,
    pub region: String,
    pub version: String,
    pub last_heartbeat_ms: i64,
    pub clock_skew_ms: i64,
    pub dropped_samples: u64,
    pub backlog_bytes: u64,
}

#[derive(Default)]
pub struct Connections {
    agents: Mutex<HashMap<String, ConnectedAgent>>,
    /// Last known state of agents that disconnected.
    gone: Mutex<HashMap<String, AgentView>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectedAgent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; returns the one it replaces, for the caller to close.
    pub fn connect(&self, a: ConnectedAgent) -> Option<Connection> {
        self.lock().insert(a.id.clone(), a).map(|old| old.conn)
    }

    pub fn heartbeat(&self, agent: &str, conn_id: u64, h: &Heartbeat, now_ms: i64) {
        if let Some(a) = self.lock().get_mut(agent).filter(|a| a.conn_id == conn_id) {
            a.last_heartbeat_ms = now_ms;
            a.dropped_samples = h.dropped_samples;
            a.backlog_bytes = h.backlog_bytes;
            a.clock_skew_ms = h.clock_ms - now_ms;
        }
    }

    /// Something arrived from the agent on connection `conn_id`.
    pub fn heard(&self, agent: &str, conn_id: u64, now_ms: i64) {
        if let Some(a) = self.lock().get_mut(agent).filter(|a| a.conn_id == conn_id) {
            a.last_heard_ms = a.last_heard_ms.max(now_ms);
        }
    }

    /// Connections of agents that promised liveness (protocol
    /// [`outpost_shared::session::RUN_CHECK_VERSION`] and later) and were silent for more
    /// than `after_ms` at `now_ms`: (agent, its connection, ms silent). Older agents are
    /// only noticed when their connection ends.
    pub fn silent(&self, now_ms: i64, after_ms: i64) -> Vec<(String, Connection, i64)> {
        self.lock()
            .values()
            .filter(|a| a.protocol >= outpost_shared::session::RUN_CHECK_VERSION)
            .filter(|a| now_ms - a.last_heard_ms > after_ms)
            .map(|a| (a.id.clone(), a.conn.clone(), now_ms - a.last_heard_ms))
            .collect()
    }

    /// Every agent this aggregator has seen connect since it started: (id, region,
    /// connected now), sorted by id.
    pub fn known(&self) -> Vec<(String, String, bool)> {
        let mut out: Vec<(String, String, bool)> = self
            .lock()
            .values()
            .map(|a| (a.id.clone(), a.region.clone(), true))
            .collect();
        let gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, String, bool)> = gone
            .iter()
            .filter(|(id, _)| !out.iter().any(|(o, _, _)| o == *id))
            .map(|(id, v)| (id.clone(), v.region.clone(), false))
            .collect();
        out.extend(gone);
        out.sort();
        out
    }

    /// Forgets the connection if it is still the agent's current one.
    pub fn disconnect(&self, agent: &str, conn_id: u64, now_ms: i64) {
        let mut m = self.lock();
        if m.get(agent).is_some_and(|a| a.conn_id == conn_id)
            && let Some(a) = m.remove(agent)
        {
            let mut v = view(&a, false);
            v.last_heartbeat_ms = now_ms;
            self.gone
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(agent.to_string(), v);
        }
    }

    pub fn get(&self, agent: &str) -> Option<AgentView> {
        if let Some(a) = self.lock().get(agent) {
            return Some(view(a, true));
        }
        self.gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent)
            .cloned()
    }

    /// When the agent's current connection was made, ms; `None` when it is not connected.
    pub fn connected_since(&self, agent: &str) -> Option<i64> {
        self.lock().get(agent).map(|a| a.connected_since_ms)
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self, code: u32, reason: &[u8]) {
        for a in self.lock().values() {
            a.conn.close(quinn::VarInt::from_u32(code), reason);
        }
    }
}

fn view(a: &ConnectedAgent, connected: bool) -> AgentView {
    AgentView {
        connected,
        region: a.region.clone(),
        version: a.version.clone(),
        last_heartbeat_ms: a.last_heartbeat_ms,
        clock_skew_ms: a.clock_skew_ms,
        dropped_samples: a.dropped_samples,
        backlog_bytes: a.backlog_bytes,
    }
}
