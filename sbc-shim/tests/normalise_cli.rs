//! `sbc-shim normalise` as an operator runs it: results with the rules that matched,
//! refusals with their status and reason, exit 1 when any number is refused, and a
//! bad rule file refused whole with the file, rule and field named.

use std::process::Command;

fn sbc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sbc-shim"))
}

#[test]
fn prints_results_and_refusals() {
    let out = sbc()
        .args(["normalise", "01 42 68 53 00", "014268"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("01 42 68 53 00\t+33142685300\tclass=national\t"),
        "{text}"
    );
    assert!(
        lines[0].contains("rules=separators,national") && lines[0].ends_with("[fr-2026.11.1]"),
        "{text}"
    );
    assert!(
        lines[1].contains("refused 484") && lines[1].contains("national-incomplete"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));

    let out = sbc().args(["normalise", "112"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("class=emergency\tpriority"));
}

#[test]
fn custom_rules_and_bad_rules() {
    let dir = std::env::temp_dir().join(format!("sbc-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("lab.toml");
    std::fs::write(&good, "version = \"lab-7\"\n[[rule]]\nname = \"four-digit-extension\"\nregex = '^[2-5][0-9]{3}$'\nadd = \"+3314268\"\n").expect("write");
    let out = sbc()
        .args(["normalise", "--rules"])
        .arg(&good)
        .arg("5300")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+33142685300") && text.contains("[lab-7]"),
        "{text}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "version = \"x\"\n[[rule]]\nname = \"broken\"\nregex = \"0(\"\n",
    )
    .expect("write");
    let out = sbc()
        .args(["normalise", "--rules"])
        .arg(&bad)
        .arg("0142685300")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml") && err.contains("rule 1 (broken) `regex`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
