//! The real `sbc-shim` binary: ready line, /healthz, /metrics, SIGTERM, bad config.

#[path = "../../tests-common/service.rs"]
mod service;

#[test]
fn serve_admin_shutdown_and_config_errors() {
    // Any free port for SIP: the embedded default (127.0.0.1:5060) may be taken.
    service::check_service_binary(
        env!("CARGO_BIN_EXE_sbc-shim"),
        "SBC_SHIM",
        &[("SBC_SHIM__SIP__LISTEN", "127.0.0.1:0")],
    );
}
