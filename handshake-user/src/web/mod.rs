//! The metrics endpoint, served as exporters serve it: hyper's HTTP/1.1,
//! TLS (rustls) and basic auth from `--web.config.file`, gzip when the
//! scraper asks. Bounded: at most [`MAX_CONNECTIONS`] at once (more are
//! closed on accept), [`HEADER_TIMEOUT`] to send a request (idle keep-alive
//! connections included), [`CONNECTION_LIFETIME`] in all (a client that
//! stops reading cannot hold a connection), and accept errors (out of file
//! descriptors) back off instead of spinning.
pub mod config;

use std::{
    collections::HashSet,
    convert::Infallible,
    hash::{BuildHasher as _, RandomState},
    io::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use base64::Engine as _;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};

pub use self::config::WebConfig;

/// Connections served at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 4096;
/// Time a client gets to send a request's headers (and the TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection is kept, requests and responses included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept (out of file descriptors, most likely).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Successful logins remembered, so a scrape does not pay bcrypt each time.
const AUTH_CACHE: usize = 64;

/// Renders the exposition on each scrape.
pub type Render = Arc<dyn Fn() -> Result<String> + Send + Sync>;

struct Endpoint {
    path: String,
    render: Render,
    config: WebConfig,
    /// Hashes (keyed per process) of Authorization headers that passed.
    passed: Mutex<HashSet<u64>>,
    hasher: RandomState,
    /// A bcrypt hash at the users' cost, checked for unknown users.
    dummy: String,
}

/// Raises this process's soft limit of open files to its hard limit: an
/// endpoint on 0.0.0.0 should not run out at 1024.
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub async fn serve(listener: TcpListener, path: String, render: Render, config: WebConfig) {
    let tls = config
        .tls
        .as_ref()
        .map(|c| tokio_rustls::TlsAcceptor::from(Arc::clone(c)));
    let cost = config
        .users
        .values()
        .next()
        .and_then(|h| h.get(4..6)?.parse().ok())
        .unwrap_or(bcrypt::DEFAULT_COST);
    let endpoint = Arc::new(Endpoint {
        path,
        render,
        dummy: bcrypt::hash("not a password", cost).unwrap_or_default(),
        config,
        passed: Mutex::new(HashSet::new()),
        hasher: RandomState::new(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failing = false;
                stream
            }
            Err(e) => {
                if !failing {
                    log::warn!("metrics endpoint: accept failed: {e} (backing off)");
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream); // over the cap: closed at once
            continue;
        };
        let (endpoint, tls) = (Arc::clone(&endpoint), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let served = async {
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => connection(s, endpoint).await,
                            Ok(Err(e)) => log::debug!("metrics client: TLS: {e}"),
                            Err(_) => log::debug!("metrics client: TLS handshake timed out"),
                        }
                    }
                    None => connection(stream, endpoint).await,
                }
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
}

async fn connection<S>(io: S, endpoint: Arc<Endpoint>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let endpoint = Arc::clone(&endpoint);
        async move { Ok::<_, Infallible>(respond(&endpoint, &req)) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        log::debug!("metrics client: {e}");
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Endpoint {
    /// Whether the request carries a user and password of the config.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        if self.config.users.is_empty() {
            return true;
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let key = self.hasher.hash_one(value.as_bytes());
        if self.passed.lock().is_ok_and(|p| p.contains(&key)) {
            return true;
        }
        let Some(credentials) = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return false;
        };
        // An unknown user costs a bcrypt run too: no timing tells users apart.
        let hash = self
            .config
            .users
            .get(user)
            .map_or(self.dummy.as_str(), String::as_str);
        let ok =
            bcrypt::verify(password, hash).unwrap_or(false) && self.config.users.contains_key(user);
        if ok && let Ok(mut p) = self.passed.lock() {
            if p.len() >= AUTH_CACHE {
                p.clear();
            }
            p.insert(key);
        }
        ok
    }
}

fn respond(e: &Endpoint, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut response = if !e.authorized(req) {
        let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"handshake-monitor\""),
        );
        r
    } else if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n")
    } else if req.uri().path() == e.path {
        match (e.render)() {
            Ok(body) => exposition(req, body),
            Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")),
        }
    } else if req.uri().path() == "/" {
        let mut r = text(
            StatusCode::OK,
            format!(
                "<html><head><title>handshake-monitor</title></head><body><h1>handshake-monitor</h1><p><a href=\"{}\">Metrics</a></p></body></html>\n",
                e.path
            ),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        text(StatusCode::NOT_FOUND, "not found\n")
    };
    for (k, v) in &e.config.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::try_from(k.as_str()),
            HeaderValue::from_str(v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// The exposition, gzipped when the scraper accepts it.
fn exposition(req: &Request<Incoming>, body: String) -> Response<Full<Bytes>> {
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut r = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match enc.write_all(body.as_bytes()).and_then(|()| enc.finish()) {
            Ok(zipped) => {
                let mut r = text(StatusCode::OK, zipped);
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Err(_) => text(StatusCode::OK, body),
        }
    } else {
        text(StatusCode::OK, body)
    };
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    r
}
