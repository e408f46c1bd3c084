//! Pinned state: restarts that lose nothing, one agent per pin directory,
//! cleanup that removes only its own pins, and nothing left without pins.

use handshake_tests::{
    agent::{Agent, assert_one_line_error, run_to_exit},
    fixtures::*,
    netns::{SERVER_IF, Topology},
};

/// With --pin-path, a stopped agent leaves the programs attached and its
/// maps pinned: connections made while it is down are counted, and the
/// restarted agent's counters continue. `cleanup` then removes everything.
/// The restarted agent runs with the default hooks: it adopts the pinned
/// ingress link, on XDP or TC, rather than attach a second one.
#[test]
fn restarts_with_pin_path_lose_nothing() {
    for (first_hook, attached) in [("tc", (false, 1, 1)), ("xdp", (true, 0, 1))] {
        let topo = Topology::new();
        let bpffs = BpfFs::new("restart");
        let pin = bpffs.pin_path();
        listen(&topo, 8080);
        let args = ["--iface", SERVER_IF, "--pin-path", pin.as_str()];
        let first = Agent::start(
            &topo.server,
            &[&args[..], &["--ingress-hook", first_hook]].concat(),
        );
        assert_eq!(hooks(&topo.server, SERVER_IF), attached, "{first_hook}");
        assert_eq!(
            v(
                &first.scrape(&topo.server),
                "tcp_handshake_completed_total",
                &[]
            ),
            0.0
        );
        connect_n(&topo, 8080, 10);
        assert_eq!(
            v(
                &first.scrape(&topo.server),
                "tcp_handshake_completed_total",
                &[("iface", SERVER_IF)]
            ),
            10.0
        );
        assert!(first.stop(), "clean exit on SIGTERM");
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            attached,
            "{first_hook}: pinned, both programs stay attached"
        );
        connect_n(&topo, 8080, 7); // nobody running
        let second = Agent::start(&topo.server, &args);
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            attached,
            "{first_hook}: adopted, not attached twice"
        );
        let e = second.scrape(&topo.server);
        assert_eq!(
            v(&e, "tcp_handshake_completed_total", &[("iface", SERVER_IF)]),
            17.0,
            "{first_hook}: counted while down, not reset"
        );
        connect_n(&topo, 8080, 5);
        let e = second.scrape(&topo.server);
        assert_eq!(
            v(&e, "tcp_handshake_completed_total", &[("iface", SERVER_IF)]),
            22.0,
            "{first_hook}"
        );
        assert_eq!(
            v(&e, "tcp_handshake_attempts_total", &[("iface", SERVER_IF)]),
            22.0,
            "{first_hook}"
        );
        assert!(second.stop());
        let out = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            hooks(&topo.server, SERVER_IF),
            (false, 0, 0),
            "{first_hook}: cleanup detaches everything"
        );
    }
}

