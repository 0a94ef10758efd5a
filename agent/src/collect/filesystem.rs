//! Mounted filesystems (collector "filesystem"): the mount table from `/proc/1/mounts` (or
//! `/proc/self/mounts`), filtered by node_exporter 1.5's default exclusions and deduplicated by
//! mount point, then `statvfs` on each as `node_filesystem_*{device,fstype,mountpoint}`.
//!
//! Device names and mount points are bytes, as the kernel keeps them: a mount point need not
//! be valid UTF-8. `statvfs` gets the exact bytes; only the label values are made valid UTF-8
//! (invalid sequences become U+FFFD), as node_exporter does.
//!
//! `statvfs` on a dead network mount (NFS, CIFS) can block for minutes. It therefore runs on a
//! worker thread: a call that outlasts [`STATFS_TIMEOUT`] is abandoned together with its thread,
//! the mount reports `node_filesystem_device_error 1`, and it is not asked again until the
//! abandoned call returns — so one bad mount costs one timeout, not every later cycle. The
//! cycle's calls go to the worker as one list, so a cycle wakes it once, not once per mount.
//! Filesystems whose `statfs` only reads counters the kernel keeps in memory (ext4, XFS,
//! Btrfs, tmpfs and the other types [`stats_in_place`] lists) are asked on the collection
//! thread itself: waking another thread and waiting for its answer cost more than the calls.
//!
//! The mount table is read again only when it may have changed. The procfs table is kept
//! open and `poll`ed, which the kernel answers with `POLLPRI` after any mount, unmount or
//! remount in that namespace. A filesystem that turns read-only under its mount (ext4's
//! `errors=remount-ro`), which the table shows but `poll` does not signal, turns its
//! `statvfs` flags read-only: a mount that `statvfs` calls read-only while the table says
//! read-write has the table read again at once. Where the agent's own view of a mount is
//! read-only anyway (systemd's `ProtectSystem=strict`), its flags cannot tell, and the table
//! is read every cycle, as it is when it is not on procfs (tests) or with a `rootfs`.

use super::{CollectError, Collector, Roots, Sink, Source};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

/// How long one `statvfs` may take before its mount counts as stuck. node_exporter allows 5 s
/// per 15 s-or-longer scrape; the agent collects every second.
pub const STATFS_TIMEOUT: Duration = Duration::from_millis(500);

/// One line of the mount table, octal escapes undone, plus the one option node_exporter
/// reads. Names are the kernel's bytes, not necessarily UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub device: OsString,
    pub mountpoint: PathBuf,
    pub fstype: OsString,
    pub readonly: bool,
}

/// What `statvfs` says about a filesystem, in node_exporter's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FsStats {
    pub size_bytes: f64,
    pub free_bytes: f64,
    pub avail_bytes: f64,
    pub files: f64,
    pub files_free: f64,
    /// `ST_RDONLY` of the statvfs flags: read-only as the agent's own mount namespace sees
    /// it (only used to notice a change; the reported flag is the mount table's).
    pub readonly_flag: bool,
}

