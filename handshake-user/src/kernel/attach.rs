//! Which interfaces the programs are attached to, with which counter slot,
//! and through which links; kept in step with the host as interfaces come
//! and go.
//!
//! With a pin directory, every link is pinned under `DIR/links`, so the
//! programs stay attached while the agent is down, and a restarted agent
//! swaps its own programs into those links instead of attaching anew.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{TcAttachType, tc::SchedClassifierLink, xdp::XdpLink};
use handshake_common::counters::{IFACE_SLOTS, MAX_IFINDEX, OTHER_IFACE_SLOT};

use crate::{
    cli::{IngressHook, XdpMode},
    ingress,
    interfaces::{self, Interface},
    probe::{IngressLink, Probe},
};

/// The kinds of link, as their pin files name them.
const XDP: &str = "xdp";
const TC_INGRESS: &str = "tc-ingress";
const TC_EGRESS: &str = "tc";

/// A link we hold. Dropping it closes our fd: that detaches the program
/// unless a pin file still refers to the link.
#[expect(
    dead_code,
    reason = "each link is held for its Drop, which closes its fd"
)]
enum Link {
    Xdp(XdpLink),
    Tc(SchedClassifierLink),
    Pinned(PinnedLink),
}

struct Held {
    #[expect(dead_code, reason = "held for its Drop, which closes the link's fd")]
    link: Link,
    /// The pin file, for links we pinned or adopted.
    pin: Option<PathBuf>,
}

struct Attached {
    index: u32,
    slot: u32,
    links: Vec<Held>,
}

pub struct Attachments {
    links_dir: Option<PathBuf>,
    hook: IngressHook,
    mode: XdpMode,
    egress: bool,
    attached: BTreeMap<String, Attached>,
    /// Slots found in the pinned `IFACES` map at start: ifindex -> slot.
    inherited: BTreeMap<u32, u32>,
}

impl Attachments {
    pub fn new(
        probe: &Probe,
        pin_dir: Option<&Path>,
        hook: IngressHook,
        mode: XdpMode,
        egress: bool,
    ) -> Result<Self> {
        let links_dir = match pin_dir {
            Some(dir) => {
                let d = dir.join("links");
                fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
                Some(d)
            }
            None => None,
        };
        let inherited = probe.iface_slots()?.into_iter().collect();
        Ok(Self {
            links_dir,
            hook,
            mode,
            egress,
            attached: BTreeMap::new(),
            inherited,
        })
    }

    /// (slot, interface name) for every interface with its own slot, and
    /// (0, "other") if some interface counts in slot 0.
    pub fn labels(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = self
            .attached
            .iter()
            .filter(|(_, a)| a.slot != OTHER_IFACE_SLOT)
            .map(|(n, a)| (a.slot, n.clone()))
            .collect();
        if self.attached.values().any(|a| a.slot == OTHER_IFACE_SLOT) {
            out.push((OTHER_IFACE_SLOT, crate::exposition::OTHER_IFACE.to_owned()));
        }
        out
    }

    pub fn names(&self) -> Vec<String> {
        self.attached.keys().cloned().collect()
    }

