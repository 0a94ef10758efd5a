//! `outpost-aggregator check-config`: everything that can be checked without starting,
//! with every problem listed (the config's own validation, then the TLS files: PEM that
//! parses, certificates within their validity, the key matching the certificate, and a
//! data folder the aggregator can create or write).

use crate::config::Config;
use outpost_shared::tls::{self, Role};
use std::path::Path;

/// Every problem with the config at `path`, each line naming the file and key. Empty when
/// the aggregator would start with it.
pub fn check(path: &Path) -> Vec<String> {
    let cfg = match outpost_agent::check::read_config(path, Config::parse) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let mut problems = cfg.validate();
    let now = outpost_agent::now_ms() / 1000;
    problems.extend(tls::check_files(
        &cfg.tls_files(),
        Role::Server,
        ["tls.ca", "tls.cert", "tls.key"],
        now,
    ));
    if let Some(p) = outpost_agent::check::dir_problem(&cfg.data_dir) {
        problems.push(format!("data_dir: {p}"));
    }
    outpost_agent::check::name_file(path, problems)
}
