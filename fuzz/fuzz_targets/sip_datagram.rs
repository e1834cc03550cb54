//! Any datagram: ingress never panics, and whatever it answers parses back.
#![no_main]

use floorwire::sip::ingress::{Inbound, parse_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_datagram(data) {
        Ok(Inbound::Request(r)) => {
            let _ = floorwire::sip::MessageIds::of(&r);
            let _ = parse_datagram(&r.to_bytes());
        }
        Ok(Inbound::Response(r)) => {
            let _ = parse_datagram(&r.to_bytes());
        }
        Ok(Inbound::KeepAlive) => {}
        Err(rejection) => {
            if let Some(response) = rejection.response() {
                let _ = parse_datagram(&response.to_bytes());
            }
        }
    }
});
