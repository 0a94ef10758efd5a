//! The kernel's identity (collector "uname"): `node_uname_info` with node_exporter's six
//! labels and the value 1.

use super::{CollectError, Collector, Sink};

/// What uname(2) returns, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uname {
    pub sysname: String,
    pub nodename: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub domainname: String,
}

impl Uname {
    /// The running kernel's.
    pub fn current() -> Uname {
        let u = rustix::system::uname();
        let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
        Uname {
            sysname: s(u.sysname()),
            nodename: s(u.nodename()),
            release: s(u.release()),
            version: s(u.version()),
            machine: s(u.machine()),
            domainname: s(u.domainname()),
        }
    }

    pub fn sample(&self, out: &mut (impl Sink + ?Sized)) {
        out.metric(
            "node_uname_info",
            &[
                ("domainname", self.domainname.as_str()),
                ("machine", self.machine.as_str()),
                ("nodename", self.nodename.as_str()),
                ("release", self.release.as_str()),
                ("sysname", self.sysname.as_str()),
                ("version", self.version.as_str()),
            ],
            1.0,
        );
    }
}

/// Collector "uname". The host name can change at run time, so it asks every cycle (one
/// system call).
pub struct UnameCollector;

impl Collector for UnameCollector {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        Uname::current().sample(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::render;

    #[test]
    fn info_series_with_six_labels() {
        let u = Uname {
            sysname: "Linux".into(),
            nodename: "web-1".into(),
            release: "6.1.0-18-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)".into(),
            machine: "x86_64".into(),
            domainname: "(none)".into(),
        };
        assert_eq!(
            {
                let mut out = Vec::new();
                u.sample(&mut out);
                render(&out)
            },
            [
                r##"node_uname_info{domainname="(none)", machine="x86_64", nodename="web-1", release="6.1.0-18-amd64", sysname="Linux", version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"} 1"##
            ]
        );
        let live = Uname::current();
        assert_eq!(live.sysname, "Linux");
        assert!(!live.release.is_empty());
    }
}
