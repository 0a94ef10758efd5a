//! `outpost-agent check-config`: everything that can be checked without starting, with
//! every problem listed (the config's own validation, then the files it names: PEM that
//! parses, certificates within their validity, the key matching the certificate, the
//! certificate's common name matching `id`, and a buffer folder the agent can create or
//! write).

use crate::config::Config;
use outpost_service::config::{ConfigError, Problem, dir_problem, read_config};
use outpost_shared::tls::{self, Role};
use std::path::Path;

/// Checks the config at `path` as the agent would use it.
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
        Role::Client,
        ["aggregator.ca", "aggregator.cert", "aggregator.key"],
        now,
    ));
    if let Ok(certs) = tls::load_certs(&cfg.aggregator.cert)
        && let Ok(cn) = tls::common_name(&certs[0])
        && cn != cfg.id
    {
        problems.push(Problem::new(
            "aggregator.cert",
            format!(
                "{} is issued to {cn:?} but id is {:?}; the aggregator refuses a mismatch",
                cfg.aggregator.cert.display(),
                cfg.id
            ),
        ));
    }
    if let Some(p) = dir_problem(&cfg.buffer.dir) {
        problems.push(Problem::new("buffer.dir", p));
    }
    ConfigError::check(path, problems)
}
