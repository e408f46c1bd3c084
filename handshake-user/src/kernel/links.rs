//! The programs' links: attaching them to an interface, and adopting the
//! pinned links an earlier agent left.
use anyhow::{Context as _, Result, anyhow};
use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode, links::FdLink, tc::SchedClassifierLink,
    xdp::XdpLink,
};
use handshake_common::program_names::{TC_EGRESS, TC_INGRESS, XDP_INGRESS};

use super::probe::{Probe, program};
use crate::{
    ingress::{Fallback, IngressPlan},
    interfaces::Interface,
};

/// The ingress program's link, on whichever hook it went (for XDP, in the
/// mode it runs in).
pub enum IngressLink {
    Xdp(XdpLink, XdpMode),
    Tc(SchedClassifierLink),
}

impl IngressLink {
    /// Where the ingress program runs, in words: "TC", "XDP (native)", ...
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Xdp(_, mode) => crate::ingress::describe(IngressPlan::Xdp {
                mode: *mode,
                fallback: Fallback::None,
            }),
            Self::Tc(_) => crate::ingress::describe(IngressPlan::Tc),
        }
    }
}

fn direction_name(at: TcAttachType) -> &'static str {
    if at == TcAttachType::Ingress {
        "ingress"
    } else {
        "egress"
    }
}

/// Our TC program for a direction: the ingress program's TC twin, or the
/// egress program.
fn tc_program_name(at: TcAttachType) -> &'static str {
    if at == TcAttachType::Ingress {
        TC_INGRESS
    } else {
        TC_EGRESS
    }
}

impl Probe {
    /// Attaches the ingress program to `iface` as `plan` says; the link
    /// detaches when dropped, unless pinned.
    pub fn attach_ingress(&mut self, iface: &Interface, plan: IngressPlan) -> Result<IngressLink> {
        let (mode, fallback) = match plan {
            IngressPlan::Tc => {
                return self
                    .attach_tc(iface, TcAttachType::Ingress)
                    .map(IngressLink::Tc);
            }
            IngressPlan::Xdp { mode, fallback } => (mode, fallback),
        };
        let xdp = program::<Xdp>(&mut self.ebpf, XDP_INGRESS)?;
        let attached = match (xdp.attach_to_if_index(iface.index, mode), fallback) {
            (Ok(id), _) => Ok((id, mode)),
            // A driver with native XDP may still refuse it (virtio_net with
            // the host's GRO offloads on, too few queues, ...), and one
            // without it refuses driver mode; the kernel does not fall back
            // by itself.
            (Err(e), Fallback::Tc) => {
                log::info!("{}: native XDP refused ({e})", iface.name);
                return self
                    .attach_tc(iface, TcAttachType::Ingress)
                    .map(IngressLink::Tc);
            }
            (Err(e), Fallback::GenericXdp) => {
                log::info!("{}: native XDP refused ({e})", iface.name);
                xdp.attach_to_if_index(iface.index, XdpMode::Skb)
                    .map(|id| (id, XdpMode::Skb))
            }
            (Err(e), Fallback::None) => Err(e),
        };
        let (id, mode) = attached.map_err(|e| {
            let busy = matches!(&e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EBUSY));
            if busy {
                anyhow!("cannot attach XDP to {}: another XDP program is attached (a handshake-monitor run with --pin-path? `handshake-monitor cleanup --pin-path DIR` removes it)", iface.name)
            } else {
                anyhow::Error::new(e).context(format!("cannot attach XDP to {}", iface.name))
            }
        })?;
        Ok(IngressLink::Xdp(xdp.take_link(id)?, mode))
    }

    /// Attaches the egress (TC, TCX where the kernel has it) program to `iface`.
    pub fn attach_egress(&mut self, iface: &Interface) -> Result<SchedClassifierLink> {
        self.attach_tc(iface, TcAttachType::Egress)
    }

    fn attach_tc(&mut self, iface: &Interface, at: TcAttachType) -> Result<SchedClassifierLink> {
        let tc = program::<SchedClassifier>(&mut self.ebpf, tc_program_name(at))?;
        let id = tc.attach(&iface.name, at).with_context(|| {
            format!("cannot attach TC {} to {}", direction_name(at), iface.name)
        })?;
        Ok(tc.take_link(id)?)
    }

    /// Points an XDP link that outlived its agent (pinned) at this agent's
    /// program: one atomic swap, no packet unobserved.
    pub fn adopt_xdp_ingress(&mut self, link: FdLink) -> Result<XdpLink> {
        let xdp = program::<Xdp>(&mut self.ebpf, XDP_INGRESS)?;
        let id = xdp
            .attach_to_link(XdpLink::try_from(link)?)
            .context("cannot adopt the pinned XDP link")?;
        Ok(xdp.take_link(id)?)
    }

    /// As [`Probe::adopt_xdp_ingress`], for a TCX link: the ingress program's
    /// or the egress program's.
    pub fn adopt_tc(&mut self, at: TcAttachType, link: FdLink) -> Result<SchedClassifierLink> {
        let tc = program::<SchedClassifier>(&mut self.ebpf, tc_program_name(at))?;
        let id = tc
            .attach_to_link(SchedClassifierLink::try_from(link)?)
            .with_context(|| format!("cannot adopt the pinned TC {} link", direction_name(at)))?;
        Ok(tc.take_link(id)?)
    }
}
