//! Reading a program's config file and reporting what is wrong with it: every problem at
//! once, each naming the file and the key ([`ConfigError`], a list of [`Problem`]s). Also
//! the sections every program shares: `[log]` ([`LogConfig`]) and `[telemetry]`
//! ([`TelemetryConfig`]).

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

pub use outpost_shared::Problem;

/// Why a config file cannot be used: the file and every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problems are in.
    pub file: PathBuf,
    /// At least one problem, in the order found.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// One problem with `file`.
    pub fn one(file: &Path, problem: Problem) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![problem],
        }
    }

    /// `Ok` when `problems` is empty, else the error listing them all for `file`.
    pub fn check(file: &Path, problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems,
            })
        }
    }

    /// Logs every problem as an error, saying the running config stays (a refused reload).
    pub fn log_refused_reload(&self) {
        for line in self.lines() {
            tracing::error!("config reload failed, still running on the previous config: {line}");
        }
    }

    /// One line per problem, each `file: key: message`.
    pub fn lines(&self) -> Vec<String> {
        let f = self.file.display();
        self.problems.iter().map(|p| format!("{f}: {p}")).collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// What `check-config` prints for the outcome of checking `path`: `path: OK` on stdout and
/// success, or every problem on stderr and failure.
pub fn report_check(path: &Path, outcome: Result<(), ConfigError>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => {
            println!("{}: OK", path.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Reads the config file at `path` and parses it with `parse`.
///
/// # Errors
/// The file cannot be read (`cannot read config: …`), or `parse` refuses it.
pub fn read_config<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path, Problem::file(format!("cannot read config: {e}"))))?;
    parse(&text, path)
}

/// Reads, parses and validates a config.
///
/// # Errors
/// As [`read_config`], or every problem `validate` finds.
pub fn load_config<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, ConfigError>,
    validate: impl FnOnce(&T) -> Vec<Problem>,
) -> Result<T, ConfigError> {
    let cfg = read_config(path, parse)?;
    ConfigError::check(path, validate(&cfg))?;
    Ok(cfg)
}

/// Parses TOML text into `T`; a syntax or type error is one whole-file problem giving line,
/// column and what was expected (`toml`'s own message).
///
/// # Errors
/// The text is not valid TOML for `T`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::one(path, Problem::file(e.to_string())))
}

/// Why the program could not use `dir` as its data folder: it must be a writable folder,
/// or not exist yet below a writable one. `None` when it can.
pub fn dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Some(format!("{} exists and is not a folder", dir.display())),
        Ok(_) => writable(dir)
            .err()
            .map(|e| format!("{} is not writable: {e}", dir.display())),
        Err(_) => {
            let mut parent = dir.parent();
            while let Some(p) = parent {
                if p.as_os_str().is_empty() {
                    break;
                }
                if p.is_dir() {
                    return writable(p).err().map(|e| {
                        format!(
                            "{} does not exist and cannot be created in {}: {e}",
                            dir.display(),
                            p.display()
                        )
                    });
                }
                if p.exists() {
                    return Some(format!(
                        "{} cannot be created: {} is not a folder",
                        dir.display(),
                        p.display()
                    ));
                }
                parent = p.parent();
            }
            None
        }
    }
}

fn writable(dir: &Path) -> Result<(), String> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| e.to_string())
}

/// `[log]`: what and how the program logs.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter (`info`, `debug`, `outpost_agent=debug`). `RUST_LOG` overrides it.
    pub level: Option<String>,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    /// Problems with `[log]`, each naming its key.
    pub fn validate(&self) -> Vec<Problem> {
        match &self.level {
            Some(l) => crate::logging::validate_level(l)
                .err()
                .map(|e| Problem::new("log.level", e))
                .into_iter()
                .collect(),
            None => vec![],
        }
    }
}

/// `[telemetry]`: where trace spans go.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (`http://host:4318`) that receives this program's trace spans.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it. Default: no export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Problems with `[telemetry]`, each naming its key.
    pub fn validate(&self) -> Vec<Problem> {
        match &self.otlp_endpoint {
            Some(u) => crate::telemetry::validate_endpoint(u)
                .err()
                .map(|e| Problem::new("telemetry.otlp_endpoint", e))
                .into_iter()
                .collect(),
            None => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_folders() {
        assert_eq!(
            dir_problem(&std::env::temp_dir().join("outpost-check-new/sub")),
            None
        );
        let f = std::env::temp_dir().join(format!("outpost-check-file-{}", std::process::id()));
        std::fs::write(&f, "x").unwrap();
        assert!(dir_problem(&f).unwrap().contains("is not a folder"));
        assert!(dir_problem(&f.join("below")).is_some());
        let _ = std::fs::remove_file(&f);
    }

    #[test]
    fn every_problem_is_listed_with_file_and_key() {
        let dir = std::env::temp_dir().join(format!("outpost-svc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.toml");
        std::fs::write(
            &f,
            "[log]\nlevel = \"=bad=\"\n[telemetry]\notlp_endpoint = \"https://c\"\n",
        )
        .unwrap();
        #[derive(Deserialize)]
        struct X {
            log: LogConfig,
            telemetry: TelemetryConfig,
        }
        let e = load_config(&f, parse_toml::<X>, |x| {
            let mut p = x.log.validate();
            p.extend(x.telemetry.validate());
            p
        })
        .err()
        .unwrap();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert_eq!(e.problems[0].key, "log.level");
        assert_eq!(e.problems[1].key, "telemetry.otlp_endpoint");
        let lines = e.lines();
        assert!(
            lines[0].starts_with(&format!("{}: log.level: ", f.display())),
            "{e}"
        );
        let e = read_config(&dir.join("missing.toml"), parse_toml::<X>)
            .err()
            .unwrap();
        assert!(
            e.to_string().ends_with(
                "missing.toml: cannot read config: No such file or directory (os error 2)"
            ),
            "{e}"
        );
        std::fs::write(&f, "[log\n").unwrap();
        let e = read_config(&f, parse_toml::<X>).err().unwrap();
        assert_eq!(e.problems[0].key, "");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: TOML parse error", f.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
