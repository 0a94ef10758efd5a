//! `outpost-aggregator check-config`: everything that can be checked without starting,
//! with every problem listed (the config's own validation, then the TLS files: PEM that
//! parses, certificates within their validity, the key matching the certificate, and a
//! data folder the aggregator can create or write).

use crate::config::Config;
use outpost_service::config::{ConfigError, Problem, dir_problem, read_config};
use outpost_shared::tls::{self, Role};
use std::path::Path;

/// Checks the config at `path` as the aggregator would use it.
///
/// # Errors
/// Every problem found, each naming its key; a file that does not parse has no keys to
/// check further and gives that one problem.
pub fn check(path: &Path) -> Result<(), ConfigError> {
    let cfg = read_config(path, Config::parse)?;
    let mut problems = cfg.validate();
    let now = outpost_service::now_ms() / 1000;
    problems.extend(tls::check_files(
        &cfg.tls_files(),
        Role::Server,
        ["tls.ca", "tls.cert", "tls.key"],
        now,
    ));
    if let Some(p) = dir_problem(&cfg.data_dir) {
        problems.push(Problem::new("data_dir", p));
    }
    ConfigError::check(path, problems)
}
