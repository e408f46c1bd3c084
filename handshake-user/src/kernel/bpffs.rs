//! The pin directory: it must be on a BPF filesystem, and only the pins
//! the agent makes there are its own.
use std::path::Path;

use anyhow::{Context as _, Result, bail};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` (which exists) is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: all-zero bytes are a valid statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statfs to fill.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Makes `dir` for `run --pin-path`: only under a BPF filesystem (checked
/// on its nearest existing ancestor, so nothing is created elsewhere).
pub fn ensure_pin_dir(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or_else(|| Path::new("/"));
    if !is_bpffs(existing) {
        bail!(
            "--pin-path {} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create --pin-path {}", dir.display()))
}

/// Holds `dir` for this agent (flock on the directory, released when the
/// file is closed, at exit whatever the exit): two agents on one pin
/// directory would fight over the same links and maps.
pub fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(dir)
        .with_context(|| format!("cannot open --pin-path {}", dir.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "--pin-path {} is in use by another handshake-monitor; give each agent its own",
            dir.display()
        );
    }
    Ok(file)
}

/// Whether `name` is a link pin the agent makes: `<ifindex>-<ifname>-<kind>`.
pub fn is_link_pin(name: &str) -> bool {
    let Some((index, rest)) = name.split_once('-') else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && ["-xdp", "-tc-ingress", "-tc"]
            .iter()
            .any(|k| rest.ends_with(k) && rest.len() > k.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names() {
        for ours in ["2-eth0-xdp", "1-lo-tc-ingress", "17-veth-a-tc"] {
            assert!(is_link_pin(ours), "{ours}");
        }
        for theirs in ["notes.txt", "eth0-xdp", "2--tc", "x2-eth0-tc", "2-eth0-tcx"] {
            assert!(!is_link_pin(theirs), "{theirs}");
        }
    }

    #[test]
    fn a_pin_dir_outside_bpffs_is_refused_and_not_created() {
        let dir = std::env::temp_dir().join(format!("hm-pin-{}/a/b", std::process::id()));
        let err = ensure_pin_dir(&dir).expect_err("tmp is not bpffs");
        assert!(err.to_string().contains("is not on a BPF filesystem"));
        assert!(!dir.exists() && !dir.parent().is_some_and(Path::exists));
    }
}
