//! `outpost-agent`: the command line.

use clap::{Parser, Subcommand};
use outpost_agent::config::{Config, LogFormat};
use outpost_agent::logging::LogOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "outpost-agent", version, about = "Samples this host and streams its metrics to an Outpost aggregator over QUIC")]
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
    /// Validate a config file and the files it names, then exit (non-zero on any problem).
    CheckConfig {
        #[arg(long, short, default_value = "/etc/outpost/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { config } => {
            outpost_shared::tls::install_crypto_provider();
            let problems = outpost_agent::check::check(&config);
            if problems.is_empty() {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
                ExitCode::FAILURE
            }
        }
        Cmd::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let telemetry = outpost_agent::logging::init_with(&LogOptions {
                level: cfg.log.level.as_deref(),
                json: cfg.log.format == LogFormat::Json,
                service: "outpost-agent",
                otlp_endpoint: cfg.telemetry.otlp_endpoint.as_deref(),
            });
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(outpost_agent::run_with(cfg, Some(config), outpost_agent::shutdown_signal()));
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
