//! Login by LDAP bind against two real slapd (LDAPS and StartTLS): search-then-bind,
//! roles from a group, every injection string refused like a wrong password, failover
//! when the first directory dies, certificates checked; then the real binary behind it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

mod common;

use common::slapd::{self, Slapd};
use tss::Error;
use tss::directory::{Directory, LdapSection};
use tss::model::Role;

fn section(urls: Vec<String>, ca: &std::path::Path) -> LdapSection {
    LdapSection {
        urls,
        starttls: true,
        ca_file: ca.display().to_string(),
        bind_dn: String::new(),
        bind_password: String::new(),
        base_dn: format!("ou=people,{}", slapd::BASE),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".into(),
        user_attribute: "uid".into(),
        admin_group_dn: format!("cn=tss-admins,ou=groups,{}", slapd::BASE),
        timeout_secs: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_login_with_failover_and_injection_corpus() {
    if !slapd::available() {
        return;
    }
    floorwire::service::tls::install_crypto_provider();
    let dir = common::TempDir::new("ldap");
    let pki = slapd::pki(&dir.0, "a");
    let mut first = Slapd::start(&dir.0, "dir-a", &pki);
    let mut second = Slapd::start(&dir.0, "dir-b", &pki);
    // First over LDAPS, second over StartTLS.
    let directory = Directory::new(section(
        vec![first.ldaps.clone(), second.ldap.clone()],
        &pki.ca,
    ))
    .unwrap();

    let admin = directory
        .login("admin", "admin-pass")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((admin.name.as_str(), admin.role), ("admin", Role::Admin));
    let trader = directory
        .login("trader01", "t01-pass")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trader.role, Role::Trader);
    assert_eq!(directory.login("trader01", "wrong").await.unwrap(), None);
    assert_eq!(directory.login("nobody", "t01-pass").await.unwrap(), None);
    assert_eq!(
        directory.login("trader01", "").await.unwrap(),
        None,
        "RFC 4513 unauthenticated bind"
    );

    // Every corpus string, with the admin's real password and with a wrong one, is
    // refused exactly as a wrong password is (Ok(None)), never an error or a login.
    for (name, user) in slapd::corpus() {
        for password in ["admin-pass", "wrong"] {
            let answer = directory.login(&user, password).await;
            assert!(
                matches!(answer, Ok(None)),
                "{name} ({user:?}) with {password}: {answer:?}"
            );
        }
    }
    // A password with a NUL does not truncate into the right one.
    assert_eq!(
        directory
            .login("admin", "admin-pass\0ignored")
            .await
            .unwrap(),
        None
    );

    // The first directory dies: logins go on through the second (StartTLS).
    first.stop();
    let admin = directory
        .login("admin", "admin-pass")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(directory.login("admin", "wrong").await.unwrap(), None);

    // A directory whose certificate is not from the configured CA is not trusted.
    let other = slapd::pki(&dir.0, "other");
    let untrusting = Directory::new(section(vec![second.ldaps.clone()], &other.ca)).unwrap();
    assert!(matches!(
        untrusting.login("admin", "admin-pass").await,
        Err(Error::DirectoryUnavailable(_))
    ));

    // Both gone: the login cannot be answered (503 at the API), not "wrong password".
    second.stop();
    assert!(matches!(
        directory.login("admin", "admin-pass").await,
        Err(Error::DirectoryUnavailable(_))
    ));
}

#[test]
fn tss_binary_logs_admins_in_through_the_directory() {
    if !slapd::available() {
        return;
    }
    let dir = common::TempDir::new("ldap-bin");
    let pki = slapd::pki(&dir.0, "a");
    let mut directory = Slapd::start(&dir.0, "dir", &pki);
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("tss.sqlite3").display());
    let urls = format!("[\"{}\"]", directory.ldaps);
    let ca = pki.ca.display().to_string();
    let base = format!("ou=people,{}", slapd::BASE);
    let group = format!("cn=tss-admins,ou=groups,{}", slapd::BASE);
    let env = [
        ("TSS__STORE__URL", url.as_str()),
        ("TSS__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TSS__API__LISTEN", "127.0.0.1:0"),
        ("TSS__API__TLS", "false"),
        ("TSS__FTPES__LISTEN", "127.0.0.1:0"),
        ("TSS__LDAP__URLS", urls.as_str()),
        ("TSS__LDAP__CA_FILE", ca.as_str()),
        ("TSS__LDAP__BASE_DN", base.as_str()),
        ("TSS__LDAP__ADMIN_GROUP_DN", group.as_str()),
    ];
    let tss = service::start(env!("CARGO_BIN_EXE_tss"), &env);
    let api = service::ready_endpoint(&tss.ready, "api").unwrap();
    let get = |cred: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-u", cred])
            .arg(format!("http://{api}/api/users"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    assert_eq!(get("admin:admin-pass").0, "200");
    assert_eq!(get("trader01:t01-pass").0, "403");
    let wrong = get("trader02:wrong");
    assert_eq!(wrong.0, "401");
    let injected = get("*)(uid=*))(|(uid=*:t02-pass");
    assert_eq!(
        injected, wrong,
        "an injection gets the wrong-password answer"
    );
    directory.stop();
    let (code, body) = get("trader02:t02-pass");
    assert_eq!(code, "503", "{body}");
    assert!(service::terminate(tss).success());
}
