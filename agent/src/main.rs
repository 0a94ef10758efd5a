//! `outpost-agent`: the command line.

use clap::{Parser, Subcommand};
use outpost_agent::config::{Config, LogFormat};
use outpost_service::logging::LogOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "outpost-agent",
    version,
    about = "Samples this host and streams its metrics to an Outpost aggregator over QUIC"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground until SIGTERM or Ctrl-C.
    Run {
        /// Path to the agent's TOML config (see packaging/agent.toml).
        #[arg(long, short, default_value = "/etc/outpost/agent.toml")]
        config: PathBuf,
    },
    /// Collect the host metrics the config enables and print them as Prometheus text
    /// exposition with `# TYPE` lines, as node_exporter serves them. Needs only [collect];
    /// nothing is buffered or sent. Collector failures go to stderr.
    Collect {
        #[arg(long, short, default_value = "/etc/outpost/agent.toml")]
        config: PathBuf,
        /// Print one cycle and exit, instead of one cycle per [collect] interval.
        #[arg(long)]
        once: bool,
    },
    /// Validate a config file and the files it names, then exit (non-zero on any problem).
    CheckConfig {
        #[arg(long, short, default_value = "/etc/outpost/agent.toml")]
        config: PathBuf,
    },
    /// Show the connection, the backlog, the drain rate and the time to drain. Asks the
    /// running agent ([http] listen); when none answers, reads the buffer on disk.
    Status {
        #[arg(long, short, default_value = "/etc/outpost/agent.toml")]
        config: PathBuf,
        /// Print JSON instead of the report.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Collect { config, once } => {
            match outpost_agent::collect_command(&config, once, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Status { config, json } => match status(&config) {
            Ok(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                } else {
                    print!(
                        "{}",
                        outpost_agent::status::render(&s, outpost_service::now_ms())
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { config } => {
            outpost_shared::tls::install_crypto_provider();
            outpost_service::config::report_check(
                &config,
                outpost_agent::check_config::check(&config),
            )
        }
        Cmd::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let telemetry = outpost_service::logging::init_with(&LogOptions {
                level: cfg.log.level.as_deref(),
                json: cfg.log.format == LogFormat::Json,
                service: "outpost-agent",
                otlp_endpoint: cfg.telemetry.otlp_endpoint.as_deref(),
            });
            // One worker thread: the agent's tasks mostly wait (the uplink, the HTTP server,
            // timers). Host collection has a thread of its own; scrapes and buffer work run
            // on the blocking pool (not capped, so slow scrape targets never hold up a
            // cycle), which keeps its threads past a 10 s cycle instead of starting new ones
            // every cycle.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_keep_alive(std::time::Duration::from_secs(120))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(outpost_agent::run_with(
                cfg,
                Some(config),
                outpost_service::signal::shutdown_signal(),
            ));
            // Stop the runtime's tasks, then flush exported spans, outside the runtime.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            if let Err(e) = &r {
                tracing::error!("{e}");
            }
            drop(telemetry);
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("outpost-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The running agent's `/status`, or what the buffer on disk says when no agent answers.
fn status(path: &std::path::Path) -> Result<outpost_agent::status::Status, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    if let Some(s) = ask_running_agent(&cfg.http.listen) {
        return Ok(s);
    }
    let stats = outpost_agent::buffer::Buffer::inspect(&cfg.buffer).map_err(|e| {
        format!(
            "no agent answers on {} ([http] listen) and the buffer cannot be read: {e}",
            cfg.http.listen
        )
    })?;
    Ok(outpost_agent::status::Status::from_stats(
        &cfg.id,
        &cfg.region,
        &stats,
    ))
}

/// GET /status from a local agent, with short timeouts; `None` when nothing answers.
fn ask_running_agent(listen: &str) -> Option<outpost_agent::status::Status> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = listen.to_socket_addrs().ok()?.next()?;
    let addr = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET /status HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}
