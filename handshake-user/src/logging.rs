//! Log lines as exporters write them (node_exporter's `--log.level` and
//! `--log.format`): logfmt by default, or one JSON object per line, for
//! Loki or an ELK stack. Structured lines (the detector's, whose message
//! is itself `key=value` pairs, logged with the target [`STRUCTURED`]) keep
//! their fields: in JSON each pair is a field of the object. `RUST_LOG`,
//! for developers, overrides the level.
use std::io::Write as _;

use clap::ValueEnum;

/// The log target of lines whose message is logfmt `key=value` pairs.
pub const STRUCTURED: &str = "detector";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Logfmt,
    Json,
}

/// A logfmt value: bare when it can be, else quoted with escapes.
fn logfmt_value(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
    {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// The `key=value` pairs of a structured message (values are bare).
pub fn pairs(msg: &str) -> Vec<(&str, &str)> {
    msg.split(' ').filter_map(|kv| kv.split_once('=')).collect()
}

/// One line, without its newline.
pub fn line(format: Format, ts: &str, level: log::Level, target: &str, msg: &str) -> String {
    let level = level.as_str().to_ascii_lowercase();
    let structured = target == STRUCTURED;
    match format {
        Format::Logfmt => {
            let mut out = format!("ts={ts} level={level}");
            if structured {
                out.push_str(&format!(" source={target} {msg}"));
            } else {
                out.push_str(&format!(
                    " source={} msg={}",
                    logfmt_value(target),
                    logfmt_value(msg)
                ));
            }
            out
        }
        Format::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), ts.into());
            obj.insert("level".into(), level.into());
            obj.insert("source".into(), target.into());
            if structured {
                for (k, v) in pairs(msg) {
                    let value = match v.parse::<f64>() {
                        Ok(n) if n.is_finite() => serde_json::json!(n),
                        _ => serde_json::Value::String(v.to_owned()),
                    };
                    obj.insert(k.to_owned(), value);
                }
            } else {
                obj.insert("msg".into(), msg.into());
            }
            serde_json::Value::Object(obj).to_string()
        }
    }
}

/// Installs the logger: `level` unless RUST_LOG says otherwise.
pub fn init(level: Level, format: Format) {
    let filter = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format(move |buf, record| {
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let target = if record.target() == STRUCTURED {
                STRUCTURED
            } else {
                record.module_path().unwrap_or(record.target())
            };
            let text = record.args().to_string();
            writeln!(buf, "{}", line(format, &ts, record.level(), target, &text))
        })
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-11-27T15:45:05.123Z";

    #[test]
    fn logfmt_lines() {
        assert_eq!(
            line(
                Format::Logfmt,
                TS,
                log::Level::Info,
                "handshake_user::run",
                "watching lo (egress: on)"
            ),
            "ts=2026-11-27T15:45:05.123Z level=info source=handshake_user::run msg=\"watching lo (egress: on)\""
        );
        assert_eq!(
            line(
                Format::Logfmt,
                TS,
                log::Level::Warn,
                STRUCTURED,
                "condition=listener_refusing state=firing top_ports=8080:35"
            ),
            "ts=2026-11-27T15:45:05.123Z level=warn source=detector condition=listener_refusing state=firing top_ports=8080:35"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_the_structured_fields() {
        let l = line(
            Format::Json,
            TS,
            log::Level::Warn,
            STRUCTURED,
            "condition=half_open_buildup state=firing inbound_half_open=1200 completion_ratio_5s=NaN top_ports=8080:1200",
        );
        let v: serde_json::Value = serde_json::from_str(&l).expect("one JSON object");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["condition"], "half_open_buildup");
        assert_eq!(v["inbound_half_open"], 1200.0);
        assert_eq!(v["completion_ratio_5s"], "NaN");
        assert_eq!(v["top_ports"], "8080:1200");
        let plain = line(Format::Json, TS, log::Level::Info, "x", "a \"quoted\" word");
        let v: serde_json::Value = serde_json::from_str(&plain).expect("JSON");
        assert_eq!(v["msg"], "a \"quoted\" word");
    }
}
