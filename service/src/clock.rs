//! The one wall clock of every Outpost program. Pure code never calls it: it takes the time
//! as an argument, and the program's shell reads it here.

/// Milliseconds since the Unix epoch by the system clock; 0 if the clock is set before 1970,
/// `i64::MAX` past the year 292 million.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_system_clock_in_milliseconds() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let t = super::now_ms();
        assert!(t >= before && t - before < 5_000, "{before} {t}");
    }
}
