//! Serving until shutdown: stop accepting, give running requests the
//! grace, then cancel what is left (`or_shutdown`, `until_shutdown`).


use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::providers::ChunkValues;
use crate::server::{App, Exposure};


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
    let grace = Duration::from_secs(app.0.config.shutdown_grace_secs);
    let signalled = Arc::new(Notify::new());
    let notify = Arc::clone(&signalled);
    let exposure = Exposure { public: listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()) };
    // SSE writes many small frames: never let Nagle hold one back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, app.router_for(exposure)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; {grace:?} for running requests");
        notify.notify_one();
    });
    let deadline = async {
        signalled.notified().await;
        tokio::time::sleep(grace).await;
    };
    // Connections run in their own tasks, so the server future finishing is
    // what tells us every request is done; past the grace, tell the
    // requests to stop (which cancels their generations) and wait for that.
    let server = server.into_future();
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = deadline => {
            tracing::warn!("shutdown grace over: cancelling the requests still running");
            app.0.cancel.send_replace(true);
            server.await
        }
    };
    served
}

/// Run `fut` unless the shutdown grace runs out first (503 then; dropping
/// `fut` cancels whatever it started).
pub(crate) async fn or_shutdown<T>(app: &App, fut: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::select! {
        r = fut => r,
        () = app.cancelled() => Err(ApiError::not_ready("The server is shutting down.")),
    }
}

/// `chunks`, cut at the end of the shutdown grace by a 503 error item.
/// Dropping `chunks` there cancels the generation.
pub(crate) fn until_shutdown(app: &App, chunks: ChunkValues) -> ChunkValues {
    let cancelled: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(app.cancelled());
    stream::unfold(Some((chunks, cancelled)), |state| async move {
        let (mut chunks, mut cancelled) = state?;
        tokio::select! {
            item = chunks.next() => item.map(|i| (i, Some((chunks, cancelled)))),
            () = &mut cancelled => Some((Err(ApiError::not_ready("The server is shutting down.")), None)),
        }
    })
    .boxed()
}
