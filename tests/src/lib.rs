//! Helpers for the privileged integration tests.
//!
//! Network safety (CONTRIBUTING.md): all traffic runs between namespaces the
//! test creates (client and server each in its own, never the root one),
//! joined by veth, addressed from 198.18.0.0/15, with no default route, and
//! deleted when the test ends, even when it fails.

pub mod agent;
pub mod bench_object;
pub mod capture;
pub mod cases;
pub mod detect;
pub mod dispatcher;
pub mod fixtures;
pub mod metrics;
pub mod netns;
pub mod packet;
pub mod prometheus;
pub mod tester;
