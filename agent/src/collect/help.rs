//! node_exporter 1.5's `# HELP` text for every family the host collectors emit, so that
//! `collect` output and the metadata sent to the aggregator read exactly as node_exporter's.
//! Fixed families are listed; families named after a kernel field (meminfo, vmstat,
//! netstat, sockstat, netdev) get node_exporter's text with the field filled in.

use std::borrow::Cow;

/// (family, HELP) for the families with a fixed name, sorted by family.
const FIXED: &[(&str, &str)] = &[
    ("node_boot_time_seconds", "Node boot time, in unixtime."),
    (
        "node_context_switches_total",
        "Total number of context switches.",
    ),
    (
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    ),
    (
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
    (
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
    ),
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
    ),
    (
        "node_filefd_allocated",
        "File descriptor statistics: allocated.",
    ),
    (
        "node_filefd_maximum",
        "File descriptor statistics: maximum.",
    ),
    (
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    ),
    (
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
    ),
    ("node_filesystem_files", "Filesystem total file nodes."),
    (
        "node_filesystem_files_free",
        "Filesystem total free file nodes.",
    ),
    (
        "node_filesystem_free_bytes",
        "Filesystem free space in bytes.",
    ),
    ("node_filesystem_readonly", "Filesystem read-only status."),
    ("node_filesystem_size_bytes", "Filesystem size in bytes."),
    ("node_forks_total", "Total number of forks."),
    (
        "node_hwmon_chip_names",
        "Annotation metric for human-readable chip names",
    ),
    (
        "node_hwmon_temp_celsius",
        "Hardware monitor for temperature (input)",
    ),
    (
        "node_hwmon_temp_crit_celsius",
        "Hardware monitor for temperature (crit)",
    ),
    (
        "node_hwmon_temp_max_celsius",
        "Hardware monitor for temperature (max)",
    ),
    ("node_intr_total", "Total number of interrupts serviced."),
    ("node_load1", "1m load average."),
    ("node_load15", "15m load average."),
    ("node_load5", "5m load average."),
    (
        "node_pressure_cpu_waiting_seconds_total",
        "Total time in seconds that processes have waited for CPU time",
    ),
    (
        "node_pressure_io_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    (
        "node_pressure_io_waiting_seconds_total",
        "Total time in seconds that processes have waited due to IO congestion",
    ),
    (
        "node_pressure_memory_stalled_seconds_total",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
    (
        "node_pressure_memory_waiting_seconds_total",
        "Total time in seconds that processes have waited for memory",
    ),
    (
        "node_procs_blocked",
        "Number of processes blocked waiting for I/O to complete.",
    ),
    (
        "node_procs_running",
        "Number of processes in runnable state.",
    ),
    (
        "node_scrape_collector_duration_seconds",
        "node_exporter: Duration of a collector scrape.",
    ),
    (
        "node_scrape_collector_success",
        "node_exporter: Whether a collector succeeded.",
    ),
    (
        "node_sockstat_sockets_used",
        "Number of IPv4 sockets in use.",
    ),
    ("node_systemd_unit_state", "Systemd unit"),
    ("node_systemd_units", "Summary of systemd unit states"),
    (
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
    ),
    (
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
    ),
    (
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
    ),
    (
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    ),
];

/// node_exporter's HELP for `family`, or `None` for a family no host collector emits.
pub fn help(family: &str) -> Option<Cow<'static, str>> {
    if let Ok(i) = FIXED.binary_search_by(|(f, _)| (*f).cmp(family)) {
        return Some(Cow::Borrowed(FIXED[i].1));
    }
    let field = |prefix: &str| family.strip_prefix(prefix).filter(|f| !f.is_empty());
    if let Some(f) = field("node_memory_") {
        return Some(format!("Memory information field {f}.").into());
    }
    if let Some(f) = field("node_vmstat_") {
        return Some(format!("/proc/vmstat information field {f}.").into());
    }
    if let Some(f) = field("node_netstat_") {
        // `node_netstat_Tcp_CurrEstab` is node_exporter's "Statistic TcpCurrEstab."
        let (proto, name) = f.split_once('_')?;
        return Some(format!("Statistic {proto}{name}.").into());
    }
    if let Some(f) = field("node_sockstat_") {
        let (proto, state) = f.split_once('_')?;
        return Some(format!("Number of {proto} sockets in state {state}.").into());
    }
    for dir in ["receive", "transmit"] {
        if let Some(stat) = family
            .strip_prefix("node_network_")
            .filter(|f| f.starts_with(dir))
            .and_then(|f| f.strip_suffix("_total"))
        {
            return Some(format!("Network device statistic {stat}.").into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_families_are_sorted_for_the_binary_search() {
        assert!(FIXED.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn texts_follow_node_exporter() {
        let cases = [
            (
                "node_cpu_seconds_total",
                "Seconds the CPUs spent in each mode.",
            ),
            ("node_load1", "1m load average."),
            (
                "node_memory_MemAvailable_bytes",
                "Memory information field MemAvailable_bytes.",
            ),
            (
                "node_memory_HugePages_Total",
                "Memory information field HugePages_Total.",
            ),
            (
                "node_vmstat_pgfault",
                "/proc/vmstat information field pgfault.",
            ),
            ("node_netstat_Tcp_CurrEstab", "Statistic TcpCurrEstab."),
            ("node_netstat_Icmp6_InMsgs", "Statistic Icmp6InMsgs."),
            (
                "node_sockstat_TCP_mem_bytes",
                "Number of TCP sockets in state mem_bytes.",
            ),
            (
                "node_sockstat_sockets_used",
                "Number of IPv4 sockets in use.",
            ),
            (
                "node_network_receive_bytes_total",
                "Network device statistic receive_bytes.",
            ),
            (
                "node_network_transmit_drop_total",
                "Network device statistic transmit_drop.",
            ),
            (
                "node_hwmon_temp_celsius",
                "Hardware monitor for temperature (input)",
            ),
        ];
        for (family, want) in cases {
            assert_eq!(help(family).as_deref(), Some(want), "{family}");
        }
        assert_eq!(help("node_network_up"), None);
        assert_eq!(help("node_memory_"), None);
        assert_eq!(help("http_requests_total"), None);
    }
}
