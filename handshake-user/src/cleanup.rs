//! `handshake-monitor cleanup --pin-path DIR`: removes the pinned links
//! (detaching the programs) and maps a `run --pin-path DIR` left.
use std::{fs, path::Path};

use anyhow::{Context as _, Result};

pub fn cleanup(dir: &Path) -> Result<()> {
    anyhow::ensure!(
        dir.exists(),
        "{} does not exist: nothing to clean up",
        dir.display()
    );
    let mut removed = 0;
    for sub in ["links", "maps"] {
        let d = dir.join(sub);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            removed += 1;
        }
        fs::remove_dir(&d).with_context(|| format!("cannot remove {}", d.display()))?;
    }
    let _ = fs::remove_dir(dir);
    println!("removed {removed} pins from {}", dir.display());
    Ok(())
}
