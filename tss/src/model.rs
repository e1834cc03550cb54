//! The profile store's data model: what an operator edits (sites, users, lines,
//! appearances, speaker layout, speed dials, turrets, software, dial plan) and what
//! TPOs report (call records). Plain data with whole-object validation; no I/O.
//!
//! Every `validate` names the offending field as a path (`appearances[2].line`), so an
//! API client can point at it.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Builds [`Error::Invalid`] for `field`.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An identifier (user name, line id, device id, site name, package name):
/// 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_id(field: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not an identifier (1-64 of A-Z a-z 0-9 . _ -)"),
        ))
    }
}

/// A dialable number: an optional leading `+`, then 1–32 of `0-9 * #`.
pub fn check_number(field: &str, value: &str) -> Result<(), Error> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let ok = !digits.is_empty()
        && digits.len() <= 32
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a number (optional +, then 1-32 of 0-9 * #)"),
        ))
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("at most {max} characters, no control characters"),
        ));
    }
    Ok(())
}

/// A `host:port` address (a TPO or recorder as the turret and TPO reach it).
pub fn check_host_port(field: &str, value: &str) -> Result<(), Error> {
    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{value:?} is not host:port")))
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as stored and as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored/API spelling; `field` names the source on error.
            pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(invalid(field, format!(
                        "{text:?} is not one of {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

wire_enum!(
    /// What a line is on the turret.
    LineKind {
        PrivateWireAutomatic = "private_wire_ard",
        PrivateWireManual = "private_wire_mrd",
        Shared = "shared",
        DialTone = "dial_tone",
        Intercom = "intercom",
        Hoot = "hoot",
    }
);

wire_enum!(
    /// What a user may do on a line that appears on their turret.
    AccessRight {
        Talk = "talk",
        Listen = "listen",
    }
);

wire_enum!(
    /// What a user may do with the TSS itself.
    Role {
        Admin = "admin",
        Trader = "trader",
    }
);

wire_enum!(
    /// Where the TPO sends a dialled number that matches a dial-plan rule.
    Route {
        Internal = "internal",
        Sbc = "sbc",
        Refuse = "refuse",
    }
);

wire_enum!(
    /// Who placed a call, seen from the floor.
    Direction {
        Inbound = "inbound",
        Outbound = "outbound",
        Internal = "internal",
    }
);

wire_enum!(
    /// How a call ended.
    Outcome {
        Answered = "answered",
        NoAnswer = "no_answer",
        Busy = "busy",
        Cancelled = "cancelled",
        Failed = "failed",
        Refused = "refused",
    }
);

/// A site's civic address (kept from the start for emergency caller location).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CivicAddress {
    pub country: String,
    pub city: String,
    pub postal_code: String,
    pub street: String,
    pub building: String,
    pub floor: String,
}

/// A datacentre or trading-floor site: where its turrets register and record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub civic_address: CivicAddress,
    /// TPOs in the order a turret tries them (`host:port`).
    pub tpos: Vec<String>,
    /// Recorders every call is recorded to (`host:port`).
    pub recorders: Vec<String>,
}

impl Site {
    pub fn validate(&self) -> Result<(), Error> {
        check_id("name", &self.name)?;
        check_text("description", &self.description, 256)?;
        let a = &self.civic_address;
        for (field, value) in [
            ("country", &a.country),
            ("city", &a.city),
            ("postal_code", &a.postal_code),
            ("street", &a.street),
            ("building", &a.building),
            ("floor", &a.floor),
        ] {
            check_text(&format!("civic_address.{field}"), value, 128)?;
        }
        if self.tpos.is_empty() {
            return Err(invalid("tpos", "a site needs at least one TPO"));
        }
        for (list, name) in [(&self.tpos, "tpos"), (&self.recorders, "recorders")] {
            for (i, addr) in list.iter().enumerate() {
                check_host_port(&format!("{name}[{i}]"), addr)?;
                if list[..i].contains(addr) {
                    return Err(invalid(
                        format!("{name}[{i}]"),
                        format!("{addr} is listed twice"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A person who logs in (trader or administrator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default = "default_role")]
    pub role: Role,
    pub site: String,
}

fn default_role() -> Role {
    Role::Trader
}

impl User {
    pub fn validate(&self) -> Result<(), Error> {
        check_id("name", &self.name)?;
        check_text("display_name", &self.display_name, 128)?;
        check_id("site", &self.site)
    }
}

/// A line: a private wire, shared line, dial-tone line, intercom or hoot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub id: String,
    pub kind: LineKind,
    /// The number that reaches this line (a DID, a private-wire number, an extension).
    pub number: String,
    #[serde(default)]
    pub label: String,
    /// The number a private wire (or an intercom) rings when seized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far_end: Option<String>,
}

impl Line {
    pub fn validate(&self) -> Result<(), Error> {
        check_id("id", &self.id)?;
        check_number("number", &self.number)?;
        check_text("label", &self.label, 64)?;
        match (&self.far_end, self.kind) {
            (
                Some(far),
                LineKind::PrivateWireAutomatic | LineKind::PrivateWireManual | LineKind::Intercom,
            ) => check_number("far_end", far),
            (None, LineKind::PrivateWireAutomatic | LineKind::PrivateWireManual) => Err(invalid(
                "far_end",
                "a private wire needs the far end it rings",
            )),
            (Some(_), kind) => Err(invalid(
                "far_end",
                format!("a {} line has no far end", kind.as_str()),
            )),
            (None, _) => Ok(()),
        }
    }
}

/// A line on a user's turret, on a button, with talk or listen-only rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appearance {
    pub line: String,
    #[serde(default = "default_access")]
    pub access: AccessRight,
    pub button: u32,
}

fn default_access() -> AccessRight {
    AccessRight::Talk
}

/// A speaker channel carrying one line (hoots and private wires on loudspeakers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerChannel {
    pub channel: u32,
    pub line: String,
}

/// A speed-dial key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedDial {
    pub position: u32,
    #[serde(default)]
    pub label: String,
    pub number: String,
}

/// Most buttons, speaker channels and speed dials a turret has.
pub const MAX_BUTTONS: u32 = 512;
pub const MAX_SPEAKER_CHANNELS: u32 = 32;
pub const MAX_SPEED_DIALS: u32 = 512;

/// The user-scoped part of a profile an operator edits in one go: applied whole or
/// refused whole with the field named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileEdit {
    #[serde(default)]
    pub appearances: Vec<Appearance>,
    #[serde(default)]
    pub speaker_channels: Vec<SpeakerChannel>,
    #[serde(default)]
    pub speed_dials: Vec<SpeedDial>,
}

impl ProfileEdit {
    /// Checks the edit as a whole; `line_exists` answers whether a line id is in the store.
    pub fn validate(&self, line_exists: impl Fn(&str) -> bool) -> Result<(), Error> {
        for (i, a) in self.appearances.iter().enumerate() {
            let field = |f: &str| format!("appearances[{i}].{f}");
            check_id(&field("line"), &a.line)?;
            if !line_exists(&a.line) {
                return Err(invalid(field("line"), format!("no line {:?}", a.line)));
            }
            if a.button == 0 || a.button > MAX_BUTTONS {
                return Err(invalid(field("button"), format!("must be 1-{MAX_BUTTONS}")));
            }
            if let Some(j) = self.appearances[..i].iter().position(|b| b.line == a.line) {
                return Err(invalid(
                    field("line"),
                    format!("{} already appears at appearances[{j}]", a.line),
                ));
            }
            if let Some(j) = self.appearances[..i]
                .iter()
                .position(|b| b.button == a.button)
            {
                return Err(invalid(
                    field("button"),
                    format!("button {} already used by appearances[{j}]", a.button),
                ));
            }
        }
        for (i, c) in self.speaker_channels.iter().enumerate() {
            let field = |f: &str| format!("speaker_channels[{i}].{f}");
            if c.channel == 0 || c.channel > MAX_SPEAKER_CHANNELS {
                return Err(invalid(
                    field("channel"),
                    format!("must be 1-{MAX_SPEAKER_CHANNELS}"),
                ));
            }
            if self.speaker_channels[..i]
                .iter()
                .any(|d| d.channel == c.channel)
            {
                return Err(invalid(
                    field("channel"),
                    format!("channel {} used twice", c.channel),
                ));
            }
            if !self.appearances.iter().any(|a| a.line == c.line) {
                return Err(invalid(
                    field("line"),
                    format!("{:?} does not appear on this user's turret", c.line),
                ));
            }
        }
        for (i, d) in self.speed_dials.iter().enumerate() {
            let field = |f: &str| format!("speed_dials[{i}].{f}");
            if d.position == 0 || d.position > MAX_SPEED_DIALS {
                return Err(invalid(
                    field("position"),
                    format!("must be 1-{MAX_SPEED_DIALS}"),
                ));
            }
            if self.speed_dials[..i]
                .iter()
                .any(|e| e.position == d.position)
            {
                return Err(invalid(
                    field("position"),
                    format!("position {} used twice", d.position),
                ));
            }
            check_text(&field("label"), &d.label, 64)?;
            check_number(&field("number"), &d.number)?;
        }
        Ok(())
    }
}

/// The software a turret should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareRef {
    pub package: String,
    pub version: String,
}

/// A turret (device), assigned to a user or spare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turret {
    pub device_id: String,
    #[serde(default)]
    pub user: Option<String>,
    pub model: String,
    pub site: String,
    #[serde(default)]
    pub software: Option<SoftwareRef>,
}

impl Turret {
    pub fn validate(&self) -> Result<(), Error> {
        check_id("device_id", &self.device_id)?;
        if let Some(user) = &self.user {
            check_id("user", user)?;
        }
        check_id("model", &self.model)?;
        check_id("site", &self.site)?;
        if let Some(sw) = &self.software {
            check_id("software.package", &sw.package)?;
            check_id("software.version", &sw.version)?;
        }
        Ok(())
    }
}

/// A software package turrets download from `software/` over FTPES.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwarePackage {
    pub name: String,
    pub version: String,
    /// File name under the TSS's software directory.
    pub file_name: String,
    /// Hex SHA-256 of the file, for the turret to check.
    pub sha256: String,
    pub size: u64,
}