/// `cleanup` removes only its own pins: a directory that is not on a BPF
/// filesystem is refused, and what is in it stays (it once removed every
/// file under DIR/maps and DIR/links, wherever DIR was).
#[test]
fn cleanup_refuses_what_is_not_its_pins() {
    let dir = std::env::temp_dir().join(format!("hm-cleanup-{}", std::process::id()));
    let files = [dir.join("maps/COUNTERS"), dir.join("links/2-eth0-tc")];
    for f in &files {
        std::fs::create_dir_all(f.parent().expect("parent")).expect("dir");
        std::fs::write(f, "not a pin").expect("file");
    }
    let out = run_to_exit(&[], &["cleanup", "--pin-path", &dir.to_string_lossy()], &[]);
    assert_one_line_error(&out, "is not on a BPF filesystem: not a --pin-path");
    for f in &files {
        assert!(f.exists(), "{} left alone", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pin directory is one agent's: a second agent on it is refused with one
/// line; a map there that is not this agent's (another program's, another
/// version's) is named, before the verifier is reached (it once answered
/// with a 355-line log and a misleading \"Permission denied\").
#[test]
fn a_pin_directory_is_one_agents_and_holds_only_its_maps() {
    let topo = Topology::new();
    let bpffs = BpfFs::new("owner");
    let pin = bpffs.pin_path();
    let args = ["run", "--iface", SERVER_IF, "--pin-path", pin.as_str()];
    let first = Agent::start(&topo.server, &args[1..]);
    let out = run_to_exit(&["ip", "netns", "exec", &topo.server.name], &args, &[]);
    assert_one_line_error(&out, "is in use by another handshake-monitor");
    assert!(first.stop());
    let cleanup = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
    assert!(cleanup.status.success());

    // Another map pinned under the name of ours.
    let probe = handshake_user::probe::Probe::load(&handshake_user::probe::LoadOptions::default())
        .expect("load");
    let maps = std::path::Path::new(&pin).join("maps");
    std::fs::create_dir_all(&maps).expect("maps dir");
    probe
        .ebpf()
        .map(handshake_common::map_names::LATENCY)
        .expect("LATENCY")
        .pin(maps.join(handshake_common::map_names::COUNTERS))
        .expect("pin");
    drop(probe);
    let out = run_to_exit(&["ip", "netns", "exec", &topo.server.name], &args, &[]);
    assert_one_line_error(&out, "maps/COUNTERS is not this agent's");
}

/// Without --pin-path nothing is left behind, on SIGTERM or SIGINT, with
/// ingress on TC (the default on veth) or on XDP.
#[test]
fn without_pin_path_exit_detaches_everything() {
    let topo = Topology::new();
    for (hook, attached) in [
        ("auto", (false, 1, 1)),
        ("xdp", (true, 0, 1)),
        ("tc", (false, 1, 1)),
    ] {
        for sigint in [false, true] {
            let agent = Agent::start(
                &topo.server,
                &["--iface", SERVER_IF, "--ingress-hook", hook],
            );
            assert_eq!(hooks(&topo.server, SERVER_IF), attached, "{hook}");
            let log_before = agent.log();
            assert!(
                if sigint {
                    agent.interrupt()
                } else {
                    agent.stop()
                },
                "clean exit ({hook}, sigint: {sigint}): {log_before}"
            );
            assert_eq!(
                hooks(&topo.server, SERVER_IF),
                (false, 0, 0),
                "{hook}: detached"
            );
        }
    }
}

/// Pins a flow table as versions before two-choice placement made it: an
/// array of 16384 four-way buckets (416 bytes each).
fn pin_earlier_flow_table(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_F_MMAPABLE: u32 = 1 << 10;
    let create = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4 * (8 + 40 + 56),
        max_entries: 16_384,
        map_flags: BPF_F_MMAPABLE,
    };
    // SAFETY: bpf(2) with an attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &raw const create,
            size_of::<MapCreate>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let pin = ObjPin {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: as above; `name` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &raw const pin,
            size_of::<ObjPin>(),
        )
    };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: our descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// An upgrade from a version with four-way buckets: its pinned flow table
/// cannot be read by these programs, so it is replaced, with a warning, and
/// the counters carry over.
#[test]
fn an_earlier_versions_flow_table_is_replaced_and_counters_carry_over() {
    let topo = Topology::new();
    let bpffs = BpfFs::new("upgrade");
    let pin = bpffs.pin_path();
    listen(&topo, 8080);
    let args = ["--iface", SERVER_IF, "--pin-path", pin.as_str()];
    let first = Agent::start(&topo.server, &args);
    connect_n(&topo, 8080, 10);
    assert_eq!(
        v(
            &first.scrape(&topo.server),
            "tcp_handshake_completed_total",
            &[("iface", SERVER_IF)]
        ),
        10.0
    );
    assert!(first.stop());
    let flows = std::path::Path::new(&pin)
        .join("maps")
        .join(handshake_common::map_names::FLOWS);
    std::fs::remove_file(&flows).expect("remove the pinned table");
    pin_earlier_flow_table(&flows);

    let second = Agent::start(&topo.server, &args);
    assert!(
        second.log().contains("a flow table of an earlier version"),
        "{}",
        second.log()
    );
    connect_n(&topo, 8080, 5);
    let e = second.scrape(&topo.server);
    assert_eq!(
        v(&e, "tcp_handshake_completed_total", &[("iface", SERVER_IF)]),
        15.0,
        "counted before the upgrade, and after it"
    );
    assert_eq!(
        e.sum("tcp_handshake_flow_table_capacity", &[]),
        f64::from(handshake_common::DEFAULT_FLOW_TABLE_SIZE)
    );
    assert!(second.stop());
    let out = run_to_exit(&[], &["cleanup", "--pin-path", &pin], &[]);
    assert!(out.status.success());
}
