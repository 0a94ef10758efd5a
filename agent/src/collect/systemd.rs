//! systemd unit states (collector "systemd", off by default as in node_exporter):
//! `node_systemd_unit_state{name,state,type}` — one series per unit and state, 1 for the
//! unit's current ActiveState — and `node_systemd_units{state}`, the number of units in each.
//! Units matching node_exporter 1.5's default exclusion
//! (`.+\.(automount|device|mount|scope|slice|target)`) are left out; `type` is a service's
//! Type= (simple, forking, ...), absent for other units.
//!
//! node_exporter asks systemd over D-Bus; the agent asks `systemctl` (two calls per cycle),
//! which speaks the same interface. Where systemd is not PID 1 (containers, CI machines) there
//! is nothing to ask: the collector fails with a message saying so, and reports
//! `node_scrape_collector_success{collector="systemd"} 0`.

use super::{CollectError, Collector, Roots, Sink};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The states node_exporter reports for every unit, in its order.
pub const STATES: [&str; 5] = ["active", "activating", "deactivating", "inactive", "failed"];

const EXCLUDED_SUFFIXES: [&str; 6] = [
    ".automount",
    ".device",
    ".mount",
    ".scope",
    ".slice",
    ".target",
];

/// A unit and its ActiveState.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub active: String,
}

/// Parses `systemctl list-units --all --full --plain --no-legend --no-pager`:
/// `UNIT LOAD ACTIVE SUB DESCRIPTION...`, leaving out excluded unit types.
pub fn parse_list_units(text: &str) -> Result<Vec<Unit>, String> {
    let mut units = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        // Failed units are marked with a leading "●" in some versions.
        let cols = match cols.first() {
            Some(&"●") | Some(&"*") => &cols[1..],
            _ => &cols[..],
        };
        match cols {
            [] => continue,
            [name, _load, active, _sub, ..] => {
                let excluded = EXCLUDED_SUFFIXES
                    .iter()
                    .any(|s| name.len() > s.len() && name.ends_with(s));
                if !excluded {
                    units.push(Unit {
                        name: name.to_string(),
                        active: active.to_string(),
                    });
                }
            }
            _ => return Err(format!("fewer than 4 columns: {line:?}")),
        }
    }
    Ok(units)
}

/// Parses `systemctl show --property=Id,Type <units>`: blocks of `Key=value` lines separated
/// by blank lines; returns unit → Type.
pub fn parse_show_types(text: &str) -> HashMap<String, String> {
    let mut types = HashMap::new();
    let (mut id, mut ty) = (None, None);
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if let (Some(i), Some(t)) = (id.take(), ty.take()) {
                types.insert(i, t);
            }
            id = None;
            ty = None;
        } else if let Some(v) = line.strip_prefix("Id=") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Type=") {
            ty = Some(v.to_string());
        }
    }
    types
}

/// Appends the unit-state series and the per-state unit counts.
pub fn systemd_samples(
    units: &[Unit],
    types: &HashMap<String, String>,
    out: &mut (impl Sink + ?Sized),
) {
    let mut counts = [0u64; STATES.len()];
    for u in units {
        let ty = types.get(&u.name).map(String::as_str).unwrap_or("");
        for (i, state) in STATES.iter().enumerate() {
            let on = u.active == *state;
            if on {
                counts[i] += 1;
            }
            let l = [("name", u.name.as_str()), ("state", *state), ("type", ty)];
            out.metric("node_systemd_unit_state", &l, if on { 1.0 } else { 0.0 });
        }
    }
    for (state, n) in STATES.iter().zip(counts) {
        out.metric("node_systemd_units", &[("state", *state)], n as f64);
    }
}

/// Collector "systemd".
pub struct SystemdCollector {
    /// Exists exactly when systemd is the init system (sd_booted(3)).
    booted: PathBuf,
}

impl SystemdCollector {
    pub fn new(roots: &Roots) -> Self {
        SystemdCollector {
            booted: roots.rootfs.join("run/systemd/system"),
        }
    }
}

