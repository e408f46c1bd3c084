//! A deliberately small HTTP/1.1 server: one GET route for the exposition,
//! a landing page, and bounded reads so a slow or hostile client cannot hold
//! the agent's memory or time.
use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    time::timeout,
};

/// Longest request head we read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Renders the exposition on each scrape.
pub type Render = Arc<dyn Fn() -> Result<String> + Send + Sync>;

pub async fn serve(listener: TcpListener, telemetry_path: String, render: Render) {
    let telemetry_path: Arc<str> = telemetry_path.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let render = Arc::clone(&render);
        let path = Arc::clone(&telemetry_path);
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &path, &render).await {
                log::debug!("metrics client: {err:#}");
            }
        });
    }
}

async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        anyhow::ensure!(buf.len() < MAX_REQUEST, "request head too long");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

async fn handle(mut stream: TcpStream, telemetry_path: &str, render: &Render) -> Result<()> {
    let head = timeout(READ_TIMEOUT, read_head(&mut stream)).await??;
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", p) if p == telemetry_path => match render() {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
            Err(err) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{err:#}\n"),
            ),
        },
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>handshake-monitor</title></head><body><h1>handshake-monitor</h1><p><a href=\"{telemetry_path}\">Metrics</a></p></body></html>\n"
            ),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    Ok(())
}
