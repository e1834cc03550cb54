//! The profile document a turret downloads, and what the store versions: rendered
//! from store rows with no I/O. Schema: docs/profile-schema.md (`floorwire.profile/1`).

use serde::{Deserialize, Serialize};

use crate::model::{
    AccessRight, CivicAddress, Line, LineKind, Site, SoftwarePackage, SpeakerChannel, SpeedDial,
    Turret, User,
};

/// The schema name and major version every document carries.
pub const SCHEMA: &str = "floorwire.profile/1";

/// A user's profile as the turret sees it, minus the per-download SIP credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileDocument {
    pub schema: String,
    pub user: ProfileUser,
    pub site: ProfileSite,
    /// TPOs in the order the turret registers with them (`host:port`).
    pub tpos: Vec<String>,
    /// Recorders the TPO records this user's calls to (`host:port`).
    pub recorders: Vec<String>,
    /// Lines on the turret, by button.
    pub lines: Vec<ProfileLine>,
    pub speaker_channels: Vec<SpeakerChannel>,
    pub speed_dials: Vec<SpeedDial>,
    pub turrets: Vec<ProfileTurret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileUser {
    pub name: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSite {
    pub name: String,
    pub civic_address: CivicAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileLine {
    pub button: u32,
    pub id: String,
    pub kind: LineKind,
    pub number: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far_end: Option<String>,
    pub access: AccessRight,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileTurret {
    pub device_id: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwarePackage>,
}

/// What the store reads for one user; [`render`] turns it into the document.
#[derive(Debug, Clone)]
pub struct ProfileParts {
    pub user: User,
    pub site: Site,
    /// Each appearance with its line: (button, access, line).
    pub appearances: Vec<(u32, AccessRight, Line)>,
    pub speaker_channels: Vec<SpeakerChannel>,
    pub speed_dials: Vec<SpeedDial>,
    pub turrets: Vec<(Turret, Option<SoftwarePackage>)>,
}

/// Renders a profile document; lists are ordered (button, channel, position, device)
/// so that equal data renders equal documents.
pub fn render(parts: ProfileParts) -> ProfileDocument {
    let mut lines: Vec<ProfileLine> = parts
        .appearances
        .into_iter()
        .map(|(button, access, line)| ProfileLine {
            button,
            id: line.id,
            kind: line.kind,
            number: line.number,
            label: line.label,
            far_end: line.far_end,
            access,
        })
        .collect();
    lines.sort_by_key(|l| l.button);
    let mut speaker_channels = parts.speaker_channels;
    speaker_channels.sort_by_key(|c| c.channel);
    let mut speed_dials = parts.speed_dials;
    speed_dials.sort_by_key(|d| d.position);
    let mut turrets: Vec<ProfileTurret> = parts
        .turrets
        .into_iter()
        .map(|(t, software)| ProfileTurret {
            device_id: t.device_id,
            model: t.model,
            software,
        })
        .collect();
    turrets.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    ProfileDocument {
        schema: SCHEMA.to_owned(),
        user: ProfileUser {
            name: parts.user.name,
            display_name: parts.user.display_name,
        },
        site: ProfileSite {
            name: parts.site.name,
            civic_address: parts.site.civic_address,
        },
        tpos: parts.site.tpos,
        recorders: parts.site.recorders,
        lines,
        speaker_channels,
        speed_dials,
        turrets,
    }
}

/// The RFC 6902 JSON Patch that turns `from` into `to`.
pub fn diff(from: &serde_json::Value, to: &serde_json::Value) -> serde_json::Value {
    serde_json::to_value(json_patch::diff(from, to)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn parts(label: &str) -> ProfileParts {
        let line = |id: &str, button| {
            (
                button,
                AccessRight::Talk,
                Line {
                    id: id.into(),
                    kind: LineKind::Shared,
                    number: "7000".into(),
                    label: label.into(),
                    far_end: None,
                },
            )
        };
        ProfileParts {
            user: User {
                name: "trader01".into(),
                display_name: "Trader One".into(),
                role: Role::Trader,
                site: "paris".into(),
            },
            site: Site {
                name: "paris".into(),
                description: String::new(),
                civic_address: CivicAddress::default(),
                tpos: vec!["127.0.1.21:5060".into(), "127.0.1.22:5060".into()],
                recorders: vec!["127.0.1.40:5060".into()],
            },
            appearances: vec![line("B", 2), line("A", 1)],
            speaker_channels: vec![],
            speed_dials: vec![],
            turrets: vec![],
        }
    }

    #[test]
    fn lines_come_by_button_and_tpos_keep_their_order() {
        let doc = render(parts("x"));
        assert_eq!(doc.schema, SCHEMA);
        let ids: Vec<&str> = doc.lines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["A", "B"]);
        assert_eq!(doc.tpos[0], "127.0.1.21:5060");
    }

    #[test]
    fn diff_is_a_json_patch_naming_what_changed() {
        let a = serde_json::to_value(render(parts("old"))).unwrap();
        let b = serde_json::to_value(render(parts("new"))).unwrap();
        let patch = diff(&a, &b);
        let ops = patch.as_array().unwrap();
        assert_eq!(ops.len(), 2, "{patch}");
        assert_eq!(ops[0]["op"], "replace");
        assert_eq!(ops[0]["path"], "/lines/0/label");
        assert_eq!(ops[0]["value"], "new");
        let mut patched = a.clone();
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, b);
    }
}
