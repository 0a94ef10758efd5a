//! The systemd notification protocol, used by both programs under `Type=notify`: one
//! datagram of `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`), and the watchdog period from
//! `$WATCHDOG_USEC`/`$WATCHDOG_PID`. Without `$NOTIFY_SOCKET` every call does nothing, so
//! the programs behave the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where the service manager listens: a path, or an abstract socket written `@name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(std::path::PathBuf),
    /// A socket in the abstract namespace (`@name`), without the leading NUL.
    Abstract(Vec<u8>),
}

/// Parses `$NOTIFY_SOCKET`. Empty or relative values are ignored, as systemd's own client does.
pub fn parse_target(value: &str) -> Option<NotifyTarget> {
    if let Some(name) = value.strip_prefix('@') {
        return (!name.is_empty()).then(|| NotifyTarget::Abstract(name.as_bytes().to_vec()));
    }
    value
        .starts_with('/')
        .then(|| NotifyTarget::Path(value.into()))
}

/// The interval at which to send `WATCHDOG=1`: half the configured timeout, when the
/// watchdog is meant for this process (`WATCHDOG_PID` unset or equal to `pid`).
pub fn watchdog_period(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(p) = watchdog_pid
        && p.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(us / 2))
}

/// `STATUS=` text on one line (a newline would start another assignment).
pub fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// Sends `state` (newline-separated assignments). Returns whether a datagram was sent;
/// failures are logged at debug level only, because notification is best effort.
pub fn notify(state: &str) -> bool {
    let Some(target) = std::env::var("NOTIFY_SOCKET")
        .ok()
        .as_deref()
        .and_then(parse_target)
    else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| match &target {
        NotifyTarget::Path(p) => sock.send_to(state.as_bytes(), p),
        NotifyTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("cannot notify the service manager: {e}");
            false
        }
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\n{}", status_line(status)))
}

/// `STOPPING=1`.
pub fn stopping() -> bool {
    notify("STOPPING=1\nSTATUS=stopping")
}

/// `RELOADING=1` before a config reload; follow it with [`ready`].
pub fn reloading() -> bool {
    notify("RELOADING=1\nSTATUS=reloading the configuration")
}

/// Starts a task that sends `WATCHDOG=1` at half the watchdog timeout, when systemd asked
/// for one. It runs on the main runtime, so a wedged runtime stops the pings and systemd
/// restarts the service.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_period(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )?;
    std::env::var_os("NOTIFY_SOCKET")?;
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            notify("WATCHDOG=1");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("/run/systemd/notify"),
            Some(NotifyTarget::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_target("@sd"),
            Some(NotifyTarget::Abstract(b"sd".to_vec()))
        );
        assert_eq!(parse_target("@"), None);
        assert_eq!(parse_target("relative/sock"), None);
        assert_eq!(parse_target(""), None);
    }

    #[test]
    fn watchdog_is_half_the_timeout_and_only_for_this_pid() {
        assert_eq!(
            watchdog_period(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_period(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_period(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("x"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(status_line("a\nb"), "STATUS=a b");
    }

    #[test]
    fn notify_sends_one_datagram_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("sdnotify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this is the only test in this crate that touches NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(ready("up\nand running"));
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up and running");
        assert!(!stopping(), "nothing is sent without NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
