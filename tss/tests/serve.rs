//! The real `tss` binary: ready line, /healthz, /metrics, SIGTERM, bad config.

#[path = "../../tests-common/service.rs"]
mod service;

#[test]
fn serve_admin_shutdown_and_config_errors() {
    service::check_service_binary(env!("CARGO_BIN_EXE_tss"), "TSS", &[]);
}
