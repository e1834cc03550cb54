//! What every Floorwire binary needs around its protocol code: TOML config with env
//! overrides, tracing, the admin HTTP port (`/metrics`, `/healthz`), graceful
//! shutdown, and one rustls crypto provider.

pub mod admin;
pub mod config;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
