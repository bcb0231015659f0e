//! The origin's HTTP/1 server loop (both listeners): `axum::serve` with
//! what it cannot be told — a deadline for the request head
//! (`request_head_timeout`: a client that sends half a head and waits is
//! cut off in seconds, not held for as long as it likes) and accept
//! errors (out of file descriptors) that pause instead of spinning.
//! Connections drain on shutdown: `stop` ends the accept loop, then
//! in-flight requests finish (hyper-util's graceful shutdown).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a failing `accept` (e.g. EMFILE) waits before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` resolves, then lets the
/// open requests finish (at most `drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    request_head_timeout: Duration,
    drain: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(request_head_timeout)
        .keep_alive(true);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        // No upgrades (WebSocket, CONNECT) are served by the origin.
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _: Result<(), hyper::Error> = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "connections still open after the drain period");
    }
}
