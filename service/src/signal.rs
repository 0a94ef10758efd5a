//! The shutdown signal every daemon stops on.

/// Completes on Ctrl-C (SIGINT) or SIGTERM, whichever comes first. If SIGTERM cannot be
/// registered, only Ctrl-C ends it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
