//! `GET /v1/events`: the committed events as server-sent events, from a cursor.
//!
//! Each event's SSE id is the cursor just after it, so a client that reconnects with
//! `Last-Event-ID` (or `?cursor=`) gets exactly the events it has not seen. Subscribing to new
//! commits and reading the log up to now happen under the workspace lock, which every commit
//! holds while it reports its events: nothing committed falls between the two. A stream that
//! falls behind the live buffer re-reads the log from its cursor; the cursor drops anything
//! delivered already.

use std::convert::Infallible;
use std::sync::Arc;

use adiuva_engine::{Cursor, FollowedEvent};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};
use utoipa::IntoParams;

use super::Shared;
use super::guard::{ApiError, Correlation, ErrorBody, Params};
use crate::service;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FollowQuery {
    /// Where to start: the `id` of the last event seen. Absent: the start of the log.
    /// `Last-Event-ID` takes precedence.
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(FollowQuery),
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-sent events named `committed`; each `data` is an event (`seq`, `document`, `change`, `envelope`) and each `id` the cursor after it",
               body = serde_json::Value),
              (status = 400, description = "Not a cursor, or a cursor this workspace's log does not reach", body = ErrorBody)))]
pub async fn follow(
    State(shared): State<Arc<Shared>>,
    correlation: Correlation,
    headers: HeaderMap,
    Params(query): Params<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let from = headers.get("last-event-id").and_then(|value| value.to_str().ok()).map(str::to_owned).or(query.cursor);
    let cursor: Cursor = from.unwrap_or_default().parse().map_err(|e| ApiError::from(service::Error::Engine(e)))?;
    let (subscribed, from) = (shared.clone(), cursor.clone());
    let (live, backlog) = shared
        .call(correlation, move |service| {
            let live = subscribed.committed.subscribe();
            Ok((live, service.workspace.events_after(&from)?))
        })
        .await?;
    let (sender, mut out) = mpsc::channel(256);
    tokio::spawn(pump(shared, correlation, cursor, backlog, live, sender));
    let stream = futures_util::stream::poll_fn(move |context| out.poll_recv(context).map(|event| event.map(Ok)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Feeds one stream: the backlog, then live commits, until the client goes or the daemon stops.
async fn pump(
    shared: Arc<Shared>,
    correlation: Correlation,
    mut cursor: Cursor,
    backlog: Vec<FollowedEvent>,
    mut live: broadcast::Receiver<Arc<[FollowedEvent]>>,
    sender: mpsc::Sender<Event>,
) {
    if !deliver(&mut cursor, &backlog, &sender).await {
        return;
    }
    loop {
        let received = tokio::select! {
            _ = super::stopped(shared.stopping.clone()) => break,
            _ = sender.closed() => break,
            received = live.recv() => received,
        };
        let delivered = match received {
            Ok(events) => deliver(&mut cursor, &events, &sender).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, "event stream fell behind; reading the log from its cursor");
                let from = cursor.clone();
                match shared.call(correlation, move |service| Ok(service.workspace.events_after(&from)?)).await {
                    Ok(events) => deliver(&mut cursor, &events, &sender).await,
                    Err(error) => {
                        warn!(?error, "event stream cannot catch up; closing it");
                        false
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => false,
        };
        if !delivered {
            break;
        }
    }
}

/// Sends the events the cursor has not passed yet; false once the client is gone.
async fn deliver(cursor: &mut Cursor, events: &[FollowedEvent], sender: &mpsc::Sender<Event>) -> bool {
    for event in events {
        if !cursor.advance(event) {
            continue;
        }
        let sse = match Event::default().event("committed").id(cursor.to_string()).json_data(event) {
            Ok(sse) => sse,
            Err(error) => {
                warn!(%error, "an event does not serialize; skipping it");
                continue;
            }
        };
        if sender.send(sse).await.is_err() {
            return false;
        }
    }
    true
}
