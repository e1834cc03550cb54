//! The SBC pair keeps calls through a failover: N calls established through the
//! active with RTP flowing, the active killed (SIGKILL), the standby takes the service
//! address over; media keeps flowing (gap measured), a re-INVITE and every BYE are
//! handled by the new active and reach the carrier.

mod common;
#[path = "../../tests-common/service.rs"]
mod service;

use std::time::{Duration, Instant};

use common::{Carrier, Streams, Uac, sbc_config, write_scratch};
use floorwire::sdp;
use floorwire::sip::msg::Method;

const BIN: &str = env!("CARGO_BIN_EXE_sbc-shim");
const SERVICE: &str = "127.0.5.30:5060";
const CARRIER: &str = "127.0.5.3:5060";
const CARRIER_MEDIA: &str = "127.0.5.3:30000";
const TPO_IP: &str = "127.0.5.21";
const CALLS: usize = 20;

fn node(name: &str, own: &str, peer: &str) -> service::Service {
    let ha = format!(
        "mode = \"pair\"\nnode = \"{name}\"\nlisten = \"{own}:5070\"\npeer = \"{peer}:5070\"\n\
heartbeat_ms = 50\ndead_after_ms = 300"
    );
    let config = sbc_config(
        &format!("{own}:9200"),
        SERVICE,
        CARRIER,
        &format!("{TPO_IP}:5060"),
        (21000, 21999),
        None,
        &ha,
    );
    let path = write_scratch(&format!("{name}.toml"), &config);
    service::start_with_args(BIN, &["serve", "--config", &path], &[])
}

fn gauge(svc: &service::Service, name: &str) -> f64 {
    service::metric(svc.admin, name).unwrap_or(-1.0)
}

#[test]
fn established_calls_survive_the_loss_of_the_active() {
    let carrier = Carrier::start(CARRIER, CARRIER_MEDIA);
    let mut active = node("sbc-a", "127.0.5.31", "127.0.5.32");
    service::wait_until(Duration::from_secs(10), "sbc-a active", || {
        gauge(&active, "floorwire_sbc_ha_active") == 1.0
    });
    let standby = node("sbc-b", "127.0.5.32", "127.0.5.31");
    assert_eq!(
        gauge(&standby, "floorwire_sbc_ha_active"),
        0.0,
        "second node stands by"
    );

    let service_addr = SERVICE.parse().expect("addr");
    let mut uac = Uac::bind(&format!("{TPO_IP}:0"));
    let (mut streams, media) = Streams::bind(TPO_IP, CALLS);
    let mut calls = Vec::new();
    let setup = Instant::now();
    for (i, local_media) in media.iter().enumerate() {
        let call = uac
            .call(service_addr, "01.42.68.53.00", "0140000000", *local_media)
            .unwrap_or_else(|status| panic!("call {i} refused: {status}"));
        let anchor = sdp::audio_endpoint(&call.answer).expect("anchored media");
        assert_eq!(
            anchor.ip().to_string(),
            "127.0.5.30",
            "media anchored on the service address"
        );
        streams.set_remote(i, anchor);
        calls.push(call);
    }
    eprintln!("{CALLS} calls set up in {:?}", setup.elapsed());
    assert_eq!(carrier.stats().calls_answered, CALLS as u64);
    service::wait_until(
        Duration::from_secs(5),
        "the standby's copy of the table",
        || gauge(&standby, "floorwire_sbc_ha_replicated_calls") == CALLS as f64,
    );
    streams.run_for(Duration::from_millis(600));
    for (i, arrivals) in streams.arrivals.iter().enumerate() {
        assert!(
            arrivals.len() > 10,
            "stream {i} echoed through the active: {}",
            arrivals.len()
        );
    }

    // Kill the active outright: no goodbye on the link.
    let killed_at = Instant::now();
    active.child.kill().expect("kill the active");
    let _ = active.child.wait();
    streams.run_for(Duration::from_millis(2500));
    let window_end = Instant::now();
    assert_eq!(
        gauge(&standby, "floorwire_sbc_ha_active"),
        1.0,
        "the standby took over"
    );
    assert_eq!(
        gauge(&standby, "floorwire_sbc_calls_restored_total"),
        CALLS as f64
    );
    let mut gaps: Vec<Duration> = (0..CALLS)
        .map(|i| streams.longest_gap(i, killed_at, window_end))
        .collect();
    gaps.sort();
    let median = gaps[CALLS / 2];
    let worst = gaps[CALLS - 1];
    eprintln!("media gap over the failover: median {median:?}, worst {worst:?} ({CALLS} calls)");
    assert!(
        worst < Duration::from_secs(1),
        "media gap {worst:?} (target < 1 s)"
    );

    // In-dialog requests reach the carrier through the new active.
    let hold = sdp::offer(&[floorwire::sdp::Codec::Pcma], media[0], 2);
    let mut hold = hold;
    sdp::hold(&mut hold);
    let status = uac.in_dialog(&mut calls[0], Method::Invite, Some(sdp::to_bytes(&hold)));
    assert_eq!(status, 200, "re-INVITE (hold) after the failover");
    for (i, call) in calls.iter_mut().enumerate() {
        let status = uac.in_dialog(call, Method::Bye, None);
        assert_eq!(status, 200, "BYE of call {i} through the standby");
    }
    service::wait_until(
        Duration::from_secs(5),
        "every call ended at the carrier",
        || carrier.stats().calls_ended == CALLS as u64,
    );
    assert_eq!(gauge(&standby, "floorwire_sbc_calls_active"), 0.0);
    assert_eq!(
        gauge(&standby, "floorwire_sbc_calls_ended_total"),
        CALLS as f64
    );
    let status = service::terminate(standby);
    assert!(status.success(), "{status:?}");
}
