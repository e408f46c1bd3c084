//! Which interfaces exist and which are up, from sysfs (no netlink needed).
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub loopback: bool,
}

fn read_interface(dir: &Path) -> Option<(Interface, bool)> {
    let raw = dir.file_name()?;
    let Some(name) = raw.to_str().map(str::to_owned) else {
        // Labels and the attach calls take UTF-8 names: say so, once.
        static WARNED: std::sync::Mutex<Vec<std::ffi::OsString>> =
            std::sync::Mutex::new(Vec::new());
        if let Ok(mut w) = WARNED.lock()
            && !w.iter().any(|n| n == raw)
        {
            log::warn!(
                "interface {:?}: its name is not UTF-8, so it is not watched",
                raw.to_string_lossy()
            );
            w.push(raw.to_owned());
        }
        return None;
    };
    let flags = fs::read_to_string(dir.join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    let index = fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((
        Interface {
            name,
            index,
            loopback: flags & IFF_LOOPBACK != 0,
        },
        flags & IFF_UP != 0,
    ))
}

fn all() -> Result<Vec<(Interface, bool)>> {
    let entries =
        fs::read_dir("/sys/class/net").context("cannot list interfaces in /sys/class/net")?;
    let mut found: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| read_interface(&e.path()))
        .collect();
    found.sort_by_key(|(i, _)| i.index);
    Ok(found)
}

/// Every interface that is up.
pub fn up() -> Result<Vec<Interface>> {
    Ok(all()?
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(i, _)| i)
        .collect())
}

/// The named interfaces, or an error naming the first that does not exist.
pub fn by_name(names: &[String]) -> Result<Vec<Interface>> {
    let known = all()?;
    let mut out: Vec<Interface> = Vec::new();
    for name in names {
        if out.iter().any(|i| &i.name == name) {
            continue; // named twice (--iface lo,lo)
        }
        match known.iter().find(|(i, _)| &i.name == name) {
            Some((i, _)) => out.push(i.clone()),
            None => {
                let list: Vec<_> = known.iter().map(|(i, _)| i.name.as_str()).collect();
                bail!(
                    "unknown interface {name:?} (this host has: {})",
                    list.join(", ")
                );
            }
        }
    }
    Ok(out)
}

/// Those of `names` that exist now (for following named interfaces that
/// come and go).
pub fn existing(names: &[String]) -> Result<Vec<Interface>> {
    Ok(all()?
        .into_iter()
        .map(|(i, _)| i)
        .filter(|i| names.contains(&i.name))
        .collect())
}

/// The driver behind an interface, as `ethtool -i` names it (`veth`,
/// `virtio_net`, `mlx5_core`, ...): the ETHTOOL_GDRVINFO ioctl, which virtual
/// devices answer too. None if the device does not say.
pub fn driver(name: &str) -> Option<String> {
    // The request argument's type differs between libcs (c_ulong on glibc).
    const SIOCETHTOOL: libc::Ioctl = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if name.len() >= 16 {
        return None;
    }
    // SAFETY: a zeroed plain-data struct; the ioctl writes at most its size,
    // and every pointer passed lives across the call.
    unsafe {
        let mut info: DrvInfo = std::mem::zeroed();
        info.cmd = ETHTOOL_GDRVINFO;
        let mut req = IfReq {
            name: [0; 16],
            data: &mut info,
            _pad: [0; 16],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
        let end = info
            .driver
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(info.driver.len());
        let driver = String::from_utf8_lossy(&info.driver[..end]).into_owned();
        (!driver.is_empty()).then_some(driver)
    }
}
