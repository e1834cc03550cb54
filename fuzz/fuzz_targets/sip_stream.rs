//! Any byte stream, cut anywhere: the stream framer never panics or loops.
#![no_main]

use floorwire::sip::framing::StreamFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let mut framer = StreamFramer::new();
    for chunk in [&data[..cut], &data[cut..]] {
        framer.push(chunk);
        while let Ok(Some(message)) = framer.next_message() {
            let _ = floorwire::sip::ingress::parse_message(&message);
        }
    }
});
