//! Live updates: a server-sent event each time the local replica applies new log entries. The page's script
//! then re-fetches itself and swaps its `#live` region, so badges, logs and progress bars move without a
//! reload.

use crate::{ConsoleBackend, Reject, Shared};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use std::convert::Infallible;
use std::time::Duration;

/// Longest wait for a change before the stream checks again (keep-alives go out meanwhile).
const WAIT: Duration = Duration::from_secs(15);

/// Shortest gap between two events, so a busy cluster does not make every browser re-render constantly.
const MIN_GAP: Duration = Duration::from_millis(250);

/// `GET /events`: `event: applied`, `data: <applied index>` on connect and on every change.
pub async fn events<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Reject> {
    crate::session_of(&console, &headers)?;
    let backend = console.backend.clone();
    let start = backend.read(|_, applied| applied);
    let stream = stream::unfold((backend, None::<u64>), move |(backend, last)| async move {
        let next = match last {
            None => start,
            Some(last) => {
                tokio::time::sleep(MIN_GAP).await;
                let mut applied = last;
                // Bounded: each round waits up to WAIT; a client that stays connected keeps the stream.
                while applied <= last {
                    applied = backend.wait_for_change(last, WAIT).await;
                }
                applied
            }
        };
        let event = Event::default().event("applied").data(next.to_string());
        Some((Ok(event), (backend, Some(next))))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
