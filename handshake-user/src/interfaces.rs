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
    let name = dir.file_name()?.to_str()?.to_owned();
    let flags = fs::read_to_string(dir.join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    let index = fs::read_to_string(dir.join("ifindex")).ok()?.trim().parse().ok()?;
    Some((Interface { name, index, loopback: flags & IFF_LOOPBACK != 0 }, flags & IFF_UP != 0))
}

fn all() -> Result<Vec<(Interface, bool)>> {
    let entries = fs::read_dir("/sys/class/net").context("cannot list interfaces in /sys/class/net")?;
    let mut found: Vec<_> = entries.filter_map(|e| e.ok()).filter_map(|e| read_interface(&e.path())).collect();
    found.sort_by_key(|(i, _)| i.index);
    Ok(found)
}

/// Every interface that is up.
pub fn up() -> Result<Vec<Interface>> {
    Ok(all()?.into_iter().filter(|(_, up)| *up).map(|(i, _)| i).collect())
}

/// The named interfaces, or an error naming the first that does not exist.
pub fn by_name(names: &[String]) -> Result<Vec<Interface>> {
    let known = all()?;
    let mut out = Vec::new();
    for name in names {
        match known.iter().find(|(i, _)| &i.name == name) {
            Some((i, _)) => out.push(i.clone()),
            None => {
                let list: Vec<_> = known.iter().map(|(i, _)| i.name.as_str()).collect();
                bail!("unknown interface {name:?} (this host has: {})", list.join(", "));
            }
        }
    }
    Ok(out)
}

/// Those of `names` that exist now (for following named interfaces that
/// come and go).
pub fn existing(names: &[String]) -> Result<Vec<Interface>> {
    Ok(all()?.into_iter().map(|(i, _)| i).filter(|i| names.contains(&i.name)).collect())
}

/// The driver behind an interface, or None for virtual ones without one.
pub fn driver(name: &str) -> Option<String> {
    let link = fs::read_link(Path::new("/sys/class/net").join(name).join("device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Every interface, up or not.
pub fn every() -> Result<Vec<(Interface, bool)>> {
    all()
}
