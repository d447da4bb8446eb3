//! Serving one listener until shutdown, with our own accept loop on
//! hyper's HTTP/1.1 connections (axum's `serve` sets no timeouts): a
//! client must send a request's head within `header_read_timeout_secs`
//! (which also ends keep-alive connections idle that long) and its body
//! within `body_read_timeout_secs`, so half-sent requests (slowloris)
//! cannot hold connections open. On shutdown: stop accepting, give running
//! requests the grace, then cancel what is left.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use platform::auth::Exposure;

use crate::server::App;

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting,
/// give running requests (streams included) `shutdown_grace_secs` to finish,
/// and cancel what is left: streams end with an error event, waiting
/// requests get 503, and their generations are cancelled. Last, write the
/// usage records still queued ([`App::close`]).
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let served = serve_connections(listener, app.clone(), shutdown).await;
    app.close().await;
    served
}

/// [`serve`] without the final [`App::close`]: for one app served on
/// several listeners (a thread each), closed once after all of them end.
pub async fn serve_connections(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &app.0.config;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let exposure = Exposure { public: listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()) };
    let service = TowerToHyperService::new(app.router_for(exposure));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(config.header_read_timeout_secs.max(1)));
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = Duration::from_millis(10);
                tcp
            }
            // Out of file descriptors and the like: the listener is fine,
            // accept again after a pause rather than spin or give up.
            Err(e) => {
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // SSE writes many small frames: never let Nagle hold one back.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let connection = connections.watch(http.serve_connection(TokioIo::new(tcp), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; {grace:?} for running requests");
    // Idle connections close now, busy ones after their request; past the
    // grace, tell the requests to stop (which cancels their generations)
    // and wait for that.
    let mut drained = std::pin::pin!(connections.shutdown());
    if tokio::time::timeout(grace, &mut drained).await.is_err() {
        tracing::warn!("shutdown grace over: cancelling the requests still running");
        app.0.cancel.send_replace(true);
        drained.await;
    }
    Ok(())
}
