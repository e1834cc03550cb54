//! Trunk policy over the wire: with one concurrent call allowed on the carrier trunk,
//! a second call gets 503 while the first is up, an emergency call still passes, and a
//! new call passes once the first has ended.

mod common;
#[path = "../../tests-common/service.rs"]
mod service;

use common::{Carrier, STANDALONE, Uac, sbc_config, write_scratch};
use floorwire::sip::msg::Method;

#[test]
fn concurrency_limit_refuses_503_but_never_emergency_calls() {
    let carrier = Carrier::start("127.0.11.3:5060", "127.0.11.3:30000");
    let config = sbc_config(
        "127.0.11.30:9200",
        "127.0.11.30:5060",
        "127.0.11.3:5060",
        "127.0.11.21:5060",
        (26000, 26999),
        None,
        STANDALONE,
    )
    .replace("max_concurrent_calls = 500", "max_concurrent_calls = 1");
    assert!(config.contains("max_concurrent_calls = 1\n"));
    let path = write_scratch("limits.toml", &config);
    let sbc = service::start_with_args(
        env!("CARGO_BIN_EXE_sbc-shim"),
        &["serve", "--config", &path],
        &[],
    );
    let target = "127.0.11.30:5060".parse().expect("addr");
    let media = "127.0.11.21:40000".parse().expect("addr");
    let mut tpo = Uac::bind("127.0.11.21:0");
    let mut first = tpo
        .call(target, "0142685300", "0140000000", media)
        .expect("first call");
    assert_eq!(
        tpo.call(target, "0142685301", "0140000000", media).err(),
        Some(503)
    );
    let mut emergency = tpo
        .call(target, "112", "0140000000", media)
        .expect("112 always passes");
    assert_eq!(tpo.in_dialog(&mut emergency, Method::Bye, None), 200);
    assert_eq!(tpo.in_dialog(&mut first, Method::Bye, None), 200);
    let mut again = tpo
        .call(target, "0142685301", "0140000000", media)
        .expect("room again");
    assert_eq!(tpo.in_dialog(&mut again, Method::Bye, None), 200);
    assert_eq!(carrier.stats().calls_answered, 3);
    assert!(service::terminate(sbc).success());
}