impl SoftwarePackage {
    pub fn validate(&self) -> Result<(), Error> {
        check_id("name", &self.name)?;
        check_id("version", &self.version)?;
        check_id("file_name", &self.file_name)?;
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("sha256", "64 hex digits"));
        }
        Ok(())
    }
}

/// One dial-plan rule: of the rules whose prefix starts the dialled number, the one
/// with the longest prefix decides the route (an empty prefix matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialPlanRule {
    pub prefix: String,
    pub route: Route,
    #[serde(default)]
    pub description: String,
}

/// Checks a whole dial plan.
pub fn validate_dial_plan(rules: &[DialPlanRule]) -> Result<(), Error> {
    for (i, r) in rules.iter().enumerate() {
        if !r.prefix.is_empty() && r.prefix != "+" {
            check_number(&format!("[{i}].prefix"), &r.prefix)?;
        }
        check_text(&format!("[{i}].description"), &r.description, 128)?;
        if rules[..i].iter().any(|s| s.prefix == r.prefix) {
            return Err(invalid(
                format!("[{i}].prefix"),
                format!("prefix {:?} already has a rule", r.prefix),
            ));
        }
    }
    Ok(())
}

/// A call as a TPO reports it when the call ends. `record_id` makes ingestion
/// idempotent: the same record posted twice is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRecord {
    pub record_id: String,
    pub tpo: String,
    pub call_id: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub line: Option<String>,
    pub direction: Direction,
    pub calling: String,
    pub called: String,
    /// RFC 3339 times.
    pub started_at: String,
    #[serde(default)]
    pub answered_at: Option<String>,
    pub ended_at: String,
    pub outcome: Outcome,
    /// Recording ids, one per recorder that confirmed a copy.
    #[serde(default)]
    pub recordings: Vec<String>,
}

