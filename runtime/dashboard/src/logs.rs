//! A job's driver log: all of it (`GET /api/jobs/<id>/logs`), or followed over
//! a websocket (`/api/jobs/<id>/logs/tail`, as Ray's client reads it) until
//! the job ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::App;
use crate::api::job_error;
use crate::jobs::log_path;

/// The most a logs reply carries (its end, when the log is longer).
const MAX_LOG_REPLY: u64 = 64 * 1024 * 1024;
/// The most one websocket message carries.
const CHUNK: usize = 64 * 1024;
/// How often a followed log is read again.
const POLL: Duration = Duration::from_millis(200);

/// `?tail_bytes=N`: only the last N bytes (the dashboard page uses it).
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    tail_bytes: Option<u64>,
}

/// `GET /api/jobs/<id>/logs`: `{"logs": "..."}`.
pub async fn get_logs(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let job = match app.jobs.find(&id).await {
        Ok(j) => j,
        Err(e) => return job_error(e),
    };
    let path = log_path(&app.jobs.context().logs_dir, &job.submission_id);
    let limit = q.tail_bytes.unwrap_or(MAX_LOG_REPLY).min(MAX_LOG_REPLY);
    let logs = read_tail(&path, limit).await;
    axum::Json(serde_json::json!({ "logs": logs })).into_response()
}

/// The last `limit` bytes of a file as text ("" when there is no file yet).
async fn read_tail(path: &std::path::Path, limit: u64) -> String {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return String::new();
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(limit);
    if f.seek(std::io::SeekFrom::Start(from)).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(limit).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// `GET /api/jobs/<id>/logs/tail` (websocket): the log so far, then each new
/// piece as it is written; closed normally once the job has ended and
/// everything was sent.
pub async fn tail_logs(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let job = match app.jobs.find(&id).await {
        Ok(j) => j,
        Err(e) => return job_error(e),
    };
    let id = job.submission_id;
    ws.on_upgrade(move |socket| async move {
        if let Err(e) = follow(&app, &id, socket).await {
            tracing::debug!(submission_id = %id, error = %e, "log follower ended");
        }
    })
}

async fn follow(app: &App, id: &str, mut socket: WebSocket) -> Result<(), axum::Error> {
    let path = log_path(&app.jobs.context().logs_dir, id);
    let mut offset: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        // Armed before the state is read, so an end recorded meanwhile wakes us.
        let woken = app.jobs.context().job_ended.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Read the job's state before the file, so nothing written before it
        // ended is missed.
        let ended = match app.jobs.find(id).await {
            Ok(j) => j.status.is_terminal(),
            Err(_) => true,
        };
        let fresh = read_from(&path, &mut offset).await;
        carry.extend(fresh);
        let (text, rest) = split_utf8(&carry, ended);
        carry = rest;
        for piece in chunks(&text) {
            socket.send(Message::Text(piece.into())).await?;
        }
        if ended {
            let frame = CloseFrame {
                code: close_code::NORMAL,
                reason: "job ended".into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return Ok(());
        }
        tokio::select! {
            () = app.shutdown.cancelled() => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "dashboard shutting down".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return Ok(());
            }
            () = tokio::time::sleep(POLL) => {}
            () = &mut woken => {}
        }
    }
}

/// What was appended to `path` since `offset` (advancing it).
async fn read_from(path: &std::path::Path, offset: &mut u64) -> Vec<u8> {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    if f.seek(std::io::SeekFrom::Start(*offset)).await.is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(MAX_LOG_REPLY).read_to_end(&mut buf).await;
    *offset += buf.len() as u64;
    buf
}

/// The longest valid UTF-8 text at the start of `bytes`, and what follows (an
/// incomplete character, kept for the next read unless `flush`).
fn split_utf8(bytes: &[u8], flush: bool) -> (String, Vec<u8>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), Vec::new()),
        Err(e) if e.error_len().is_none() && !flush => {
            let cut = e.valid_up_to();
            (
                String::from_utf8_lossy(&bytes[..cut]).into_owned(),
                bytes[cut..].to_vec(),
            )
        }
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Vec::new()),
    }
}

fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_character_waits_for_the_next_read() {
        let bytes = "héllo".as_bytes();
        let (a, rest) = split_utf8(&bytes[..2], false);
        assert_eq!((a.as_str(), rest.len()), ("h", 1));
        let mut joined = rest;
        joined.extend_from_slice(&bytes[2..]);
        assert_eq!(split_utf8(&joined, false).0, "éllo");
        assert_eq!(split_utf8(&bytes[..2], true).0, "h\u{fffd}");
    }

    #[test]
    fn chunks_split_on_character_boundaries() {
        let text = "é".repeat(CHUNK);
        let parts = chunks(&text);
        assert!(parts.iter().all(|p| p.len() <= CHUNK));
        assert_eq!(parts.concat(), text);
    }
}
