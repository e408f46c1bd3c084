//! Which hook the ingress program goes on, per interface.
//!
//! XDP runs before the kernel builds an skb, which makes it the cheapest
//! place to see every frame a NIC receives, and the first to see a flood.
//! But where the driver has no native XDP, or on veth and lo, the packet is
//! an skb already, and XDP runs in generic (skb) mode: before the program
//! runs, the kernel copies every cloned skb into a fresh buffer with room
//! for XDP's headroom, and every TCP segment a host sends itself is a clone
//! (TCP keeps the original for retransmission). TC reads the same skb as it
//! is. So by default ingress goes on XDP only where the driver runs it
//! natively, and on TC everywhere else (B3 in BENCHMARKS.md).
use aya::programs::XdpMode;

use crate::cli::{IngressHook, XdpMode as XdpModeFlag};

/// What to do when the XDP attach is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    None,
    /// Try again in generic (skb) mode.
    GenericXdp,
    /// Attach on TC instead.
    Tc,
}

/// How the ingress program is attached to one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPlan {
    Xdp { mode: XdpMode, fallback: Fallback },
    Tc,
}

/// The plan for an interface from the two flags. `skb_only` is an
/// interface whose packets are skbs before any hook sees them: veth, lo.
#[must_use]
pub fn plan(hook: IngressHook, xdp_mode: XdpModeFlag, skb_only: bool) -> IngressPlan {
    match (hook, xdp_mode) {
        (IngressHook::Tc, _) => IngressPlan::Tc,
        (IngressHook::Auto, XdpModeFlag::Auto) if skb_only => IngressPlan::Tc,
        (IngressHook::Auto, XdpModeFlag::Auto) => IngressPlan::Xdp {
            mode: XdpMode::Driver,
            fallback: Fallback::Tc,
        },
        // An explicit XDP mode asks for XDP.
        (_, XdpModeFlag::Driver) => IngressPlan::Xdp {
            mode: XdpMode::Driver,
            fallback: Fallback::None,
        },
        (_, XdpModeFlag::Skb) => IngressPlan::Xdp {
            mode: XdpMode::Skb,
            fallback: Fallback::None,
        },
        // XDP wanted, mode left to us: on veth, native XDP turns every skb
        // into an XDP buffer (a copy, and NAPI on the peer), which costs more
        // than generic mode for a host's own traffic; elsewhere flags 0, the
        // kernel picks native where the driver has it.
        (IngressHook::Xdp, XdpModeFlag::Auto) if skb_only => IngressPlan::Xdp {
            mode: XdpMode::Skb,
            fallback: Fallback::None,
        },
        (IngressHook::Xdp, XdpModeFlag::Auto) => IngressPlan::Xdp {
            mode: XdpMode::Default,
            fallback: Fallback::GenericXdp,
        },
    }
}

/// A short name for logs: "XDP (native)", "TC".
#[must_use]
pub fn describe(plan: IngressPlan) -> &'static str {
    match plan {
        IngressPlan::Tc => "TC",
        IngressPlan::Xdp {
            mode: XdpMode::Driver,
            ..
        } => "XDP (native)",
        IngressPlan::Xdp {
            mode: XdpMode::Skb, ..
        } => "XDP (generic)",
        IngressPlan::Xdp { .. } => "XDP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_native_xdp_or_tc_never_generic_xdp() {
        assert_eq!(
            plan(IngressHook::Auto, XdpModeFlag::Auto, true),
            IngressPlan::Tc
        );
        assert_eq!(
            plan(IngressHook::Auto, XdpModeFlag::Auto, false),
            IngressPlan::Xdp {
                mode: XdpMode::Driver,
                fallback: Fallback::Tc
            }
        );
    }

    #[test]
    fn an_explicit_xdp_mode_means_xdp_in_that_mode() {
        for hook in [IngressHook::Auto, IngressHook::Xdp] {
            for skb_only in [false, true] {
                assert_eq!(
                    plan(hook, XdpModeFlag::Driver, skb_only),
                    IngressPlan::Xdp {
                        mode: XdpMode::Driver,
                        fallback: Fallback::None
                    }
                );
                assert_eq!(
                    plan(hook, XdpModeFlag::Skb, skb_only),
                    IngressPlan::Xdp {
                        mode: XdpMode::Skb,
                        fallback: Fallback::None
                    }
                );
            }
        }
    }

    #[test]
    fn xdp_with_auto_mode_is_generic_on_veth_and_lo_and_the_kernels_pick_elsewhere() {
        assert_eq!(
            plan(IngressHook::Xdp, XdpModeFlag::Auto, true),
            IngressPlan::Xdp {
                mode: XdpMode::Skb,
                fallback: Fallback::None
            }
        );
        assert_eq!(
            plan(IngressHook::Xdp, XdpModeFlag::Auto, false),
            IngressPlan::Xdp {
                mode: XdpMode::Default,
                fallback: Fallback::GenericXdp
            }
        );
    }

    #[test]
    fn tc_is_tc() {
        assert_eq!(
            plan(IngressHook::Tc, XdpModeFlag::Auto, false),
            IngressPlan::Tc
        );
        assert_eq!(
            plan(IngressHook::Tc, XdpModeFlag::Auto, true),
            IngressPlan::Tc
        );
    }
}