impl CallRecord {
    /// Checks the record and returns its times as Unix milliseconds
    /// (started, answered, ended).
    pub fn validate(&self) -> Result<(i64, Option<i64>, i64), Error> {
        if self.record_id.is_empty() || self.record_id.len() > 128 {
            return Err(invalid("record_id", "1-128 characters"));
        }
        check_text("record_id", &self.record_id, 128)?;
        check_text("tpo", &self.tpo, 64)?;
        if self.call_id.is_empty() {
            return Err(invalid("call_id", "must not be empty"));
        }
        check_text("call_id", &self.call_id, 255)?;
        if let Some(u) = &self.user {
            check_id("user", u)?;
        }
        if let Some(l) = &self.line {
            check_id("line", l)?;
        }
        check_text("calling", &self.calling, 64)?;
        check_text("called", &self.called, 64)?;
        let started = parse_time("started_at", &self.started_at)?;
        let answered = self
            .answered_at
            .as_deref()
            .map(|t| parse_time("answered_at", t))
            .transpose()?;
        let ended = parse_time("ended_at", &self.ended_at)?;
        if ended < started {
            return Err(invalid("ended_at", "before started_at"));
        }
        if let Some(a) = answered
            && (a < started || a > ended)
        {
            return Err(invalid("answered_at", "outside started_at..ended_at"));
        }
        if (self.outcome == Outcome::Answered) != answered.is_some() {
            return Err(invalid(
                "answered_at",
                "set exactly when the outcome is answered",
            ));
        }
        for (i, r) in self.recordings.iter().enumerate() {
            check_text(&format!("recordings[{i}]"), r, 128)?;
        }
        Ok((started, answered, ended))
    }
}

