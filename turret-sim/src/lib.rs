//! Turret simulator: simulated turrets, carrier and recorders, the lab launcher, the
//! scenario runner and the load generator (issue 6 builds them step by step).
//!
//! - [`lab`]: `turret-sim lab`, the whole dual-DC lab as child processes, lab.json and
//!   the control port.
//! - [`carrier`]: the carrier stand-in (`turret-sim carrier`).
//! - [`recorder`]: the recorder stand-in (`turret-sim recorder`): SIPREC in, WAV and
//!   metadata out, search and replay over HTTP.
//! - [`turret`]: a simulated turret (FTPES login, registration, calls with tones).
//! - [`scenario`]: `turret-sim run`'s scenario language, runner and reports; [`cli`]
//!   around it.
//! - [`load`]: `turret-sim load`.
//! - [`answer`]: an answering SIP endpoint (SIPp's far end).
//! - [`https`]: the HTTP(S) client the lab and the scenarios use.

pub mod carrier;
pub mod cli;
pub mod error;
pub mod https;
pub mod lab;
pub mod load;
pub mod recorder;
pub mod scenario;
pub mod turret;

use std::net::SocketAddr;

use floorwire::sip::answerer::Answerer;
use floorwire::sip::udp::{UdpConfig, run_udp};
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// Runs an answering UAS on `sip` until `shutdown`; media is announced at `media`.
pub async fn answer(
    sip: SocketAddr,
    media: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let socket = tokio::net::UdpSocket::bind(sip).await?;
    let bound = socket.local_addr()?;
    tracing::info!(%bound, "answering SIP calls");
    let answerer = Answerer::new(format!("sip:answer@{bound}"), media);
    let stats = run_udp(socket, UdpConfig::default(), answerer, shutdown).await?;
    tracing::info!(?stats, "answerer stopped");
    Ok(())
}