fn systemctl(args: &[&str]) -> Result<String, CollectError> {
    let what = format!("systemctl {}", args.first().copied().unwrap_or_default());
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|source| CollectError::Io {
            path: what.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(CollectError::Parse {
            path: what,
            msg: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Collector for SystemdCollector {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        if !self.booted.is_dir() {
            return Err(CollectError::Unavailable(format!(
                "systemd is not running on this host ({} is missing); set systemd = false in [collect]",
                self.booted.display()
            )));
        }
        let list = systemctl(&[
            "list-units",
            "--all",
            "--full",
            "--plain",
            "--no-legend",
            "--no-pager",
        ])?;
        let units = parse_list_units(&list).map_err(|msg| CollectError::Parse {
            path: "systemctl list-units".into(),
            msg,
        })?;
        let services: Vec<&str> = units
            .iter()
            .map(|u| u.name.as_str())
            .filter(|n| n.ends_with(".service"))
            .collect();
        let types = if services.is_empty() {
            HashMap::new()
        } else {
            let mut args = vec!["show", "--property=Id,Type", "--"];
            args.extend(services);
            parse_show_types(&systemctl(&args)?)
        };
        systemd_samples(&units, &types, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{render, value};

    const LIST: &str = "\
-.mount                      loaded active   mounted Root Mount
cron.service                 loaded active   running Regular background program processing daemon
● nginx.service              loaded failed   failed  A high performance web server
ssh.socket                   loaded inactive dead    OpenBSD Secure Shell server socket
systemd-tmpfiles-clean.timer loaded active   waiting Daily Cleanup of Temporary Directories
multi-user.target            loaded active   active  Multi-User System
";

    #[test]
    fn units_states_and_types() {
        let units = parse_list_units(LIST).unwrap();
        let names: Vec<_> = units
            .iter()
            .map(|u| (u.name.as_str(), u.active.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("cron.service", "active"),
                ("nginx.service", "failed"),
                ("ssh.socket", "inactive"),
                ("systemd-tmpfiles-clean.timer", "active")
            ]
        );
        let types =
            parse_show_types("Type=simple\nId=cron.service\n\nId=nginx.service\nType=forking\n");
        assert_eq!(types.len(), 2);
        let mut out = Vec::new();
        systemd_samples(&units, &types, &mut out);
        assert_eq!(
            render(&out[..5]),
            [
                r#"node_systemd_unit_state{name="cron.service", state="active", type="simple"} 1"#,
                r#"node_systemd_unit_state{name="cron.service", state="activating", type="simple"} 0"#,
                r#"node_systemd_unit_state{name="cron.service", state="deactivating", type="simple"} 0"#,
                r#"node_systemd_unit_state{name="cron.service", state="inactive", type="simple"} 0"#,
                r#"node_systemd_unit_state{name="cron.service", state="failed", type="simple"} 0"#,
            ]
        );
        let v = |n, l: &[(&str, &str)]| value(&out, n, l);
        assert_eq!(
            v(
                "node_systemd_unit_state",
                &[
                    ("name", "nginx.service"),
                    ("state", "failed"),
                    ("type", "forking")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "node_systemd_unit_state",
                &[("name", "ssh.socket"), ("state", "inactive")]
            ),
            Some(1.0)
        );
        assert_eq!(v("node_systemd_units", &[("state", "active")]), Some(2.0));
        assert_eq!(v("node_systemd_units", &[("state", "failed")]), Some(1.0));
        assert_eq!(out.len(), 4 * 5 + 5);
        assert_eq!(
            parse_list_units("a.service loaded\n"),
            Err("fewer than 4 columns: \"a.service loaded\"".into())
        );
    }

    #[test]
    fn without_systemd_it_says_so() {
        let roots = Roots {
            rootfs: PathBuf::from("/nonexistent/outpost-test"),
            ..Roots::default()
        };
        let e = SystemdCollector::new(&roots)
            .collect(0, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "systemd is not running on this host (/nonexistent/outpost-test/run/systemd/system is missing); set systemd = false in [collect]"
        );
    }
}
