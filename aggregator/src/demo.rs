//! `outpost-aggregator demo`: everything on this host in one command. Generates a CA and
//! certificates, writes an aggregator and an agent config under the demo folder, runs both
//! until Ctrl-C, and prints where to look.

use crate::config::Config as AggConfig;
use outpost_agent::config::Config as AgentConfig;
use std::path::{Path, PathBuf};

pub struct DemoOptions {
    pub dir: PathBuf,
    pub http: String,
    pub quic: String,
    pub agent_http: String,
    pub interval: String,
}

pub const DEMO_AGENT: &str = "local";

/// Writes certificates (once) and both configs; returns their paths.
pub fn prepare(o: &DemoOptions) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(&o.dir)
        .map_err(|e| format!("cannot create {}: {e}", o.dir.display()))?;
    let dir = std::fs::canonicalize(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    let certs = dir.join("certs");
    if !certs.join("ca.crt").exists() {
        outpost_shared::tls::init_ca(&certs, &[]).map_err(|e| e.to_string())?;
    }
    if !certs
        .join("agents")
        .join(format!("{DEMO_AGENT}.crt"))
        .exists()
    {
        outpost_shared::tls::issue_agent(&certs, DEMO_AGENT).map_err(|e| e.to_string())?;
    }
    let agg = dir.join("aggregator.toml");
    write(
        &agg,
        &format!(
            r#"# Written by `outpost-aggregator demo`. See packaging/aggregator.toml for every key.
data_dir = "data/aggregator"
checks_file = "checks.yaml"

[listen]
quic = "{quic}"
http = "{http}"

[tls]
ca = "certs/ca.crt"
cert = "certs/aggregator.crt"
key = "certs/aggregator.key"
"#,
            quic = o.quic,
            http = o.http
        ),
    )?;
    let checks = dir.join("checks.yaml");
    // Written once: edits to it are picked up while the demo runs.
    if !checks.exists() {
        let local = |a: &str| a.replace("0.0.0.0", "127.0.0.1");
        write(
            &checks,
            &format!(
                r#"# Synthetic checks, assigned by the aggregator to agents of each location (region).
# Edit and save: the aggregator re-reads this file and the agent picks up the change.
# See packaging/checks.yaml for every check type.
checks:
  - name: aggregator-health
    type: http
    frequency: 10s
    url: http://{http}/health
    locations: [local]
  - name: agent-metrics
    type: http
    frequency: 30s
    url: http://{agent_http}/metrics
    locations: [local]
"#,
                http = local(&o.http),
                agent_http = local(&o.agent_http)
            ),
        )?;
    }
    let agent = dir.join("agent.toml");
    write(
        &agent,
        &format!(
            r#"# Written by `outpost-aggregator demo`. See packaging/agent.toml for every key.
id = "{DEMO_AGENT}"
region = "local"

[aggregator]
endpoints = ["{quic_connect}"]
server_name = "localhost"
ca = "certs/ca.crt"
cert = "certs/agents/{DEMO_AGENT}.crt"
key = "certs/agents/{DEMO_AGENT}.key"

[buffer]
dir = "data/agent-buffer"
max_bytes = "256MiB"

[collect]
interval = "{interval}"

[http]
listen = "{agent_http}"
"#,
            quic_connect = o.quic.replace("0.0.0.0", "127.0.0.1"),
            interval = o.interval,
            agent_http = o.agent_http
        ),
    )?;
    Ok((agg, agent))
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(o: DemoOptions) -> Result<(), String> {
    let (agg_path, agent_path) = prepare(&o)?;
    let agg = AggConfig::load(&agg_path)?;
    let agent = AgentConfig::load(&agent_path)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let agg_task = tokio::spawn(crate::run(agg, stop(rx.clone())));
    // Let the aggregator bind before the agent's first connection attempt.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    if agg_task.is_finished() {
        return match agg_task.await {
            Ok(Err(e)) => Err(format!("aggregator: {e}")),
            _ => Err("aggregator stopped".into()),
        };
    }
    let agent_task = tokio::spawn(outpost_agent::run(agent, stop(rx)));
    let base = format!("http://{}", o.http.replace("0.0.0.0", "127.0.0.1"));
    println!(
        "\nOutpost demo is running (data and certificates in {dir}).\n\n\
         Query the aggregator:\n  {base}/api/v1/query?query=node_load1\n  {base}/api/v1/query?query=outpost_agent_cycles_total\n  \
         {base}/api/v1/agents\n  {base}/api/v1/checks  (synthetic checks, from {dir}/checks.yaml)\n  \
         {base}/api/v1/label/__name__/values\n  {base}/metrics\n\
         The agent's own metrics:\n  http://{agent_http}/metrics\n\n\
         Grafana: add a Prometheus data source with URL {base}\n\
         Press Ctrl-C to stop.\n",
        dir = o.dir.display(),
        agent_http = o.agent_http
    );
    outpost_agent::shutdown_signal().await;
    println!("stopping…");
    let _ = tx.send(true);
    let a = agent_task.await;
    let g = agg_task.await;
    if let Ok(Err(e)) = a {
        return Err(format!("agent: {e}"));
    }
    if let Ok(Err(e)) = g {
        return Err(format!("aggregator: {e}"));
    }
    println!("stopped cleanly");
    Ok(())
}