/// Parses a mount table (`/proc/<pid>/mounts`: device, mount point, type, options, 0, 0).
/// The kernel escapes space, tab, newline and backslash in names as `\ooo`; every other
/// byte, UTF-8 or not, is written as it is. Errors name the malformed line.
pub fn parse_mounts(text: &[u8]) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .collect();
        let name = |f: &[u8]| OsString::from_vec(unescape_octal(f));
        match fields[..] {
            [] => continue,
            [device, mountpoint, fstype, options, _, _] => mounts.push(Mount {
                device: name(device),
                mountpoint: PathBuf::from(name(mountpoint)),
                fstype: name(fstype),
                readonly: options.split(|&b| b == b',').any(|o| o == b"ro"),
            }),
            _ => {
                return Err(format!(
                    "{} columns instead of 6: {:?}",
                    fields.len(),
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }
    Ok(mounts)
}

/// The mounts to report: for each mount point the last mount on it (the one a path lookup,
/// and so `statvfs`, sees), unless its type or mount point is excluded.
pub fn select_mounts(text: &[u8]) -> Result<Vec<Mount>, String> {
    let mut mounts = parse_mounts(text)?;
    let mut keep = vec![false; mounts.len()];
    let mut seen = HashSet::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate().rev() {
        keep[i] = seen.insert(m.mountpoint.as_path());
    }
    drop(seen);
    let mut keep = keep.into_iter();
    mounts.retain(|m| {
        keep.next().unwrap_or(false)
            // A type that is not UTF-8 is none of the excluded ones.
            && !m.fstype.to_str().is_some_and(is_excluded_fstype)
            && !is_excluded_mountpoint(m.mountpoint.as_os_str().as_bytes())
    });
    Ok(mounts)
}

/// node_exporter 1.5's default `--collector.filesystem.fs-types-exclude`.
pub fn is_excluded_fstype(fstype: &str) -> bool {
    matches!(
        fstype,
        "autofs"
            | "binfmt_misc"
            | "bpf"
            | "cgroup"
            | "cgroup2"
            | "configfs"
            | "debugfs"
            | "devpts"
            | "devtmpfs"
            | "fusectl"
            | "hugetlbfs"
            | "iso9660"
            | "mqueue"
            | "nsfs"
            | "overlay"
            | "proc"
            | "procfs"
            | "pstore"
            | "rpc_pipefs"
            | "securityfs"
            | "selinuxfs"
            | "squashfs"
            | "sysfs"
            | "tracefs"
    )
}

/// Whether `statvfs` on a filesystem of type `fstype` runs on the calling thread: true for
/// local disk and memory filesystems, whose `statfs` answers from the superblock's in-memory
/// counters without I/O or a server to wait for. Network and FUSE filesystems (`nfs`, `cifs`,
/// `fuse.*`, `ceph`, ...), ZFS (a suspended pool blocks it) and every type not listed go to
/// the worker thread with its timeout.
pub fn stats_in_place(fstype: &OsStr) -> bool {
    matches!(
        fstype.as_bytes(),
        b"ext2"
            | b"ext3"
            | b"ext4"
            | b"xfs"
            | b"btrfs"
            | b"f2fs"
            | b"jfs"
            | b"vfat"
            | b"msdos"
            | b"exfat"
            | b"tmpfs"
            | b"ramfs"
    )
}

/// node_exporter 1.5's default `--collector.filesystem.mount-points-exclude`,
/// `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
/// Works on the mount point's bytes, which need not be UTF-8.
pub fn is_excluded_mountpoint(mountpoint: &[u8]) -> bool {
    let Some(rest) = mountpoint.strip_prefix(b"/") else {
        return false;
    };
    let whole = [&b"dev"[..], b"proc", b"sys"].iter().any(|d| {
        rest.strip_prefix(*d)
            .is_some_and(|after| after.is_empty() || after.starts_with(b"/"))
    });
    // `.+($|/)` holds for any non-empty remainder.
    let below = [
        &b"run/credentials/"[..],
        b"var/lib/docker/",
        b"var/lib/containers/storage/",
    ]
    .iter()
    .any(|d| rest.strip_prefix(*d).is_some_and(|after| !after.is_empty()));
    whole || below
}

/// Undoes the kernel's octal escapes in mount paths (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash, or any other byte written as `\ooo`), giving the name's bytes.
pub fn unescape_octal(b: &[u8]) -> Vec<u8> {
    if !b.contains(&b'\\') {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = match b.get(i..i + 4) {
            Some([b'\\', a @ b'0'..=b'3', m @ b'0'..=b'7', l @ b'0'..=b'7']) => {
                Some((a - b'0') << 6 | (m - b'0') << 3 | (l - b'0'))
            }
            _ => None,
        };
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// Appends one mount's series: only `device_error` when `statvfs` failed, as node_exporter.
/// Label values are the names made valid UTF-8 (U+FFFD for invalid bytes).
pub fn mount_samples(m: &Mount, stats: Option<&FsStats>, out: &mut (impl Sink + ?Sized)) {
    let device = m.device.to_string_lossy();
    let fstype = m.fstype.to_string_lossy();
    let mountpoint = m.mountpoint.to_string_lossy();
    let labels = [
        ("device", &*device),
        ("fstype", &*fstype),
        ("mountpoint", &*mountpoint),
    ];
    let error = if stats.is_some() { 0.0 } else { 1.0 };
    out.metric("node_filesystem_device_error", &labels, error);
    let Some(s) = stats else { return };
    out.metric("node_filesystem_size_bytes", &labels, s.size_bytes);
    out.metric("node_filesystem_free_bytes", &labels, s.free_bytes);
    out.metric("node_filesystem_avail_bytes", &labels, s.avail_bytes);
    out.metric("node_filesystem_files", &labels, s.files);
    out.metric("node_filesystem_files_free", &labels, s.files_free);
    let ro = if m.readonly { 1.0 } else { 0.0 };
    out.metric("node_filesystem_readonly", &labels, ro);
}

type StatFn = fn(&Path) -> io::Result<FsStats>;

fn statvfs(path: &Path) -> io::Result<FsStats> {
    let s = rustix::fs::statvfs(path)?;
    // Block counts are in fragment-size units (POSIX); f_frsize equals f_bsize, which
    // node_exporter uses, on every common filesystem.
    let unit = s.f_frsize as f64;
    Ok(FsStats {
        size_bytes: s.f_blocks as f64 * unit,
        free_bytes: s.f_bfree as f64 * unit,
        avail_bytes: s.f_bavail as f64 * unit,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
        readonly_flag: s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
    })
}

#[derive(Debug)]
enum StatError {
    Failed(io::Error),
    /// This call took too long; its thread was abandoned.
    TimedOut,
    /// An earlier, abandoned call on this path has not returned yet.
    Stuck,
}

/// Runs `stat` on a worker thread with a timeout per call (see the module docs).
struct StatRunner {
    stat: StatFn,
    timeout: Duration,
    /// Paths whose call has not returned; shared with the workers, which add a path before
    /// their call and remove it when the call returns, abandoned or not.
    in_flight: Arc<Mutex<HashSet<PathBuf>>>,
    worker: Option<Worker>,
}

struct Worker {
    paths: mpsc::Sender<Vec<PathBuf>>,
    results: mpsc::Receiver<io::Result<FsStats>>,
    progress: Arc<Mutex<Progress>>,
    /// Results received from this worker so far.
    answered: u64,
}

/// What a worker has started, and whether it may start more; one lock, so that a caller
/// that gives up on a call knows whether the worker has moved past it.
#[derive(Default)]
struct Progress {
    /// Calls started so far.
    started: u64,
    /// Set when the worker is abandoned: it starts no further call.
    abandoned: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StatRunner {
    fn new(stat: StatFn, timeout: Duration) -> Self {
        StatRunner {
            stat,
            timeout,
            in_flight: Arc::default(),
            worker: None,
        }
    }

    /// Stats every path into `out` (cleared first; one result per path, in order). Paths
    /// whose `in_place` entry is true are asked on the calling thread, without a timeout.
    /// The worker gets the other paths in one message and answers each call as it returns;
    /// a call that takes longer than the timeout is abandoned with its worker, and the paths
    /// after it go to a fresh one. When every path is asked in place, no worker is woken.
    fn stat_all(
        &mut self,
        paths: &[PathBuf],
        in_place: &[bool],
        out: &mut Vec<Result<FsStats, StatError>>,
    ) {
        out.clear();
        let mut todo = Vec::with_capacity(paths.len());
        {
            let in_flight = lock(&self.in_flight);
            for (i, p) in paths.iter().enumerate() {
                if in_place.get(i) == Some(&true) {
                    out.push((self.stat)(p).map_err(StatError::Failed));
                    continue;
                }
                out.push(Err(StatError::Stuck));
                if !in_flight.contains(p) {
                    todo.push(i);
                }
            }
        }
        let gone = || StatError::Failed(io::Error::other("statfs worker exited"));
        let mut next = 0;
        while next < todo.len() {
            let mut worker = match self.worker.take() {
                Some(w) => w,
                None => match self.spawn() {
                    Ok(w) => w,
                    Err(e) => {
                        for &i in &todo[next..] {
                            out[i] =
                                Err(StatError::Failed(io::Error::new(e.kind(), e.to_string())));
                        }
                        return;
                    }
                },
            };
            let list = todo[next..].iter().map(|&i| paths[i].clone()).collect();
            if worker.paths.send(list).is_err() {
                for &i in &todo[next..] {
                    out[i] = Err(gone());
                }
                return;
            }
            loop {
                if next == todo.len() {
                    self.worker = Some(worker);
                    return;
                }
                match worker.results.recv_timeout(self.timeout) {
                    Ok(r) => {
                        worker.answered += 1;
                        out[todo[next]] = r.map_err(StatError::Failed);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        {
                            let mut p = lock(&worker.progress);
                            if p.started > worker.answered + 1 {
                                // The call returned just now and the next has started: its
                                // answer is queued.
                                continue;
                            }
                            p.abandoned = true;
                        }
                        // Abandoned, it starts nothing more; an answer that came in
                        // meanwhile is the call's own.
                        out[todo[next]] = match worker.results.try_recv() {
                            Ok(r) => r.map_err(StatError::Failed),
                            Err(_) => Err(StatError::TimedOut),
                        };
                        next += 1;
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        for &i in &todo[next..] {
                            out[i] = Err(gone());
                        }
                        return;
                    }
                }
                next += 1;
            }
        }
    }

    fn spawn(&self) -> io::Result<Worker> {
        let (paths, path_rx) = mpsc::channel::<Vec<PathBuf>>();
        let (result_tx, results) = mpsc::channel();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let stat = self.stat;
        let in_flight = Arc::clone(&self.in_flight);
        let shared = Arc::clone(&progress);
        std::thread::Builder::new()
            .name("outpost-statfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for list in path_rx {
                    for path in list {
                        let claim = {
                            let mut p = lock(&shared);
                            if p.abandoned {
                                return;
                            }
                            p.started += 1;
                            Claim::new(&in_flight, &path)
                        };
                        // The claim is released before answering (so a caller that has just
                        // given up cannot miss it), and on a panic too.
                        let r = stat(&path);
                        drop(claim);
                        if result_tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            })?;
        Ok(Worker {
            paths,
            results,
            progress,
            answered: 0,
        })
    }
}

/// A path in `in_flight` for as long as this lives.
struct Claim<'a> {
    set: &'a Mutex<HashSet<PathBuf>>,
    path: &'a Path,
}

impl<'a> Claim<'a> {
    fn new(set: &'a Mutex<HashSet<PathBuf>>, path: &'a Path) -> Self {
        lock(set).insert(path.to_path_buf());
        Claim { set, path }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(self.path);
    }
}

/// `poll` of a kept-open mount table: true when the kernel reports a change since the last
/// poll (`POLLPRI`/`POLLERR`), or when it cannot tell.
fn table_changed(f: &std::fs::File) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(f, PollFlags::PRI)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::PRI | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => true,
    }
}

/// Collector "filesystem".
pub struct FilesystemCollector {
    /// PID 1's mount table, then the agent's own, each kept open once read.
    mounts: [Source; 2],
    rootfs: Option<PathBuf>,
    buf: Vec<u8>,
    runner: StatRunner,
    /// The mount table last read (index into `mounts`) when `poll` can tell its changes:
    /// it is procfs' and the mount points are the agent's own (no `rootfs`).
    polled: Option<usize>,
    /// The mounts to report, from the last read of the table; empty before the first.
    selected: Vec<Mount>,
    /// Where `statvfs` looks for each of `selected`.
    targets: Vec<PathBuf>,
    /// Per entry of `selected`, whether it is asked on the collection thread
    /// ([`stats_in_place`]).
    in_place: Vec<bool>,
    /// Some mount's `statvfs` said read-only while the table said read-write in the last
    /// cycle, so the table is read again at the next.
    blind: bool,
    stats: Vec<Result<FsStats, StatError>>,
    /// Reads of the mount table so far.
    reads: u64,
}

impl FilesystemCollector {
    pub fn new(roots: &Roots) -> Self {
        FilesystemCollector {
            mounts: [
                Source::new(roots.proc.join("1/mounts")),
                Source::new(roots.proc.join("self/mounts")),
            ],
            rootfs: (roots.rootfs != Path::new("/")).then(|| roots.rootfs.clone()),
            buf: Vec::new(),
            runner: StatRunner::new(statvfs, STATFS_TIMEOUT),
            polled: None,
            selected: Vec::new(),
            targets: Vec::new(),
            in_place: Vec::new(),
            blind: false,
            stats: Vec::new(),
            reads: 0,
        }
    }

    /// PID 1's table shows the host's mounts even when the agent runs in its own mount
    /// namespace; where /proc/1 is hidden (hidepid, no privileges) our own table serves.
    /// Returns the index in `self.mounts` of the table read into `self.buf`.
    fn read_mounts(&mut self) -> Result<usize, CollectError> {
        let mut last = None;
        for (i, table) in self.mounts.iter_mut().enumerate() {
            match table.read_bytes(&mut self.buf) {
                Ok(()) => {
                    if self.polled != Some(i) {
                        let procfs = table.file().is_some_and(|f| {
                            rustix::fs::fstatfs(f)
                                .is_ok_and(|s| s.f_type == rustix::fs::PROC_SUPER_MAGIC)
                        });
                        self.polled = (procfs && self.rootfs.is_none()).then_some(i);
                    }
                    return Ok(i);
                }
                Err(e) => last = Some(e),
            }
        }
        self.polled = None;
        Err(last.unwrap_or_else(|| CollectError::Io {
            path: String::new(),
            source: io::Error::other("no mount table"),
        }))
    }

    /// Whether some mount's `statvfs` says read-only while the table says read-write.
    fn disagree(&self) -> bool {
        self.selected
            .iter()
            .zip(&self.stats)
            .any(|(m, s)| !m.readonly && s.as_ref().is_ok_and(|s| s.readonly_flag))
    }

    /// Reads and selects the mount table again.
    fn reload(&mut self) -> Result<(), CollectError> {
        self.selected.clear();
        self.targets.clear();
        self.in_place.clear();
        self.reads += 1;
        let table = self.read_mounts()?;
        self.selected = select_mounts(&self.buf).map_err(|msg| CollectError::Parse {
            path: self.mounts[table].display().to_string(),
            msg,
        })?;
        self.targets = self
            .selected
            .iter()
            .map(|m| match &self.rootfs {
                Some(root) => {
                    let rel = m.mountpoint.as_os_str().as_bytes();
                    root.join(OsStr::from_bytes(rel.strip_prefix(b"/").unwrap_or(rel)))
                }
                None => m.mountpoint.clone(),
            })
            .collect();
        self.in_place = self
            .selected
            .iter()
            .map(|m| stats_in_place(&m.fstype))
            .collect();
        Ok(())
    }
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, _now_ms: i64, out: &mut dyn Sink) -> Result<(), CollectError> {
        let fresh = match self.polled.and_then(|i| self.mounts[i].file()) {
            Some(f) if !self.selected.is_empty() && !self.blind => table_changed(f),
            _ => true,
        };
        if fresh {
            self.reload()?;
        }
        self.runner
            .stat_all(&self.targets, &self.in_place, &mut self.stats);
        self.blind = self.disagree();
        if self.blind && !fresh {
            // A filesystem went read-only under an unchanged table (or `statvfs` cannot
            // tell): the table shows which, so read it again and ask again.
            self.reload()?;
            self.runner
                .stat_all(&self.targets, &self.in_place, &mut self.stats);
            self.blind = self.disagree();
        }
        for (m, s) in self.selected.iter().zip(&self.stats) {
            let stats = match s {
                Ok(s) => Some(s),
                Err(StatError::TimedOut) => {
                    tracing::warn!(mountpoint = %m.mountpoint.display(), timeout = ?STATFS_TIMEOUT,
                        "statfs timed out; mount marked stuck until the call returns");
                    None
                }
                Err(StatError::Failed(e)) => {
                    tracing::debug!(mountpoint = %m.mountpoint.display(), "statfs failed: {e}");
                    None
                }
                Err(StatError::Stuck) => None,
            };
            mount_samples(m, stats, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::tests::{render, value};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    const MOUNTS: &str = "\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
devtmpfs /dev devtmpfs rw,nosuid,size=8116812k,nr_inodes=2029203,mode=755 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=1630504k,mode=755 0 0
/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077 0 0
/dev/loop3 /snap/core20/2318 squashfs ro,nodev,relatime 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw,relatime 0 0
tmpfs /run/credentials/systemd-sysctl.service tmpfs ro,nosuid 0 0
/dev/sdb1 /mnt/My\\040Disk xfs ro,noatime 0 0
server:/export /mnt/nfs nfs4 rw,relatime,vers=4.2 0 0
server2:/export /mnt/nfs nfs4 ro,relatime,vers=4.2 0 0
";

    #[test]
    fn mounts_selected_as_node_exporter_does() {
        let got = select_mounts(MOUNTS.as_bytes()).unwrap();
        let m = |device: &str, mountpoint: &str, fstype: &str, readonly| Mount {
            device: device.into(),
            mountpoint: mountpoint.into(),
            fstype: fstype.into(),
            readonly,
        };
        assert_eq!(
            got,
            [
                m("tmpfs", "/run", "tmpfs", false),
                m("/dev/nvme0n1p2", "/", "ext4", false),
                m("/dev/nvme0n1p1", "/boot/efi", "vfat", false),
                m("/dev/sdb1", "/mnt/My Disk", "xfs", true),
                m("server2:/export", "/mnt/nfs", "nfs4", true),
            ]
        );
        assert_eq!(
            parse_mounts(b"a /b\n"),
            Err("2 columns instead of 6: \"a /b\"".into())
        );
    }

    #[test]
    fn excluded_mount_points() {
        let cases = [
            ("/", false),
            ("/dev", true),
            ("/dev/shm", true),
            ("/devices", false),
            ("/proc", true),
            ("/proc/sys/fs/binfmt_misc", true),
            ("/sys/fs/cgroup", true),
            ("/system", false),
            ("/run", false),
            ("/run/credentials", false),
            ("/run/credentials/", false),
            ("/run/credentials/x.service", true),
            ("/var/lib/docker", false),
            ("/var/lib/docker/", false),
            ("/var/lib/docker/overlay2/x/merged", true),
            ("/var/lib/containers/storage/overlay", true),
            ("/var/lib/containers", false),
            ("/home/dev", false),
            ("dev", false),
        ];
        for (mp, excluded) in cases {
            assert_eq!(is_excluded_mountpoint(mp.as_bytes()), excluded, "{mp}");
        }
    }

    #[test]
    fn excluded_fs_types() {
        let cases = [
            ("cgroup", true),
            ("cgroup2", true),
            ("cgroup3", false),
            ("squashfs", true),
            ("overlay", true),
            ("tmpfs", false),
            ("ext4", false),
            ("nfs4", false),
            ("fuse.sshfs", false),
            ("proc", true),
            ("procfs", true),
        ];
        for (t, excluded) in cases {
            assert_eq!(is_excluded_fstype(t), excluded, "{t}");
        }
    }

    #[test]
    fn octal_escapes_in_mount_paths() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"/plain", b"/plain"),
            (br"/a\040b", b"/a b"),
            (br"/tab\011x", b"/tab\tx"),
            (br"/nl\012", b"/nl\n"),
            (br"/back\134slash", br"/back\slash"),
            (br"/short\04", br"/short\04"),
            (br"/not\999", br"/not\999"),
            // Bytes that are not UTF-8 stay as they are, escaped or not.
            (b"/caf\xe9", b"/caf\xe9"),
            (br"/caf\351\040x", b"/caf\xe9 x"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                unescape_octal(raw),
                want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn names_that_are_not_utf8_stay_bytes_until_they_are_labels() {
        // As the kernel writes them: the space escaped, the Latin-1 byte as it is.
        let table = b"/dev/sd\xff1 /tmp/caf\xe9\\040x tmpfs rw 0 0\n\
                      tmpfs /dev/caf\xe9 tmpfs rw 0 0\n";
        let got = select_mounts(table).unwrap();
        assert_eq!(
            got,
            [Mount {
                device: OsString::from_vec(b"/dev/sd\xff1".to_vec()),
                mountpoint: PathBuf::from(OsString::from_vec(b"/tmp/caf\xe9 x".to_vec())),
                fstype: "tmpfs".into(),
                readonly: false,
            }]
        );
        let mut out = Vec::new();
        mount_samples(&got[0], None, &mut out);
        assert_eq!(
            render(&out),
            [
                "node_filesystem_device_error{device=\"/dev/sd\u{fffd}1\", fstype=\"tmpfs\", \
              mountpoint=\"/tmp/caf\u{fffd} x\"} 1"
            ]
        );
    }

    #[test]
    fn series_per_mount_and_device_error() {
        let m = Mount {
            device: "/dev/sdb1".into(),
            mountpoint: "/mnt/My Disk".into(),
            fstype: "xfs".into(),
            readonly: true,
        };
        let stats = FsStats {
            size_bytes: 1e12,
            free_bytes: 4e11,
            avail_bytes: 3.5e11,
            files: 1000.0,
            files_free: 10.0,
            readonly_flag: true,
        };
        let mut out = Vec::new();
        mount_samples(&m, Some(&stats), &mut out);
        let l = r#"{device="/dev/sdb1", fstype="xfs", mountpoint="/mnt/My Disk"}"#;
        assert_eq!(
            render(&out),
            [
                format!("node_filesystem_device_error{l} 0"),
                format!("node_filesystem_size_bytes{l} 1000000000000"),
                format!("node_filesystem_free_bytes{l} 400000000000"),
                format!("node_filesystem_avail_bytes{l} 350000000000"),
                format!("node_filesystem_files{l} 1000"),
                format!("node_filesystem_files_free{l} 10"),
                format!("node_filesystem_readonly{l} 1"),
            ]
        );
        out.clear();
        mount_samples(&m, None, &mut out);
        assert_eq!(render(&out), [format!("node_filesystem_device_error{l} 1")]);
    }

    /// A fixture tree: only `self/mounts` exists, mount points resolve under a rootfs, and the
    /// one that does not exist there reports a device error instead of failing the collector.
    #[test]
    fn collector_falls_back_to_self_mounts_and_joins_rootfs() {
        let dir = std::env::temp_dir().join(format!("outpost-fs-{}", std::process::id()));
        let proc = dir.join("proc");
        let rootfs = dir.join("root");
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::create_dir_all(rootfs.join("data")).unwrap();
        std::fs::write(
            proc.join("self/mounts"),
            "/dev/vda / ext4 rw 0 0\n/dev/vdb /data ext4 ro 0 0\n/dev/vdc /gone xfs rw 0 0\n",
        )
        .unwrap();
        let roots = Roots {
            proc,
            rootfs,
            ..Roots::default()
        };
        let mut c = FilesystemCollector::new(&roots);
        let mut out = Vec::new();
        let r = c.collect(0, &mut out);
        std::fs::remove_dir_all(&dir).unwrap();
        r.unwrap();

        let l = |dev, fstype, mp| [("device", dev), ("fstype", fstype), ("mountpoint", mp)];
        let root = l("/dev/vda", "ext4", "/");
        let data = l("/dev/vdb", "ext4", "/data");
        let gone = l("/dev/vdc", "xfs", "/gone");
        assert_eq!(
            value(&out, "node_filesystem_device_error", &root),
            Some(0.0)
        );
        assert!(value(&out, "node_filesystem_size_bytes", &root).is_some_and(|v| v > 0.0));
        assert_eq!(value(&out, "node_filesystem_readonly", &data), Some(1.0));
        assert_eq!(
            value(&out, "node_filesystem_device_error", &gone),
            Some(1.0)
        );
        assert_eq!(value(&out, "node_filesystem_size_bytes", &gone), None);
        assert_eq!(out.len(), 7 + 7 + 1);
    }

    #[test]
    fn missing_mount_tables_fail_the_collector() {
        let roots = Roots {
            proc: PathBuf::from("/nonexistent/outpost-test/proc"),
            ..Roots::default()
        };
        let err = FilesystemCollector::new(&roots)
            .collect(0, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading /nonexistent/outpost-test/proc/self/mounts: No such file or directory (os error 2)"
        );
    }

    static RELEASE: AtomicBool = AtomicBool::new(false);
    static COUNTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Hangs on `/hang` until released, like statfs on an unreachable NFS server.
    fn fake_stat(path: &Path) -> io::Result<FsStats> {
        if path == Path::new("/hang") {
            let give_up = Instant::now() + Duration::from_secs(10);
            while !RELEASE.load(Ordering::SeqCst) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if path == Path::new("/broken") {
            return Err(io::Error::from_raw_os_error(5));
        }
        if path == Path::new("/counted") {
            COUNTED.fetch_add(1, Ordering::SeqCst);
        }
        Ok(FsStats {
            size_bytes: 1.0,
            free_bytes: 2.0,
            avail_bytes: 3.0,
            files: 4.0,
            files_free: 5.0,
            readonly_flag: false,
        })
    }

    #[test]
    fn a_hung_statfs_costs_one_timeout_then_is_skipped_until_it_returns() {
        let mut r = StatRunner::new(fake_stat, Duration::from_millis(50));
        let paths = |ps: &[&str]| ps.iter().map(PathBuf::from).collect::<Vec<_>>();
        let mut out = Vec::new();
        let show = |out: &Vec<Result<FsStats, StatError>>| {
            out.iter()
                .map(|r| match r {
                    Ok(s) => format!("ok {}", s.files),
                    Err(StatError::Failed(e)) => format!("failed {:?}", e.raw_os_error()),
                    Err(StatError::TimedOut) => "timed out".into(),
                    Err(StatError::Stuck) => "stuck".into(),
                })
                .collect::<Vec<_>>()
        };
        let cycle = paths(&["/ok", "/hang", "/broken", "/counted"]);

        // The hung call costs one timeout; the mounts after it go to a fresh worker.
        r.stat_all(&cycle, &[], &mut out);
        assert_eq!(show(&out), ["ok 4", "timed out", "failed Some(5)", "ok 4"]);
        // Until it returns, that mount is not asked again, and the others still are.
        let t = Instant::now();
        r.stat_all(&cycle, &[], &mut out);
        assert_eq!(show(&out), ["ok 4", "stuck", "failed Some(5)", "ok 4"]);
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());

        RELEASE.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&r.in_flight).contains(Path::new("/hang")) {
            assert!(Instant::now() < deadline, "abandoned call never returned");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The abandoned worker made no call after the hung one returned: each cycle asked
        // for /counted once.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(COUNTED.load(Ordering::SeqCst), 2);
        r.stat_all(&cycle, &[], &mut out);
        assert_eq!(show(&out), ["ok 4", "ok 4", "failed Some(5)", "ok 4"]);
        assert_eq!(COUNTED.load(Ordering::SeqCst), 3);
        assert!(lock(&r.in_flight).is_empty());
        r.stat_all(&[], &[], &mut out);
        assert!(out.is_empty());
    }

    /// Names the thread it runs on, as `files`.
    fn stat_on_which_thread(_: &Path) -> io::Result<FsStats> {
        let on_worker = std::thread::current().name() == Some("outpost-statfs");
        Ok(FsStats {
            size_bytes: 0.0,
            free_bytes: 0.0,
            avail_bytes: 0.0,
            files: if on_worker { 1.0 } else { 0.0 },
            files_free: 0.0,
            readonly_flag: false,
        })
    }

    #[test]
    fn local_filesystems_are_asked_in_place_and_wake_no_worker() {
        assert!(stats_in_place(OsStr::new("ext4")) && stats_in_place(OsStr::new("tmpfs")));
        for t in [
            "nfs",
            "nfs4",
            "cifs",
            "fuse.sshfs",
            "fuseblk",
            "zfs",
            "ceph",
            "9p",
        ] {
            assert!(!stats_in_place(OsStr::new(t)), "{t}");
        }
        let mut r = StatRunner::new(stat_on_which_thread, STATFS_TIMEOUT);
        let mut out = Vec::new();
        let on_worker = |out: &Vec<Result<FsStats, StatError>>| -> Vec<bool> {
            out.iter()
                .map(|s| s.as_ref().unwrap().files == 1.0)
                .collect()
        };
        let paths: Vec<PathBuf> = ["/", "/mnt/nfs", "/run"].map(PathBuf::from).into();
        r.stat_all(&paths, &[true, true, true], &mut out);
        assert_eq!(on_worker(&out), [false, false, false]);
        assert!(r.worker.is_none(), "a worker was started for nothing");
        r.stat_all(&paths, &[true, false, true], &mut out);
        assert_eq!(on_worker(&out), [false, true, false]);

        // The collector asks the host's local mounts in place: this host's / is one of them.
        let mut c = FilesystemCollector::new(&Roots::default());
        c.runner = StatRunner::new(stat_on_which_thread, STATFS_TIMEOUT);
        let mut samples = Vec::new();
        c.collect(0, &mut samples).unwrap();
        for ((m, s), in_place) in c.selected.iter().zip(&c.stats).zip(&c.in_place) {
            assert_eq!(*in_place, stats_in_place(&m.fstype));
            assert_eq!(s.as_ref().unwrap().files == 1.0, !in_place, "{m:?}");
        }
        assert!(
            c.in_place.iter().any(|&p| p),
            "no local mount: {:?}",
            c.selected
        );
    }

    static READ_ONLY: AtomicBool = AtomicBool::new(false);

    fn stat_read_only_when_told(_: &Path) -> io::Result<FsStats> {
        Ok(FsStats {
            size_bytes: 1.0,
            free_bytes: 1.0,
            avail_bytes: 1.0,
            files: 1.0,
            files_free: 1.0,
            readonly_flag: READ_ONLY.load(Ordering::SeqCst),
        })
    }

    /// On the host's own /proc the table is read once and then only when something changed:
    /// here, filesystems that `statvfs` calls read-only while the table says read-write (as
    /// after ext4's `errors=remount-ro`, or always under `ProtectSystem=strict`), which has
    /// the table read again at once and then every cycle for as long as they disagree.
    #[test]
    fn the_mount_table_is_read_again_only_after_a_change() {
        let mut c = FilesystemCollector::new(&Roots::default());
        c.runner = StatRunner::new(stat_read_only_when_told, STATFS_TIMEOUT);
        let mut out = Vec::new();
        let mut cycle = |c: &mut FilesystemCollector| {
            out.clear();
            c.collect(0, &mut out).unwrap();
            (c.reads, out.len())
        };
        let reads: Vec<u64> = (0..3).map(|_| cycle(&mut c).0).collect();
        assert_eq!(
            reads,
            [1, 1, 1],
            "three cycles, one read of an unchanged table"
        );
        assert!(
            c.polled.is_some(),
            "/proc/1/mounts or /proc/self/mounts is kept open and polled"
        );
        assert!(
            c.selected.iter().any(|m| !m.readonly),
            "the host has a read-write mount to report"
        );
        let series = cycle(&mut c).1;
        READ_ONLY.store(true, Ordering::SeqCst);
        let (reads, n) = cycle(&mut c);
        assert_eq!(
            reads, 2,
            "a read-only filesystem the table calls read-write: read at once"
        );
        assert_eq!(n, series);
        assert_eq!(cycle(&mut c).0, 3, "and every cycle while they disagree");
        READ_ONLY.store(false, Ordering::SeqCst);
        assert_eq!(cycle(&mut c).0, 4, "once more after they agree again");
        assert_eq!(cycle(&mut c).0, 4, "then no more");
    }

    /// The table is read again only when `poll` reports a change: a mount made, remounted
    /// read-only and removed in a mount namespace of the test's own shows each time, and a
    /// poll with nothing new in between does not. Needs root (CAP_SYS_ADMIN), as CI has.
    #[test]
    fn a_kept_mount_table_reports_changes_through_poll() {
        use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
        let dir = std::env::temp_dir().join(format!("outpost-fs-poll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.clone();
        let seen = std::thread::spawn(move || {
            // SAFETY: NEWNS gives this thread alone a mount namespace (and its own fs_struct);
            // no file descriptor table is unshared.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .expect("unshare(CLONE_NEWNS): the test needs root");
            rustix::mount::mount_change(
                "/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .unwrap();
            let f = std::fs::File::open("/proc/thread-self/mounts").unwrap();
            let mut seen = vec![table_changed(&f)];
            rustix::mount::mount("outpost-test", &d, "tmpfs", MountFlags::empty(), None).unwrap();
            seen.extend([table_changed(&f), table_changed(&f)]);
            let mut buf = Vec::new();
            crate::collect::read_all_at(&f, &mut buf).unwrap();
            let listed = select_mounts(&buf)
                .unwrap()
                .into_iter()
                .find(|m| m.mountpoint == d);
            seen.push(listed.is_some_and(|m| !m.readonly));
            rustix::mount::mount_remount(&d, MountFlags::RDONLY, c"").unwrap();
            seen.extend([table_changed(&f), table_changed(&f)]);
            rustix::mount::unmount(&d, UnmountFlags::empty()).unwrap();
            seen.push(table_changed(&f));
            seen
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            seen,
            [false, true, false, true, true, false, true],
            "poll before any change, after the mount, again, the table lists it read-write, \
             after the remount, again, after the unmount"
        );
    }
}
