//! The real `tss` binary: ready line, /healthz, /metrics, SIGTERM, bad config.

#[path = "../../tests-common/service.rs"]
mod service;

#[test]
fn serve_admin_shutdown_and_config_errors() {
    let dir = std::env::temp_dir().join(format!("floorwire-tss-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.join("tss.sqlite3").display());
    service::check_service_binary(
        env!("CARGO_BIN_EXE_tss"),
        "TSS",
        &[
            ("TSS__API__LISTEN", "127.0.0.1:0"),
            ("TSS__STORE__URL", &url),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
