//! Loading a trading floor from one JSON file (`tss seed FILE`): sites, users (with
//! embedded-directory passwords), lines, profiles, software, turrets and the dial plan,
//! applied as one change — whole or not at all. The lab and first installs use it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{DialPlanRule, Line, ProfileEdit, Role, Site, SoftwarePackage, Turret, User};
use crate::store::Store;

/// A seed file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seed {
    pub sites: Vec<Site>,
    pub users: Vec<SeedUser>,
    pub lines: Vec<Line>,
    /// Appearances, speaker layout and speed dials per user.
    pub profiles: BTreeMap<String, ProfileEdit>,
    pub software: Vec<SoftwarePackage>,
    pub turrets: Vec<Turret>,
    pub dial_plan: Option<Vec<DialPlanRule>>,
}

/// A user with an optional embedded-directory password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub role: Option<Role>,
    pub site: String,
    #[serde(default)]
    pub password: Option<String>,
}

fn at(prefix: String, e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => Error::Invalid {
            field: if field.starts_with('[') {
                format!("{prefix}{field}")
            } else {
                format!("{prefix}.{field}")
            },
            reason,
        },
        other => other,
    }
}

/// Parses a seed file's text; errors name the JSON path.
pub fn parse(text: &str) -> Result<Seed> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Invalid {
        field: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

/// Applies `seed` as one change by `actor`; returns the new revision.
pub async fn apply(store: &Store, seed: &Seed, actor: &str) -> Result<i64> {
    let mut hashes = Vec::new();
    for (i, u) in seed.users.iter().enumerate() {
        if let Some(p) = &u.password {
            let p = p.clone();
            let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&p))
                .await
                .map_err(|e| Error::Config(format!("hashing: {e}")))?
                .map_err(|e| at(format!("users[{i}]"), e))?;
            hashes.push((u.name.clone(), hash));
        }
    }
    let mut w = store.write(actor).await?;
    for (i, site) in seed.sites.iter().enumerate() {
        w.put_site(site)
            .await
            .map_err(|e| at(format!("sites[{i}]"), e))?;
    }
    for (i, u) in seed.users.iter().enumerate() {
        let user = User {
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            role: u.role.unwrap_or(Role::Trader),
            site: u.site.clone(),
        };
        w.put_user(&user)
            .await
            .map_err(|e| at(format!("users[{i}]"), e))?;
    }
    for (name, hash) in &hashes {
        w.set_password_hash(name, Some(hash)).await?;
    }
    for (i, line) in seed.lines.iter().enumerate() {
        w.put_line(line)
            .await
            .map_err(|e| at(format!("lines[{i}]"), e))?;
    }
    for (user, edit) in &seed.profiles {
        w.put_profile(user, edit)
            .await
            .map_err(|e| at(format!("profiles.{user}"), e))?;
    }
    for (i, p) in seed.software.iter().enumerate() {
        w.put_package(p)
            .await
            .map_err(|e| at(format!("software[{i}]"), e))?;
    }
    for (i, t) in seed.turrets.iter().enumerate() {
        w.put_turret(t)
            .await
            .map_err(|e| at(format!("turrets[{i}]"), e))?;
    }
    if let Some(rules) = &seed.dial_plan {
        w.put_dial_plan(rules)
            .await
            .map_err(|e| at("dial_plan".into(), e))?;
    }
    w.commit().await
}
