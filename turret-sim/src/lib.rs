//! Turret simulator: simulated turrets, carrier and recorders, the lab launcher, the
//! scenario runner and the load generator (issue 6 builds most of these).
//!
//! What exists so far: [`answer`], an answering SIP endpoint (the carrier stand-in and
//! SIPp's peer), and [`lab`], which starts what exists on the lab addresses of
//! DESIGN.md and writes `lab.json`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use floorwire::service::admin::Health;
use floorwire::sip::answerer::Answerer;
use floorwire::sip::udp::{UdpConfig, run_udp};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Lab address of the carrier stand-in (DESIGN.md, lab topology).
pub const LAB_CARRIER_SIP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)), 5060);
/// Its admin port.
pub const LAB_CARRIER_ADMIN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)), 9100);
/// Media address the carrier stand-in announces.
pub const LAB_CARRIER_MEDIA: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1)), 20000);

/// Runs an answering UAS on `sip` until `shutdown`; media is announced at `media`.
pub async fn answer(
    sip: SocketAddr,
    media: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), floorwire::Error> {
    let socket = tokio::net::UdpSocket::bind(sip).await?;
    let bound = socket.local_addr()?;
    tracing::info!(%bound, "answering SIP calls");
    let answerer = Answerer::new(format!("sip:answer@{bound}"), media);
    let stats = run_udp(socket, UdpConfig::default(), answerer, shutdown).await?;
    tracing::info!(?stats, "answerer stopped");
    Ok(())
}

/// Starts the lab (so far: the carrier stand-in with its admin port), writes
/// `lab.json` into `dir` and reports its path through `ready` once every service is up.
pub async fn lab(
    dir: &Path,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Path),
) -> Result<(), floorwire::Error> {
    let sip = LAB_CARRIER_SIP;
    let admin = LAB_CARRIER_ADMIN;
    let socket = tokio::net::UdpSocket::bind(sip).await.map_err(|e| {
        floorwire::Error::Io(std::io::Error::new(
            e.kind(),
            format!("carrier SIP {sip}: {e}"),
        ))
    })?;
    let health = Health::default();
    let registry = prometheus::Registry::new();
    let metrics = floorwire::sip::metrics::SipMetrics::register(&registry)
        .map_err(|e| floorwire::Error::Io(std::io::Error::other(e.to_string())))?;
    let (admin_addr, admin_serving) =
        floorwire::service::admin::serve(admin, registry, health.clone(), shutdown.clone()).await?;
    let lab_json = json!({
        "services": {
            "carrier": {"kind": "carrier", "dc": "dc1", "endpoints": {"sip": sip.to_string(), "admin": admin_addr.to_string()}},
        },
        "users": [],
        "carrier": {"sip": sip.to_string(), "dids": []},
    });
    std::fs::create_dir_all(dir)?;
    let path: PathBuf = dir.join("lab.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&lab_json).unwrap_or_default(),
    )?;
    health.set_ready(true);
    ready(&path);
    let answerer = Answerer::new(format!("sip:carrier@{sip}"), LAB_CARRIER_MEDIA);
    let (sip_result, admin_result) = tokio::join!(
        run_udp(
            socket,
            UdpConfig {
                metrics: Some(metrics),
                ..UdpConfig::default()
            },
            answerer,
            shutdown.clone()
        ),
        admin_serving
    );
    sip_result?;
    admin_result?;
    Ok(())
}
