//! The carrier stand-in: the far side of the SBC's trunk. It answers every call (180,
//! 200 with an SDP answer, 200 to BYE) and serves its admin port (`/metrics`,
//! `/healthz`).

use std::net::SocketAddr;

use floorwire::service::admin::Health;
use floorwire::sip::answerer::Answerer;
use floorwire::sip::udp::{UdpConfig, run_udp};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Where the carrier listens.
#[derive(Debug, Clone)]
pub struct CarrierOptions {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    /// Media address announced in SDP answers.
    pub media: SocketAddr,
}

/// Serves the carrier until `shutdown`; `ready` gets `(admin, sip)` once both are bound.
pub async fn serve(
    options: CarrierOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<(), Error> {
    let socket = tokio::net::UdpSocket::bind(options.sip)
        .await
        .map_err(|e| Error::Lab(format!("carrier SIP {}: {e}", options.sip)))?;
    let sip = socket.local_addr()?;
    let health = Health::default();
    let registry = prometheus::Registry::new();
    let metrics = floorwire::sip::metrics::SipMetrics::register(&registry)
        .map_err(|e| Error::Lab(format!("carrier metrics: {e}")))?;
    let (admin, admin_serving) =
        floorwire::service::admin::serve(options.admin, registry, health.clone(), shutdown.clone())
            .await?;
    health.set_ready(true);
    ready(admin, sip);
    let answerer = Answerer::new(format!("sip:carrier@{sip}"), options.media);
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
