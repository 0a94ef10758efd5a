//! `outpost-aggregator demo`: everything on this host in one command. Generates a CA and
//! certificates, writes an aggregator and an agent config under the demo folder, starts
//! `outpost-aggregator run` and `outpost-agent run` as two processes with them (as a user
//! deploys them), prints where to look, and stops both on Ctrl-C or when either dies.

use crate::config::Config as AggConfig;
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

/// Where the `outpost-agent` program is: beside this program (as `cargo build` and the
/// packages place them), else on `PATH`.
fn agent_program() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("outpost-agent")));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("outpost-agent"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "cannot find the outpost-agent program beside outpost-aggregator or on PATH; \
             build both (cargo build --release --workspace --bins) or install the outpost-agent package"
                .to_string()
        })
}

/// One of the two programs the demo runs.
struct Child {
    name: &'static str,
    proc: tokio::process::Child,
}

impl Child {
    fn start(name: &'static str, program: &Path, config: &Path) -> Result<Child, String> {
        let proc = tokio::process::Command::new(program)
            .arg("run")
            .arg("--config")
            .arg(config)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        Ok(Child { name, proc })
    }

    /// Asks the program to stop (SIGTERM) and waits up to 10 s, then kills it.
    async fn stop(mut self) -> Result<(), String> {
        if let Some(pid) = self
            .proc
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.proc.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("the {} stopped with {}", self.name, describe(s))),
            Ok(Err(e)) => Err(format!("the {}: {e}", self.name)),
            Err(_) => {
                let _ = self.proc.kill().await;
                Err(format!(
                    "the {} did not stop within 10s and was killed",
                    self.name
                ))
            }
        }
    }
}

/// "exit status 2", "signal 9 (SIGKILL)".
fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal 9 (killed)".into(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => s.to_string(),
    }
}

/// Waits until something accepts TCP connections on `addr`, or `child` exits.
async fn wait_listening(addr: &str, child: &mut Child) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(s)) = child.proc.try_wait() {
            return Err(format!(
                "the {} exited during start-up with {} (its log above says why)",
                child.name,
                describe(s)
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the {} does not listen on {addr} after 30s",
                child.name
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs the demo until Ctrl-C or SIGTERM: `outpost-aggregator run` and `outpost-agent run`
/// as two processes with the configs [`prepare`] writes, as a user deploys them. When either
/// program exits on its own, the other is stopped and the error says which one and how.
pub async fn run(o: DemoOptions) -> Result<(), String> {
    let (agg_path, agent_path) = prepare(&o)?;
    // Refuse a bad aggregator config here, with every problem, before starting anything.
    AggConfig::load(&agg_path).map_err(|e| e.to_string())?;
    let agent_bin = agent_program()?;
    let self_bin =
        std::env::current_exe().map_err(|e| format!("cannot find this program's own path: {e}"))?;
    let local = |a: &str| a.replace("0.0.0.0", "127.0.0.1");
    let mut agg = Child::start("aggregator", &self_bin, &agg_path)?;
    wait_listening(&local(&o.http), &mut agg).await?;
    let mut agent = match Child::start("agent", &agent_bin, &agent_path) {
        Ok(a) => a,
        Err(e) => {
            let _ = agg.stop().await;
            return Err(e);
        }
    };
    if let Err(e) = wait_listening(&local(&o.agent_http), &mut agent).await {
        let _ = agg.stop().await;
        return Err(e);
    }
    let base = format!("http://{}", local(&o.http));
    println!(
        "\nOutpost demo is running (data and certificates in {dir}).\n\
         aggregator: pid {agg_pid}, config {agg_cfg}\n\
         agent:      pid {agent_pid}, config {agent_cfg}\n\n\
         Query the aggregator:\n  {base}/api/v1/query?query=node_load1\n  {base}/api/v1/query?query=outpost_agent_cycles_total\n  \
         {base}/api/v1/agents\n  {base}/api/v1/checks  (synthetic checks, from {dir}/checks.yaml)\n  \
         {base}/api/v1/label/__name__/values\n  {base}/metrics\n\
         The agent's own metrics:\n  http://{agent_http}/metrics\n\n\
         Grafana: add a Prometheus data source with URL {base}\n\
         Press Ctrl-C to stop.\n",
        dir = o.dir.display(),
        agent_http = local(&o.agent_http),
        agg_pid = agg.proc.id().unwrap_or_default(),
        agent_pid = agent.proc.id().unwrap_or_default(),
        agg_cfg = agg_path.display(),
        agent_cfg = agent_path.display(),
    );
    let died = tokio::select! {
        _ = outpost_service::signal::shutdown_signal() => None,
        s = agg.proc.wait() => Some(("aggregator", s)),
        s = agent.proc.wait() => Some(("agent", s)),
    };
    match died {
        None => {
            println!("stopping…");
            // The agent first, so it can hand what is in flight to the aggregator.
            let a = agent.stop().await;
            let g = agg.stop().await;
            a.and(g)?;
            println!("stopped cleanly");
            Ok(())
        }
        Some((name, status)) => {
            let how = match status {
                Ok(s) => describe(s),
                Err(e) => e.to_string(),
            };
            let other = if name == "agent" { agg } else { agent };
            eprintln!("the {name} exited with {how}; stopping the {}", other.name);
            let _ = other.stop().await;
            Err(format!(
                "the {name} exited with {how} (its log above says why)"
            ))
        }
    }
}
