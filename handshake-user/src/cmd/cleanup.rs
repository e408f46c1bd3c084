//! `handshake-monitor cleanup --pin-path DIR`: removes the pinned links
//! (detaching the programs) and maps a `run --pin-path DIR` left, and
//! nothing else: DIR must be on a BPF filesystem, and only the names the
//! agent pins are removed.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{bpffs, probe::PINNED_MAPS};

pub fn cleanup(dir: &Path) -> Result<()> {
    if !dir.exists() {
        bail!("{} does not exist: nothing to clean up", dir.display());
    }
    if !bpffs::is_bpffs(dir) {
        bail!(
            "{} is not on a BPF filesystem: not a --pin-path, nothing removed",
            dir.display()
        );
    }
    let ours = |sub: &str, name: &str| match sub {
        "maps" => PINNED_MAPS.contains(&name),
        _ => bpffs::is_link_pin(name),
    };
    let mut removed = 0;
    let mut foreign = Vec::new();
    for sub in ["links", "maps"] {
        let d = dir.join(sub);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if !name.to_str().is_some_and(|n| ours(sub, n)) {
                foreign.push(path.display().to_string());
                continue;
            }
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed += 1;
        }
        let _ = fs::remove_dir(&d);
    }
    let _ = fs::remove_dir(dir);
    println!("removed {removed} pins from {}", dir.display());
    if !foreign.is_empty() {
        println!(
            "left {} files that are not this agent's pins: {}",
            foreign.len(),
            foreign.join(", ")
        );
    }
    Ok(())
}
