//! `handshake-monitor run`: check, bind, load, attach, serve, and detach on
//! SIGINT/SIGTERM.
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use crate::{cli::RunArgs, exposition, http, interfaces, privileges, probe::{LoadOptions, Probe}};

pub fn run(args: RunArgs) -> Result<()> {
    anyhow::ensure!(args.telemetry_path.starts_with('/'), "--web.telemetry-path must start with '/': {:?}", args.telemetry_path);
    let explicit = !args.ifaces.is_empty();
    let targets = if explicit { interfaces::by_name(&args.ifaces)? } else { interfaces::up()? };
    anyhow::ensure!(!targets.is_empty(), "no interface is up to watch");
    privileges::check()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Bind before loading anything, so a busy port fails fast and clean.
        let listener = tokio::net::TcpListener::bind(args.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen_address))?;

        let options = LoadOptions { flow_table_size: args.flow_table_size, ..LoadOptions::default() };
        let mut probe = Probe::load(&options)?;
        let mut watched = Vec::new();
        for iface in &targets {
            let attached = probe.attach_ingress(iface, args.xdp_mode).and_then(|()| {
                // XDP on lo already sees every packet the host sends to
                // itself; TC egress there would see each a second time.
                if args.no_egress || iface.loopback { Ok(()) } else { probe.attach_egress(iface) }
            });
            match attached {
                Ok(()) => watched.push(iface.name.clone()),
                // An interface the operator named must work; one we picked
                // ourselves may be one XDP cannot serve.
                Err(err) if explicit => return Err(err),
                Err(err) => log::warn!("skipping {}: {err:#}", iface.name),
            }
        }
        anyhow::ensure!(!watched.is_empty(), "could not attach to any interface");
        log::info!(
            "watching {} (egress: {}); metrics at http://{}{}",
            watched.join(", "),
            if args.no_egress { "off" } else { "on" },
            args.listen_address,
            args.telemetry_path
        );

        let probe = Arc::new(Mutex::new(probe));
        let render: http::Render = Arc::new(move || {
            let probe = probe.lock().map_err(|_| anyhow!("probe lock poisoned"))?;
            let mut families = exposition::counter_families(&probe.counters()?, &[]);
            families.extend(exposition::latency_families(&probe.latency()?));
            families.push(exposition::build_info());
            exposition::encode(&families)
        });
        let server = tokio::spawn(http::serve(listener, args.telemetry_path.clone(), render));

        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => log::info!("SIGINT: detaching and exiting"),
            _ = term.recv() => log::info!("SIGTERM: detaching and exiting"),
        }
        server.abort();
        // Dropping the probe (with the render closure) detaches the programs.
        Ok(())
    })
}
