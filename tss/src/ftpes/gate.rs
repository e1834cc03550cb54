//! The FTPES control-channel policy, without I/O: what the gate does with each command
//! line a turret sends before it reaches the file server (libunftp).
//!
//! libunftp enforces `PROT P` for PASV only; a client sending `PROT C` (or no PROT at
//! all) and then `EPSV` would transfer in clear (../shared/DEPENDENCIES.md). The gate closes
//! that and the rest of the policy in one place:
//! - nothing but `AUTH TLS` (and FEAT/NOOP/QUIT/SYST) before the control channel is
//!   under TLS — no `USER` in clear;
//! - the login is checked here (directory or user table, throttled per user and
//!   source), never by the file server;
//! - `PROT` other than `P` is refused (534), and every data-channel command (PASV,
//!   EPSV, LIST, NLST, MLSD, RETR, …) is refused (521) until `PROT P` was accepted;
//! - active mode (`PORT`, `EPRT`) and `CCC` are refused;
//! - the home is read-only: STOR, DELE, MKD, RNFR and the like get 550 here.

/// What to do with one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer the client with this reply; the command goes no further.
    Reply(&'static str),
    /// Answer `234` and start TLS on the control connection.
    StartTls,
    /// Check these credentials; log in upstream on success.
    Login { user: String, password: String },
    /// Pass the line to the file server and relay its reply.
    Forward,
}

/// Commands that open or use a data channel.
const DATA_COMMANDS: &[&str] = &[
    "PASV", "EPSV", "LPSV", "LIST", "NLST", "MLSD", "RETR", "STOR", "STOU", "APPE",
];

/// Commands that would change the home, which is read-only.
const WRITE_COMMANDS: &[&str] = &[
    "STOR", "STOU", "APPE", "DELE", "MKD", "XMKD", "RMD", "XRMD", "RNFR", "RNTO", "SITE", "ALLO",
];

/// Commands allowed before the control channel is secured.
const BEFORE_TLS: &[&str] = &["AUTH", "FEAT", "NOOP", "QUIT", "SYST"];

/// Commands allowed once secured but before login.
const BEFORE_LOGIN: &[&str] = &[
    "AUTH", "FEAT", "NOOP", "QUIT", "SYST", "USER", "PASS", "PBSZ", "PROT", "OPTS", "HELP",
];

/// Per-connection state of the policy.
#[derive(Debug, Default)]
pub struct ControlPolicy {
    tls: bool,
    user: Option<String>,
    logged_in: bool,
    prot_private: bool,
    pending_prot_private: bool,
}

/// Splits a command line into its verb (upper case) and argument.
pub fn split(line: &str) -> (String, &str) {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.split_once(' ') {
        Some((verb, arg)) => (verb.to_ascii_uppercase(), arg),
        None => (line.to_ascii_uppercase(), ""),
    }
}

impl ControlPolicy {
    /// Decides what happens to `line` (one command, CRLF stripped or not).
    pub fn on_command(&mut self, line: &str) -> Action {
        // A CR or other control character inside a line would let the file server,
        // which also splits there, see a different command than the one judged here.
        if line
            .trim_end_matches(['\r', '\n'])
            .chars()
            .any(char::is_control)
        {
            return Action::Reply("500 Control characters are not allowed in commands.\r\n");
        }
        let (verb, arg) = split(line);
        let verb = verb.as_str();
        if !self.tls {
            return match verb {
                "AUTH" if is_tls(arg) => Action::StartTls,
                "AUTH" => Action::Reply("504 Only AUTH TLS is supported.\r\n"),
                v if BEFORE_TLS.contains(&v) => Action::Forward,
                _ => Action::Reply("530 Secure the connection with AUTH TLS first.\r\n"),
            };
        }
        match verb {
            "AUTH" => return Action::Reply("503 The connection is already secured.\r\n"),
            "PORT" | "EPRT" | "LPRT" => {
                return Action::Reply("502 Active mode is not offered; use EPSV or PASV.\r\n");
            }
            "CCC" => return Action::Reply("534 A clear command channel is refused by policy.\r\n"),
            "REIN" => return Action::Reply("502 REIN is not offered.\r\n"),
            "PROT" if !arg.trim().eq_ignore_ascii_case("P") => {
                return Action::Reply("534 Only PROT P is accepted.\r\n");
            }
            "PROT" => {
                self.pending_prot_private = true;
                return Action::Forward;
            }
            _ => {}
        }
        if !self.logged_in {
            return match verb {
                "USER" if arg.is_empty() => Action::Reply("501 USER needs a name.\r\n"),
                "USER" => {
                    self.user = Some(arg.to_owned());
                    Action::Reply("331 Password required.\r\n")
                }
                "PASS" => match self.user.take() {
                    Some(user) => Action::Login {
                        user,
                        password: arg.to_owned(),
                    },
                    None => Action::Reply("503 Send USER first.\r\n"),
                },
                v if BEFORE_LOGIN.contains(&v) => Action::Forward,
                _ => Action::Reply("530 Not logged in.\r\n"),
            };
        }
        match verb {
            "USER" | "PASS" => Action::Reply("503 Already logged in.\r\n"),
            v if WRITE_COMMANDS.contains(&v) => {
                Action::Reply("550 The provisioning home is read-only.\r\n")
            }
            v if DATA_COMMANDS.contains(&v) && !self.prot_private => {
                Action::Reply("521 PROT P is required before any data channel.\r\n")
            }
            _ => Action::Forward,
        }
    }

