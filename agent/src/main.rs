//! `outpost-agent`: the command line.

use clap::{Parser, Subcommand};
use outpost_agent::config::{Config, LogFormat};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Collect { config, once } => match outpost_agent::collect_command(&config, once, &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::CheckConfig { config } => match check(&config) {
            Ok(()) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            outpost_agent::logging::init(cfg.log.level.as_deref(), cfg.log.format == LogFormat::Json);
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(outpost_agent::run(cfg, outpost_agent::shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("outpost-agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Everything that can be checked without starting: the file, its keys, the certificate
/// files and that the certificate matches its key.
fn check(path: &std::path::Path) -> Result<(), String> {
    let cfg = Config::load(path)?;
    outpost_shared::tls::install_crypto_provider();
    outpost_shared::tls::client_config(&cfg.tls_files()).map_err(|e| format!("{}: [aggregator] TLS files: {e}", path.display()))?;
    Ok(())
}