/// Parses an RFC 3339 time in UTC (`2026-11-30T10:00:00Z`, fraction allowed, `Z` or
/// `+00:00`) into Unix milliseconds; `field` names it on error. Other offsets are
/// refused rather than silently read as UTC.
pub fn parse_time(field: &str, text: &str) -> Result<i64, Error> {
    let utc = text
        .strip_suffix("+00:00")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| text.to_owned());
    let t = humantime::parse_rfc3339(&utc).map_err(|e| {
        invalid(
            field,
            format!("{text:?} is not an RFC 3339 UTC time (…Z or …+00:00): {e}"),
        )
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| invalid(field, "before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| invalid(field, "too far in the future"))
}

/// Formats Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn format_time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("not Invalid: {other}"),
        }
    }

    #[test]
    fn identifiers_and_numbers() {
        check_id("x", "trader01").unwrap();
        check_id("x", "PW.GS-1_a").unwrap();
        for bad in [
            "",
            "-x",
            "a b",
            "a/b",
            "..",
            "é",
            &"a".repeat(65),
            "*)(uid=*",
        ] {
            assert_eq!(field_of(check_id("x", bad).unwrap_err()), "x", "{bad:?}");
        }
        check_number("n", "+33142685300").unwrap();
        check_number("n", "*72#").unwrap();
        for bad in ["", "+", "12a", "++1", "1 2"] {
            assert!(check_number("n", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn private_wires_need_a_far_end_and_hoots_have_none() {
        let mut line = Line {
            id: "PW1".into(),
            kind: LineKind::PrivateWireAutomatic,
            number: "7001".into(),
            label: "GS".into(),
            far_end: None,
        };
        assert_eq!(field_of(line.validate().unwrap_err()), "far_end");
        line.far_end = Some("7002".into());
        line.validate().unwrap();
        line.kind = LineKind::Hoot;
        assert_eq!(field_of(line.validate().unwrap_err()), "far_end");
    }

    #[test]
    fn profile_edit_names_the_first_bad_field() {
        let edit = |json: &str| serde_json::from_str::<ProfileEdit>(json).unwrap();
        let exists = |l: &str| l != "NOPE";
        let good = edit(
            r#"{"appearances":[{"line":"A","button":1},{"line":"B","access":"listen","button":2}],
                "speaker_channels":[{"channel":1,"line":"B"}],
                "speed_dials":[{"position":1,"label":"desk","number":"0142685300"}]}"#,
        );
        good.validate(exists).unwrap();
        let cases = [
            (
                r#"{"appearances":[{"line":"NOPE","button":1}]}"#,
                "appearances[0].line",
            ),
            (
                r#"{"appearances":[{"line":"A","button":1},{"line":"A","button":2}]}"#,
                "appearances[1].line",
            ),
            (
                r#"{"appearances":[{"line":"A","button":1},{"line":"B","button":1}]}"#,
                "appearances[1].button",
            ),
            (
                r#"{"appearances":[{"line":"A","button":0}]}"#,
                "appearances[0].button",
            ),
            (
                r#"{"appearances":[{"line":"A","button":1}],"speaker_channels":[{"channel":1,"line":"B"}]}"#,
                "speaker_channels[0].line",
            ),
            (
                r#"{"speaker_channels":[{"channel":33,"line":"B"}]}"#,
                "speaker_channels[0].channel",
            ),
            (
                r#"{"speed_dials":[{"position":1,"number":"x"}]}"#,
                "speed_dials[0].number",
            ),
            (
                r#"{"speed_dials":[{"position":1,"number":"1"},{"position":1,"number":"2"}]}"#,
                "speed_dials[1].position",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(
                field_of(edit(json).validate(exists).unwrap_err()),
                field,
                "{json}"
            );
        }
        assert!(serde_json::from_str::<ProfileEdit>(r#"{"apearances":[]}"#).is_err());
    }

    #[test]
    fn sites_need_distinct_tpos() {
        let mut site = Site {
            name: "paris".into(),
            description: String::new(),
            civic_address: CivicAddress::default(),
            tpos: vec!["127.0.1.21:5060".into(), "127.0.1.21:5060".into()],
            recorders: vec![],
        };
        assert_eq!(field_of(site.validate().unwrap_err()), "tpos[1]");
        site.tpos = vec!["127.0.1.21".into()];
        assert_eq!(field_of(site.validate().unwrap_err()), "tpos[0]");
        site.tpos = vec!["tpo-1a.example:5060".into()];
        site.validate().unwrap();
    }

    #[test]
    fn call_record_times() {
        let mut r = CallRecord {
            record_id: "r1".into(),
            tpo: "tpo-1a".into(),
            call_id: "c1@x".into(),
            user: Some("trader01".into()),
            line: None,
            direction: Direction::Outbound,
            calling: "7001".into(),
            called: "+33142685300".into(),
            started_at: "2026-11-30T10:00:00Z".into(),
            answered_at: Some("2026-11-30T10:00:02.500Z".into()),
            ended_at: "2026-11-30T10:01:00Z".into(),
            outcome: Outcome::Answered,
            recordings: vec![],
        };
        let (s, a, e) = r.validate().unwrap();
        assert_eq!(a.unwrap() - s, 2500);
        assert_eq!(e - s, 60_000);
        assert_eq!(format_time(s), "2026-11-30T10:00:00.000Z");
        r.outcome = Outcome::NoAnswer;
        assert_eq!(field_of(r.validate().unwrap_err()), "answered_at");
        assert_eq!(parse_time("t", "2026-11-30T10:00:00+00:00").unwrap(), s);
        for bad in [
            "2026-11-30T10:00:00+05:00",
            "2026-11-30 10:00:00",
            "2026-11-30T10:00:00",
            "2026-11-30T10:00:00Zjunk",
        ] {
            assert!(parse_time("t", bad).is_err(), "{bad}");
        }
        r.answered_at = None;
        r.ended_at = "yesterday".into();
        assert_eq!(field_of(r.validate().unwrap_err()), "ended_at");
    }
}
