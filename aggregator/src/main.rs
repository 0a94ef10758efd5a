//! `outpost-aggregator`: the command line.

use clap::{Parser, Subcommand};
use outpost_aggregator::config::Config;
use outpost_aggregator::demo::DemoOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "outpost-aggregator",
    version,
    about = "Receives metrics from Outpost agents, stores them and serves Prometheus-compatible queries"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the aggregator in the foreground until SIGTERM or Ctrl-C.
    Run {
        /// Path to the aggregator's TOML config (see packaging/aggregator.toml).
        #[arg(long, short, default_value = "/etc/outpost/aggregator.toml")]
        config: PathBuf,
    },
    /// Validate a config file and the files it names, then exit (non-zero on any problem).
    CheckConfig {
        #[arg(long, short, default_value = "/etc/outpost/aggregator.toml")]
        config: PathBuf,
    },
    /// Work with alert and recording rules.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Create and issue mutual-TLS certificates.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Show a data folder's series, time partitions (samples, chunks, bytes each, raw and
    /// rollups) and retention; read-only, so it also works beside a running aggregator.
    /// With --verify, read every record and report damage (exit status 1 when there is
    /// any); with --maintain, run a maintenance pass first (aggregator stopped).
    Tsdb {
        /// The aggregator's config, for `data_dir` and `[storage]`.
        #[arg(long, short, default_value = "/etc/outpost/aggregator.toml")]
        config: PathBuf,
        /// The data folder to read instead of the config's `data_dir` (then no config is
        /// read, and the default `[storage]` retentions are shown and, with --maintain,
        /// applied).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Decode every label set, wal record and chunk, and check they agree with the
        /// index and the partitions' statistics.
        #[arg(long)]
        verify: bool,
        /// Print JSON (the same object as `/api/v1/status/tsdb`'s `outpostStats.storage`).
        #[arg(long)]
        json: bool,
        /// First run one maintenance pass (compact the head, merge closed days, make their
        /// 5-minute and 1-hour rollups, apply the retention and size cap), as the aggregator
        /// does every minute. Needs the folder to itself: stop the aggregator first.
        #[arg(long)]
        maintain: bool,
    },
    /// Run an aggregator and a local agent on this host, with generated certificates.
    Demo {
        /// Folder for certificates, configs and data.
        #[arg(long, default_value = "./outpost-demo")]
        dir: PathBuf,
        /// HTTP API address.
        #[arg(long, default_value = "127.0.0.1:9470")]
        http: String,
        /// QUIC ingest address.
        #[arg(long, default_value = "127.0.0.1:9471")]
        quic: String,
        /// The agent's local HTTP address.
        #[arg(long, default_value = "127.0.0.1:9472")]
        agent_http: String,
        /// The agent's collection interval.
        #[arg(long, default_value = "5s")]
        interval: String,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Evaluate rule files over stored data through a running aggregator's API: write the
    /// recording rules' series for the range (as `promtool tsdb create-blocks-from rules`)
    /// and print the alerts that would have been pending and firing.
    Replay {
        /// Rule files (Prometheus' format); globs allowed; repeatable.
        #[arg(long = "rules", required = true)]
        rules: Vec<String>,
        /// First evaluation time: RFC 3339 (2026-11-30T00:00:00Z) or Unix seconds.
        #[arg(long)]
        from: String,
        /// Last evaluation time (inclusive); default now.
        #[arg(long)]
        to: Option<String>,
        /// The aggregator's config, for its API address, bearer token, external labels
        /// and URL.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The aggregator's HTTP API; default `listen.http` of --config, else
        /// http://127.0.0.1:9470.
        #[arg(long)]
        url: Option<String>,
        /// Interval of groups that set none (as promtool's --eval-interval); default the
        /// config's `evaluation_interval` with --config, else 1m.
        #[arg(long)]
        eval_interval: Option<String>,
        /// Evaluate and print the alerts, but write no samples.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a CA and the aggregator's certificate: ca.crt, ca.key, aggregator.crt, aggregator.key.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra subject alternative names for the aggregator (DNS names or IP addresses); repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue an agent's client certificate: agents/ID.crt and agents/ID.key, signed by DIR/ca.key.
    Agent {
        #[arg(long)]
        dir: PathBuf,
        /// The agent's id; it must match `id` in the agent's config.
        #[arg(long)]
        id: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Queries nest up to outpost_promql::MAX_NESTING deep and are parsed, planned and
        // evaluated recursively on these threads; 8 MiB leaves a wide margin (only touched
        // pages cost memory).
        .thread_stack_size(8 << 20)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::CheckConfig { config } => {
            outpost_shared::tls::install_crypto_provider();
            return outpost_service::config::report_check(
                &config,
                outpost_aggregator::check_config::check(&config),
            );
        }
        Cmd::Rules {
            cmd:
                RulesCmd::Replay {
                    rules,
                    from,
                    to,
                    config,
                    url,
                    eval_interval,
                    dry_run,
                },
        } => replay(rules, from, to, config, url, eval_interval, dry_run),
        Cmd::Certs {
            cmd: CertsCmd::Init { dir, sans },
        } => outpost_shared::tls::init_ca(&dir, &sans)
            .map(print_files)
            .map_err(|e| e.to_string()),
        Cmd::Certs {
            cmd: CertsCmd::Agent { dir, id },
        } => outpost_shared::tls::issue_agent(&dir, &id)
            .map(print_files)
            .map_err(|e| e.to_string()),
        Cmd::Demo {
            dir,
            http,
            quic,
            agent_http,
            interval,
        } => runtime().and_then(|rt| {
            rt.block_on(outpost_aggregator::demo::run(DemoOptions {
                dir,
                http,
                quic,
                agent_http,
                interval,
            }))
        }),
        Cmd::Tsdb {
            config,
            data_dir,
            verify,
            json,
            maintain,
        } => {
            let data_dir_given = data_dir.is_some();
            let (dir, policy) = match data_dir {
                Some(d) => (
                    d,
                    outpost_aggregator::config::StorageConfig::default().policy(),
                ),
                None => match Config::load(&config) {
                    Ok(c) => (c.data_dir.clone(), c.storage.policy()),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
            };
            let policy = outpost_aggregator::tsdb_cmd::Policy {
                policy,
                default: data_dir_given,
            };
            match outpost_aggregator::tsdb_cmd::run(
                &dir,
                &policy,
                verify,
                json,
                maintain,
                &mut std::io::stdout().lock(),
            ) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                // `| head` closing the pipe is not an error of the command.
                Err(e) if e.contains("Broken pipe") => Ok(()),
                Err(e) => Err(e),
            }
        }
        Cmd::Run { config } => match Config::load(&config) {
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            Ok(cfg) => {
                let telemetry =
                    outpost_service::logging::init_with(&outpost_service::logging::LogOptions {
                        level: cfg.log.level.as_deref(),
                        json: cfg.log.format == outpost_service::config::LogFormat::Json,
                        service: "outpost-aggregator",
                        otlp_endpoint: cfg.telemetry.otlp_endpoint.as_deref(),
                    });
                let r = runtime().and_then(|rt| {
                    let r = rt
                        .block_on(outpost_aggregator::run_with(
                            cfg,
                            Some(config),
                            outpost_service::signal::shutdown_signal(),
                        ))
                        .map_err(|e| e.to_string());
                    rt.shutdown_timeout(std::time::Duration::from_secs(2));
                    r
                });
                // Flush exported spans once the runtime has stopped.
                drop(telemetry);
                r
            }
        },
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay(
    rules: Vec<String>,
    from: String,
    to: Option<String>,
    config: Option<PathBuf>,
    url: Option<String>,
    eval_interval: Option<String>,
    dry_run: bool,
) -> Result<(), String> {
    use outpost_aggregator::replay;
    let cfg = config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    let interval: outpost_shared::units::Duration = match (eval_interval, &cfg) {
        (Some(t), _) => t.parse().map_err(|e| format!("--eval-interval: {e}"))?,
        (None, Some(c)) => c.alerting.evaluation_interval,
        (None, None) => outpost_shared::units::Duration::from_secs(60),
    };
    if interval.get().is_zero() {
        return Err("--eval-interval: must be more than 0s".into());
    }
    let from_ms = replay::parse_when(&from).map_err(|e| format!("--from: {e}"))?;
    let to_ms = match to {
        Some(t) => replay::parse_when(&t).map_err(|e| format!("--to: {e}"))?,
        None => {
            let now = outpost_service::now_ms();
            if from_ms > now {
                return Err("--from is in the future (--to defaults to now)".into());
            }
            now
        }
    };
    let url = url
        .or_else(|| cfg.as_ref().map(|c| format!("http://{}", c.listen.http)))
        .unwrap_or_else(|| "http://127.0.0.1:9470".into());
    let opts = replay::ReplayOptions {
        url,
        token: cfg.as_ref().and_then(Config::token),
        rules,
        from_ms,
        to_ms,
        eval_interval_ms: interval.get().as_millis() as i64,
        dry_run,
        external_labels: cfg
            .as_ref()
            .map(|c| c.alerting.external_labels.clone())
            .unwrap_or_default(),
        external_url: cfg.as_ref().map(Config::external_url).unwrap_or_default(),
    };
    replay::run(&opts, &mut std::io::stdout().lock())
}

fn print_files(files: Vec<PathBuf>) {
    for f in files {
        println!("wrote {}", f.display());
    }
}