    fn pin_path(&self, iface: &Interface, kind: &str) -> Option<PathBuf> {
        self.links_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}-{kind}", iface.index, iface.name)))
    }

    fn free_slot(&self) -> Option<u32> {
        let used: BTreeSet<u32> = self
            .attached
            .values()
            .map(|a| a.slot)
            .chain(self.inherited.values().copied())
            .collect();
        (1..IFACE_SLOTS).find(|s| !used.contains(s))
    }

    /// Attaches to `iface` (adopting pinned links where they exist) and gives
    /// it a counter slot.
    pub fn attach(&mut self, probe: &mut Probe, iface: &Interface) -> Result<()> {
        let mut links = vec![self.ingress_link(probe, iface)?];
        // lo's ingress already sees every packet the host sends to itself;
        // TC egress there would see each a second time.
        if self.egress && !iface.loopback {
            links.push(self.egress_link(probe, iface)?);
        }
        let slot = if iface.index >= MAX_IFINDEX {
            log::warn!(
                "{}: ifindex {} is past {MAX_IFINDEX}: counted as iface=\"other\"",
                iface.name,
                iface.index
            );
            OTHER_IFACE_SLOT
        } else if let Some(slot) = self.inherited.remove(&iface.index) {
            slot // a restarted agent: the counters continue
        } else if let Some(slot) = self.free_slot() {
            probe.zero_iface_slot(slot)?;
            probe.set_iface_slot(iface.index, slot)?;
            slot
        } else {
            log::warn!(
                "{}: all {IFACE_SLOTS} interface slots are taken: counted as iface=\"other\"",
                iface.name
            );
            OTHER_IFACE_SLOT
        };
        self.attached.insert(
            iface.name.clone(),
            Attached {
                index: iface.index,
                slot,
                links,
            },
        );
        Ok(())
    }

    /// The ingress link: a pinned one adopted on whichever hook it is (a
    /// restarted agent keeps observing without a gap, whatever it would
    /// choose now), else a new one where [`ingress::plan`] says.
    fn ingress_link(&self, probe: &mut Probe, iface: &Interface) -> Result<Held> {
        for kind in [XDP, TC_INGRESS] {
            if let Some(path) = self.pin_path(iface, kind).filter(|p| p.exists()) {
                return adopt(probe, kind, path);
            }
        }
        let skb_only = iface.loopback || interfaces::driver(&iface.name).as_deref() == Some("veth");
        let plan = ingress::plan(self.hook, self.mode, skb_only);
        let link = probe.attach_ingress(iface, plan)?;
        log::info!("{}: ingress on {}", iface.name, link.describe());
        let (kind, fd): (&str, Result<FdLink, _>) = match link {
            IngressLink::Xdp(link, _) => {
                if self.links_dir.is_none() {
                    return Ok(Held {
                        link: Link::Xdp(link),
                        pin: None,
                    });
                }
                (
                    XDP,
                    link.try_into()
                        .context("this kernel has no XDP links to pin"),
                )
            }
            IngressLink::Tc(link) => {
                if self.links_dir.is_none() {
                    return Ok(Held {
                        link: Link::Tc(link),
                        pin: None,
                    });
                }
                (
                    TC_INGRESS,
                    link.try_into()
                        .context("this kernel has no TCX links to pin"),
                )
            }
        };
        pin(fd?, self.pin_path(iface, kind).unwrap_or_default())
    }

    /// The egress link: the pinned one adopted, or a new one.
    fn egress_link(&self, probe: &mut Probe, iface: &Interface) -> Result<Held> {
        let path = self.pin_path(iface, TC_EGRESS);
        if let Some(path) = path.as_ref().filter(|p| p.exists()) {
            return adopt(probe, TC_EGRESS, path.clone());
        }
        let link = probe.attach_egress(iface)?;
        match path {
            None => Ok(Held {
                link: Link::Tc(link),
                pin: None,
            }),
            Some(path) => pin(
                link.try_into()
                    .context("this kernel has no TCX links to pin")?,
                path,
            ),
        }
    }

    /// Detaches from `name` (gone, or no longer wanted): unpins its links and
    /// returns its slot to the pool.
    pub fn detach(&mut self, probe: &mut Probe, name: &str) {
        let Some(a) = self.attached.remove(name) else {
            return;
        };
        for held in a.links {
            // Without its pin file, dropping our fd destroys the link.
            if let Some(path) = &held.pin {
                let _ = fs::remove_file(path);
            }
            drop(held);
        }
        if a.slot != OTHER_IFACE_SLOT && a.index < MAX_IFINDEX {
            let _ = probe.set_iface_slot(a.index, OTHER_IFACE_SLOT);
        }
    }

    /// Brings the attachments in line with `wanted`: detaches from
    /// interfaces that went away (or changed ifindex), attaches to new ones.
    pub fn reconcile(&mut self, probe: &mut Probe, wanted: &[Interface]) {
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(name, a)| {
                !wanted
                    .iter()
                    .any(|w| &w.name == *name && w.index == a.index)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            log::info!("{name} went away: detached");
            self.detach(probe, &name);
        }
        for iface in wanted {
            if self.attached.contains_key(&iface.name) {
                continue;
            }
            match self.attach(probe, iface) {
                Ok(()) => log::info!("{} appeared: attached", iface.name),
                Err(e) => log::warn!("{}: {e:#}", iface.name),
            }
        }
    }

    /// Forgets what an agent stopped while interfaces went away left behind:
    /// their pins, and their counter slots (else every restart on a host
    /// with churning interfaces would leak slots until new interfaces all
    /// fell into iface="other"). A slot is kept only for an interface that
    /// still exists under the same index and name, known by its pins.
    pub fn prune_stale(&mut self, probe: &mut Probe, existing: &[Interface]) {
        let mut alive_indexes = BTreeSet::new();
        if let Some(dir) = &self.links_dir
            && let Ok(entries) = fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let index: Option<u32> = name.split('-').next().and_then(|i| i.parse().ok());
                let alive = existing.iter().find(|i| {
                    Some(i.index) == index && name.starts_with(&format!("{}-{}-", i.index, i.name))
                });
                match alive {
                    Some(i) => {
                        alive_indexes.insert(i.index);
                    }
                    None => {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        let stale: Vec<u32> = self
            .inherited
            .keys()
            .copied()
            .filter(|index| !alive_indexes.contains(index))
            .collect();
        for index in stale {
            self.inherited.remove(&index);
            if let Err(e) = probe.set_iface_slot(index, OTHER_IFACE_SLOT) {
                log::warn!("releasing the counter slot of ifindex {index}: {e:#}");
            }
        }
    }
}

/// Points the pinned link of `kind` at `path` at this agent's program.
fn adopt(probe: &mut Probe, kind: &str, path: PathBuf) -> Result<Held> {
    let pinned = PinnedLink::from_pin(&path)
        .with_context(|| format!("cannot open pinned link {}", path.display()))?;
    let fd = FdLink::from(pinned);
    let not_ours = || format!("{} is not a link this agent pinned", path.display());
    let link = match kind {
        XDP => Link::Xdp(probe.adopt_xdp_ingress(fd).with_context(not_ours)?),
        TC_INGRESS => Link::Tc(
            probe
                .adopt_tc(TcAttachType::Ingress, fd)
                .with_context(not_ours)?,
        ),
        _ => Link::Tc(
            probe
                .adopt_tc(TcAttachType::Egress, fd)
                .with_context(not_ours)?,
        ),
    };
    Ok(Held {
        link,
        pin: Some(path),
    })
}

/// Pins a new link at `path`: it then outlives this agent.
fn pin(fd: FdLink, path: PathBuf) -> Result<Held> {
    let pinned = fd
        .pin(&path)
        .with_context(|| format!("cannot pin {}", path.display()))?;
    Ok(Held {
        link: Link::Pinned(pinned),
        pin: Some(path),
    })
}