    /// The control channel is now under TLS.
    pub fn secured(&mut self) {
        self.tls = true;
    }

    /// Whether the session has logged in.
    pub fn is_logged_in(&self) -> bool {
        self.logged_in
    }

    /// The login answer: the session is logged in only on success.
    pub fn logged_in(&mut self, ok: bool) {
        self.logged_in = ok;
    }

    /// The file server's final reply code to the last forwarded command.
    pub fn on_reply(&mut self, code: u16) {
        if std::mem::take(&mut self.pending_prot_private) && code == 200 {
            self.prot_private = true;
        }
    }
}

fn is_tls(arg: &str) -> bool {
    let arg = arg.trim();
    arg.eq_ignore_ascii_case("TLS")
        || arg.eq_ignore_ascii_case("TLS-C")
        || arg.eq_ignore_ascii_case("SSL")
}

/// The code of a reply line if it ends a reply (`DDD ` or a bare `DDD`).
pub fn final_code(line: &str) -> Option<u16> {
    let b = line.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'\r')
    {
        line[..3].parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_but_auth_tls_before_tls() {
        let mut p = ControlPolicy::default();
        assert!(
            matches!(p.on_command("USER trader01\r\n"), Action::Reply(r) if r.starts_with("530"))
        );
        assert!(matches!(p.on_command("PASS x"), Action::Reply(r) if r.starts_with("530")));
        assert!(matches!(p.on_command("AUTH SSLv2"), Action::Reply(r) if r.starts_with("504")));
        assert_eq!(p.on_command("FEAT"), Action::Forward);
        assert_eq!(p.on_command("auth tls"), Action::StartTls);
    }

    #[test]
    fn login_then_prot_p_before_any_data_channel() {
        let mut p = ControlPolicy::default();
        p.secured();
        assert!(matches!(p.on_command("LIST"), Action::Reply(r) if r.starts_with("530")));
        assert!(matches!(p.on_command("PASS early"), Action::Reply(r) if r.starts_with("503")));
        assert!(matches!(p.on_command("USER trader01"), Action::Reply(r) if r.starts_with("331")));
        assert_eq!(
            p.on_command("PASS t01-pass"),
            Action::Login {
                user: "trader01".into(),
                password: "t01-pass".into()
            }
        );
        p.logged_in(true);
        for cmd in ["EPSV", "PASV", "LIST", "RETR profile.json", "MLSD", "NLST"] {
            assert!(
                matches!(p.on_command(cmd), Action::Reply(r) if r.starts_with("521")),
                "{cmd}"
            );
        }
        assert!(matches!(p.on_command("PROT C"), Action::Reply(r) if r.starts_with("534")));
        assert!(matches!(p.on_command("PROT S"), Action::Reply(r) if r.starts_with("534")));
        assert!(
            matches!(p.on_command("PORT 127,0,0,1,4,1"), Action::Reply(r) if r.starts_with("502"))
        );
        assert!(
            matches!(p.on_command("EPRT |1|127.0.0.1|1025|"), Action::Reply(r) if r.starts_with("502"))
        );
        assert!(matches!(p.on_command("CCC"), Action::Reply(r) if r.starts_with("534")));
        // PROT P refused upstream does not count.
        assert_eq!(p.on_command("PROT P"), Action::Forward);
        p.on_reply(504);
        assert!(matches!(p.on_command("EPSV"), Action::Reply(r) if r.starts_with("521")));
        assert_eq!(p.on_command("PROT P"), Action::Forward);
        p.on_reply(200);
        assert_eq!(p.on_command("EPSV"), Action::Forward);
        assert_eq!(p.on_command("RETR profile.json"), Action::Forward);
        // Downgrading afterwards is refused, so PROT P stays in force.
        assert!(matches!(p.on_command("PROT C"), Action::Reply(r) if r.starts_with("534")));
        assert!(matches!(p.on_command("USER admin"), Action::Reply(r) if r.starts_with("503")));
        for cmd in [
            "STOR x",
            "DELE profile.json",
            "RNFR .",
            "MKD d",
            "SITE CHMOD 777 x",
        ] {
            assert!(
                matches!(p.on_command(cmd), Action::Reply(r) if r.starts_with("550")),
                "{cmd}"
            );
        }
    }

    #[test]
    fn control_characters_cannot_smuggle_a_second_command() {
        let mut p = ControlPolicy::default();
        p.secured();
        p.on_command("USER trader01");
        p.on_command("PASS x");
        p.logged_in(true);
        for line in [
            "EPSV\rx",
            "RETR\rprofile.json",
            "PROT\rC",
            "NOOP\nEPSV",
            "LIST \0",
        ] {
            assert!(
                matches!(p.on_command(line), Action::Reply(r) if r.starts_with("500")),
                "{line:?}"
            );
        }
        assert_eq!(p.on_command("NOOP\r\n"), Action::Forward);
    }

    #[test]
    fn reply_ends() {
        assert_eq!(final_code("226 Transfer complete\r\n"), Some(226));
        assert_eq!(final_code("211-Features:\r\n"), None);
        assert_eq!(final_code(" AUTH TLS\r\n"), None);
        assert_eq!(final_code("200"), Some(200));
    }
}
