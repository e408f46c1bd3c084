//! Reading a Prometheus text exposition, for assertions.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// One scrape's samples.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub text: String,
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in s.split("\",").filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once("=\"") {
            out.push((
                k.trim_start_matches(',').to_owned(),
                v.trim_end_matches('"').to_owned(),
            ));
        }
    }
    out
}

impl Exposition {
    /// Sum of every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, series_labels) = match series.split_once('{') {
                Some((m, rest)) => (m, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            if metric != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v))
            {
                total += value.parse::<f64>().unwrap_or(f64::NAN);
            }
        }
        total
    }

    /// Whether the exposition has any series of `name`.
    pub fn has(&self, name: &str) -> bool {
        self.text
            .lines()
            .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
    }
}

/// GET `path` from `addr` (from the calling thread's namespace).
pub fn scrape(addr: SocketAddr, path: &str) -> Result<Exposition> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("no HTTP response from {addr}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(Exposition {
        text: if chunked {
            dechunk(body).with_context(|| format!("{addr}{path}: bad chunked body"))?
        } else {
            body.to_owned()
        },
    })
}

/// A chunked HTTP/1.1 body, joined (large responses, such as Prometheus'
/// range queries, come that way).
fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("chunk shorter than its size")?);
        body = rest.get(size + 2..).context("chunk end")?;
    }
}
