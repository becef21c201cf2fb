//! Test doubles of the six cloud providers: a real HTTP server on loopback that answers from a
//! script, in the provider's own wire format (see `dialects.rs`), and records every request.
//! Like the real services, the doubles of Gemini, Mistral and Groq refuse the request fields
//! their providers refuse, so a test passes only if the client left them out.

#![allow(dead_code)]

pub mod dialects;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use adiuva_llm::ProviderKind;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::mpsc;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A whole response.
    Json { status: u16, headers: Vec<(&'static str, String)>, body: String },
    /// `200 text/event-stream`: these events (each a full `field: value` block), then the end.
    Sse { events: Vec<String>, end: End },
    /// Headers never come.
    Hang,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    /// The connection closes after the last event.
    Close,
    /// The connection stays open and silent.
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Json { status, headers: Vec::new(), body: body.into() }
    }

    pub fn with_header(self, name: &'static str, value: impl Into<String>) -> Reply {
        match self {
            Reply::Json { status, mut headers, body } => {
                headers.push((name, value.into()));
                Reply::Json { status, headers, body }
            }
            other => other,
        }
    }

    pub fn sse(events: Vec<String>) -> Reply {
        Reply::Sse { events, end: End::Close }
    }
}

/// A request the double received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

struct State {
    kind: ProviderKind,
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// A provider double listening on 127.0.0.1.
pub struct Double {
    pub kind: ProviderKind,
    pub address: SocketAddr,
    state: Arc<State>,
}

impl Double {
    pub async fn start(kind: ProviderKind, script: Vec<Reply>) -> Double {
        let state = Arc::new(State { kind, script: Mutex::new(script.into()), received: Mutex::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        // Small answers on kept-alive connections would otherwise wait for delayed ACKs.
        let listener = axum::serve::ListenerExt::tap_io(listener, |connection| {
            let _ = connection.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Double { kind, address, state }
    }

    /// The base URL a client is configured with (the provider's path prefix included).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.address, dialects::path_prefix(self.kind))
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let received = Received {
        method: method.to_string(),
        path: uri.path().to_owned(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        body: body.clone(),
    };
    state.received.lock().unwrap().push(received);
    if !uri.path().starts_with(dialects::path_prefix(state.kind)) {
        return respond(Reply::json(404, r#"{"error":{"message":"not found"}}"#)).await;
    }
    // The real services refuse these before answering anything.
    if let Some(refusal) = dialects::refusal(state.kind, &body) {
        return respond(refusal).await;
    }
    let reply = state.script.lock().unwrap().pop_front();
    respond(reply.unwrap_or_else(|| Reply::json(500, r#"{"error":{"message":"the test script is exhausted"}}"#))).await
}

async fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Json { status, headers, body } => {
            let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
            response = response.header("content-type", "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Sse { events, end } => {
            let (sender, mut receiver) = mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                for event in events {
                    if sender.send(Ok(Bytes::from(event))).await.is_err() {
                        return;
                    }
                }
                if end == End::Hang {
                    std::future::pending::<()>().await;
                }
            });
            let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Reply::Hang => std::future::pending().await,
    }
}
