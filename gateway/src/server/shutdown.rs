//! What a request does when the shutdown grace runs out: a waiting one
//! gets 503 (`or_shutdown`), a stream ends with an error event
//! (`until_shutdown`); either way its generation is cancelled.

use std::future::Future;

use futures_util::stream::{self, StreamExt};

use crate::error::ApiError;
use crate::providers::ChunkValues;
use crate::server::App;

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
