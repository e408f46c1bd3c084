//! Maps already pinned where the agent is to pin its own: checked against
//! this agent's object before anything is loaded.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::MapData;
use handshake_common::{map_names, table::WAYS};

use super::probe::OBJECT;

/// Checks the maps already pinned at `pins` against this agent's object
/// before anything is loaded: another program's or another version's map
/// there once made the verifier reject the programs with a page-long log.
pub fn check_pins(pins: &[(&str, PathBuf)], buckets: u32) -> Result<()> {
    if pins.iter().all(|(_, p)| !p.exists()) {
        return Ok(());
    }
    let object = aya_obj::Object::parse(OBJECT).context("cannot parse the eBPF object")?;
    replace_earlier_flow_table(pins)?;
    for (name, path) in pins.iter().filter(|(_, p)| p.exists()) {
        let Some(ours) = object.maps.get(*name) else {
            continue;
        };
        let dir = path.parent().and_then(Path::parent).unwrap_or(path);
        let advice = format!(
            "remove them with `handshake-monitor cleanup --pin-path {}`, or use another --pin-path",
            dir.display()
        );
        let pinned = MapData::from_pin(path)
            .map_err(|e| anyhow!("{} is not a BPF map ({e}): {advice}", path.display()))?;
        let info = pinned.info()?;
        let entries = if *name == map_names::FLOWS {
            buckets
        } else {
            ours.max_entries()
        };
        let theirs = (
            info.map_type().map_or(u32::MAX, |t| t as u32),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let want = (ours.map_type(), ours.key_size(), ours.value_size(), entries);
        if theirs != want {
            if *name == map_names::FLOWS && theirs.0 == want.0 && theirs.2 == want.2 {
                bail!(
                    "the pinned flow table holds {} flows, --flow-table-size asks for {}: use the same size, or {advice}",
                    info.max_entries() as usize * WAYS,
                    buckets as usize * WAYS
                );
            }
            bail!(
                "the pinned map {} is not this agent's (type, key, value, entries {theirs:?}, expected {want:?}): another program's or another version's pins; {advice}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Value size of the flow table's buckets before two-choice placement: four
/// ways of a tag, a key and a state.
const EARLIER_BUCKET_SIZE: u32 = 4 * (8 + 40 + 56);

/// An upgrade from a version whose flow table had four-way buckets: its
/// pinned table (and the pending filter counted from it) cannot be read by
/// these programs, and holds only handshakes of the last seconds. Their pins
/// go, with a warning; the counters and everything else carry over.
fn replace_earlier_flow_table(pins: &[(&str, PathBuf)]) -> Result<()> {
    let path_of = |name: &str| pins.iter().find(|(n, _)| *n == name).map(|(_, p)| p);
    let Some(flows) = path_of(map_names::FLOWS).filter(|p| p.exists()) else {
        return Ok(());
    };
    let Ok(pinned) = MapData::from_pin(flows) else {
        // Not a map: check_pins says so.
        return Ok(());
    };
    let info = pinned.info()?;
    let array = aya::maps::MapType::Array as u32;
    if info.map_type().map_or(u32::MAX, |t| t as u32) != array
        || info.value_size() != EARLIER_BUCKET_SIZE
    {
        return Ok(());
    }
    for name in [map_names::FLOWS, map_names::PENDING] {
        if let Some(path) = path_of(name).filter(|p| p.exists()) {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    log::warn!(
        "{}: a flow table of an earlier version (four-way buckets) was replaced with a new one: handshakes in progress at the upgrade are not followed; counters carry over",
        flows.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's object carries its programs and maps only: the
    /// benchmarks' are built into their own object (tests/build.rs).
    #[test]
    fn the_agents_object_has_no_benchmark_program() {
        let object = aya_obj::Object::parse(OBJECT).expect("parse");
        let mut programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        assert_eq!(
            programs,
            vec![
                "handshake_egress",
                "handshake_expire",
                "handshake_ingress",
                "handshake_tc_ingress"
            ]
        );
        assert!(!object.maps.contains_key("BENCH_STEP"));
    }
}
