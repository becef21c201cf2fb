//! The relay's live socket, the client side: the relay sends the workspace's head
//! (`{"seq": N}`) when the socket opens and whenever a blob arrives; whoever listens syncs then.
//! Blocking (tungstenite over a plain TCP stream, like the rest of the client), with a read
//! timeout so the listener can look up between messages (to stop, for one).

use std::net::TcpStream;
use std::time::Duration;

use adiuva_engine::Workspace;
use adiuva_model::ErrorCode;
use serde::Deserialize;
use tungstenite::client::IntoClientRequest;

use crate::account::Account;
use crate::error::{Result, SyncError};

/// Where and as whom to open the live socket: read from the account, so that the connection
/// itself needs no workspace.
pub struct LiveEndpoint {
    server: String,
    workspace: String,
    access_token: String,
}

#[derive(Deserialize)]
struct LiveHead {
    seq: u64,
}

impl LiveEndpoint {
    /// The endpoint of the account stored on this device, if it has one.
    pub fn of(workspace: &Workspace) -> Result<Option<Self>> {
        let Some(account) = Account::load(workspace)? else { return Ok(None) };
        Ok(Some(Self {
            access_token: account.access_token().to_owned(),
            server: account.server,
            workspace: workspace.workspace_id().to_string(),
        }))
    }
}

/// An open live socket.
pub struct LiveSocket {
    socket: tungstenite::WebSocket<TcpStream>,
    server: String,
}

impl LiveSocket {
    /// Opens the socket; reads wait at most `poll` before [`LiveSocket::next_head`] returns `None`.
    /// An access token the relay refuses is `relay.token_expired`-coded: refresh it
    /// ([`crate::account_view`] does) and connect again.
    pub fn connect(endpoint: &LiveEndpoint, poll: Duration) -> Result<Self> {
        let offline = |detail: String| SyncError::Offline { server: endpoint.server.clone(), detail };
        let authority = endpoint
            .server
            .strip_prefix("http://")
            .ok_or_else(|| offline("the live socket needs an http:// relay address".into()))?;
        let url = format!("ws://{authority}/api/v1/workspaces/{}/live", endpoint.workspace);
        let mut request = url.into_client_request().map_err(|error| offline(error.to_string()))?;
        let bearer: tungstenite::http::HeaderValue = format!("Bearer {}", endpoint.access_token)
            .parse()
            .map_err(|_| offline("the access token is not a header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let host = authority.split('/').next().unwrap_or(authority);
        let stream = TcpStream::connect(host).map_err(|error| offline(error.to_string()))?;
        stream.set_read_timeout(Some(poll)).map_err(|error| offline(error.to_string()))?;
        match tungstenite::client(request, stream) {
            Ok((socket, _)) => Ok(Self { socket, server: endpoint.server.clone() }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let code = if status == 401 { ErrorCode::RelayTokenExpired } else { ErrorCode::SyncRelayError };
                Err(SyncError::Relay { status, code, message: "the live socket was refused".into(), retry_after: None })
            }
            Err(error) => Err(offline(error.to_string())),
        }
    }

    /// The next head the relay announces; `None` if nothing came within the poll time. An
    /// error once the socket closed (the relay stopped, or this device was removed).
    pub fn next_head(&mut self) -> Result<Option<u64>> {
        match self.socket.read() {
            Ok(tungstenite::Message::Text(text)) => Ok(Some(decode_head(&text)?)),
            Ok(tungstenite::Message::Close(_)) => Err(SyncError::Offline {
                server: self.server.clone(),
                detail: "the relay closed the live socket".into(),
            }),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(error) => Err(SyncError::Offline { server: self.server.clone(), detail: error.to_string() }),
        }
    }
}

/// The head a live socket's text message announces.
pub fn decode_head(text: &str) -> Result<u64> {
    let head: LiveHead = serde_json::from_str(text)
        .map_err(|error| SyncError::Malformed { what: "live".into(), detail: adiuva_engine::json_error(&error) })?;
    Ok(head.seq)
}
