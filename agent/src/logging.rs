//! Log setup shared by both programs: `RUST_LOG` wins over the configured level; text for
//! terminals and journald, or one JSON object per line.

use tracing_subscriber::EnvFilter;

pub fn init(level: Option<&str>, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}
