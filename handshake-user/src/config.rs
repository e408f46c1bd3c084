//! The optional TOML config file. Its keys are the `run` flags without the
//! leading `--` (`"web.listen-address" = "0.0.0.0:9437"`,
//! `iface = ["eth0", "eth1"]`, `no-egress = true`). A value applies only
//! where neither a flag nor an environment variable set the option: the
//! file's values are turned into flags and parsed by the same parser, so
//! they are validated exactly like the command line.
use std::{ffi::OsString, fs, path::Path};

use anyhow::{Context as _, Result, bail};
use clap::{ArgMatches, Command, parser::ValueSource};

/// Flags for the config file's keys whose options `matches` left at their
/// defaults; with `matches` None, for every key (to validate them all, the
/// ones a flag overrides too).
pub fn flags_for_defaults(
    path: &Path,
    run: &Command,
    matches: Option<&ArgMatches>,
) -> Result<Vec<OsString>> {
    let meta = fs::metadata(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    // Not /dev/zero, not a FIFO: a regular file, and a small one.
    if !meta.is_file() || meta.len() > 1 << 20 {
        bail!(
            "config file {}: not a regular file of at most 1 MiB",
            path.display()
        );
    }
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message()))
        .with_context(|| format!("malformed config file {}", path.display()))?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let Some(arg) = run
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            bail!("config file {}: unknown key {key:?}", path.display());
        };
        if key == "config" {
            bail!(
                "config file {}: `config` cannot name another file",
                path.display()
            );
        }
        let id = arg.get_id().as_str();
        if matches
            .is_some_and(|m| !matches!(m.value_source(id), None | Some(ValueSource::DefaultValue)))
        {
            continue; // a flag or the environment already set it
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>>>(),
            other => scalar(other).map(|v| vec![v]),
        }
        .with_context(|| format!("config file {}: key {key:?}", path.display()))?;
        let takes_value = arg.get_action().takes_values();
        for v in values {
            if takes_value {
                flags.push(OsString::from(format!("--{key}={v}")));
            } else if v == "true" {
                flags.push(OsString::from(format!("--{key}")));
            } else if v != "false" {
                bail!(
                    "config file {}: key {key:?} takes true or false",
                    path.display()
                );
            }
        }
    }
    Ok(flags)
}

fn scalar(value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("unsupported value of type {}", other.type_str()),
    })
}
