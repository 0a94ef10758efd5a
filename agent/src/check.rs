//! `outpost-agent check-config`: everything that can be checked without starting, with
//! every problem listed (the config's own validation, then the files it names: PEM that
//! parses, certificates within their validity, the key matching the certificate, the
//! certificate's common name matching `id`, and a buffer folder the agent can create or
//! write).

use crate::config::Config;
use outpost_shared::tls::{self, Role};
use std::path::Path;

/// Reads the config file at `path` and parses it with `parse` (which names the file in its
/// errors).
pub fn read_config<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, String>,
) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    parse(&text, path)
}

/// Prefixes every problem that does not name `path` yet with it.
pub fn name_file(path: &Path, problems: Vec<String>) -> Vec<String> {
    let prefix = path.display().to_string();
    problems
        .into_iter()
        .map(|p| {
            if p.starts_with(&prefix) {
                p
            } else {
                format!("{prefix}: {p}")
            }
        })
        .collect()
}

/// Reads, parses and validates a config: the config, or one error listing every problem,
/// one per line, each naming the file.
pub fn load_config<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, String>,
    validate: impl FnOnce(&T) -> Vec<String>,
) -> Result<T, String> {
    let cfg = read_config(path, parse)?;
    let problems = validate(&cfg);
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(name_file(path, problems).join("\n"))
    }
}

/// Every problem with the config at `path`, each line naming the file and key. Empty when
/// the agent would start with it.
pub fn check(path: &Path) -> Vec<String> {
    let cfg = match read_config(path, Config::parse) {
        Ok(c) => c,
        // A file that does not parse has no keys to check further.
        Err(e) => return vec![e],
    };
    let mut problems = cfg.validate();
    let now = crate::now_ms() / 1000;
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
        problems.push(format!(
            "aggregator.cert: {} is issued to {cn:?} but id is {:?}; the aggregator refuses a mismatch",
            cfg.aggregator.cert.display(),
            cfg.id
        ));
    }
    if let Some(p) = dir_problem(&cfg.buffer.dir) {
        problems.push(format!("buffer.dir: {p}"));
    }
    name_file(path, problems)
}

/// Why the program could not use `dir` as its data folder: it must be a writable folder,
/// or not exist yet below a writable one.
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
}
