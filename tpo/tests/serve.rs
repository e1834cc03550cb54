//! The real `tpo` binary: ready line, /healthz, /metrics, SIGTERM, bad config.

#[path = "../../tests-common/service.rs"]
mod service;

#[test]
fn serve_admin_shutdown_and_config_errors() {
    let spool = std::env::temp_dir()
        .join(format!("floorwire-tpo-serve-{}", std::process::id()))
        .display()
        .to_string();
    service::check_service_binary(
        env!("CARGO_BIN_EXE_tpo"),
        "TPO",
        &[
            ("TPO__SIP__LISTEN", "127.0.0.1:0"),
            ("TPO__TSS__URL", "http://127.0.0.1:9"),
            ("TPO__TSS__TOKEN", "unused"),
            ("TPO__CALL_RECORDS__SPOOL_DIR", spool.as_str()),
        ],
    );
    let _ = std::fs::remove_dir_all(&spool);
}
