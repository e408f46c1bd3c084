//! A scenario's recording: every series the agent serves, scraped once a
//! second, kept as columns (one value per second per series) and saved as
//! JSON so that rules can be scored again without running the traffic.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{metrics::scrape, netns::Netns};

/// Seconds between two recorded scrapes.
pub const RESOLUTION_S: u64 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Recording {
    /// Seconds from the scenario's start, one per scrape.
    pub t: Vec<f64>,
    /// Series (`name{labels}` as served) -> value at each `t` (None: the
    /// series was not served then).
    pub series: BTreeMap<String, Vec<Option<f64>>>,
}

impl Recording {
    fn push(&mut self, t: f64, text: &str) {
        let n = self.t.len();
        self.t.push(t);
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let v: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            let column = self
                .series
                .entry(series.to_owned())
                .or_insert_with(|| vec![None; n]);
            column.resize(n, None);
            column.push(Some(v));
        }
        for column in self.series.values_mut() {
            column.resize(n + 1, None);
        }
    }

    /// Value of `series` at or just before `t` seconds.
    pub fn at(&self, series: &str, t: f64) -> Option<f64> {
        let i = self.t.partition_point(|x| *x <= t + 1e-9).checked_sub(1)?;
        self.series.get(series)?.get(i).copied().flatten()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)?;
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }
}

/// Scrapes the agent every [`RESOLUTION_S`] from its own thread.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    data: Arc<Mutex<Recording>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Recorder {
    /// Starts recording; `t0` is the scenario's start.
    pub fn start(ns: &Netns, addr: SocketAddr, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(Mutex::new(Recording::default()));
        let (s, d) = (Arc::clone(&stop), Arc::clone(&data));
        let handle = ns.spawn(move || {
            let mut next = 0u64;
            while !s.load(Ordering::Relaxed) {
                let due = t0 + Duration::from_secs(next);
                let now = Instant::now();
                if now < due {
                    thread::sleep((due - now).min(Duration::from_millis(100)));
                    continue;
                }
                if let Ok(e) = scrape(addr, "/metrics")
                    && let Ok(mut rec) = d.lock()
                {
                    rec.push(next as f64, &e.text);
                }
                next += RESOLUTION_S;
            }
        });
        Self {
            stop,
            data,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Recording {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        std::mem::take(&mut *self.data.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_stay_aligned_when_series_come_and_go() {
        let mut r = Recording::default();
        r.push(0.0, "a 1\nb{x=\"1\"} 2\n");
        r.push(1.0, "a 3\n");
        r.push(2.0, "a 4\nc NaN\n");
        assert_eq!(r.series["a"], vec![Some(1.0), Some(3.0), Some(4.0)]);
        assert_eq!(r.series["b{x=\"1\"}"], vec![Some(2.0), None, None]);
        assert_eq!(r.series["c"].len(), 3);
        assert_eq!(r.at("a", 1.5), Some(3.0));
    }
}
