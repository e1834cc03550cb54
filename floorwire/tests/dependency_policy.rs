//! One rustls and one tokio across the tree (DEPENDENCIES.md: two of either means two
//! crypto providers or two runtimes, and the rustls provider panic).

#[test]
fn one_version_of_rustls_and_tokio() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("Cargo.lock");
    for name in ["rustls", "tokio", "rsipstack"] {
        let versions = lock.matches(&format!("\nname = \"{name}\"\n")).count();
        assert_eq!(versions, 1, "{name} appears {versions} times in Cargo.lock");
    }
}
