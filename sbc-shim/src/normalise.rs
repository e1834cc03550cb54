//! Number normalisation as data: an ordered, versioned rule table (sans-IO).
//!
//! Each rule matches on direction, source trunk, which number (called or calling) and
//! the number itself (prefix or regex); its actions rewrite the number (remove
//! characters, strip, replace, add, keep) and may set a class, a priority, or refuse
//! the call with a SIP status. The first matching rule wins; a rule marked `continue`
//! applies its rewrite and lets the next rules see the result, so a clean-up rule
//! chains into a normalising one (what Kamailio's dialplan cannot do, kamailio#764).
//! A number that reaches the end of the table unmatched is refused 404.
//!
//! The table is a TOML file (`rules/fr.toml` is the French preset); see
//! docs/normalisation.md for the format.

use std::fmt;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::Error;

/// Which way the call goes through the SBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the TPOs towards the carrier.
    Outbound,
    /// From the carrier towards the TPOs.
    Inbound,
}

/// Which number of the call is being normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Called,
    Calling,
}

/// What a number is being normalised for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context<'a> {
    pub direction: Direction,
    pub field: Field,
    /// Name of the trunk the call came in on.
    pub trunk: &'a str,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Self {
            direction: Direction::Outbound,
            field: Field::Called,
            trunk: "",
        }
    }
}

/// A number accepted by the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub number: String,
    /// Class set by the rules (`national`, `emergency`, `premium`…), if any.
    pub class: Option<String>,
    /// Sent with priority (emergency numbers).
    pub priority: bool,
    /// Names of the rules that applied, in order.
    pub rules: Vec<String>,
}

/// A number the table refuses, with the SIP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 404 (no such number) or 484 (address incomplete), or what the rule says.
    pub status: u16,
    pub reason: String,
    /// The refusing rule, or `None` when no rule accepted the number.
    pub rule: Option<String>,
    /// Rules that applied before the refusal.
    pub rules: Vec<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)?;
        if let Some(rule) = &self.rule {
            write!(f, " (rule {rule})")?;
        }
        Ok(())
    }
}

/// Rule file as written (serde), checked into a [`RuleSet`] by [`RuleSet::parse`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: String,
    #[serde(default)]
    description: String,
    #[serde(rename = "rule", default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    direction: Option<Direction>,
    field: Option<Field>,
    trunk: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
    #[serde(default)]
    remove_chars: String,
    #[serde(default)]
    strip: usize,
    replace: Option<String>,
    #[serde(default)]
    add: String,
    keep: Option<usize>,
    class: Option<String>,
    #[serde(default)]
    priority: bool,
    refuse: Option<u16>,
    reason: Option<String>,
    #[serde(default, rename = "continue")]
    continue_: bool,
}

/// One checked rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    direction: Option<Direction>,
    field: Option<Field>,
    trunk: Option<String>,
    prefix: Option<String>,
    regex: Option<Regex>,
    remove_chars: String,
    strip: usize,
    /// Replacement for the `regex` match (`$1` style captures).
    replace: Option<String>,
    add: String,
    keep: Option<usize>,
    class: Option<String>,
    priority: bool,
    refuse: Option<(u16, String)>,
    continue_: bool,
}

impl Rule {
    fn matches(&self, number: &str, context: &Context<'_>) -> bool {
        self.direction.is_none_or(|d| d == context.direction)
            && self.field.is_none_or(|f| f == context.field)
            && self.trunk.as_deref().is_none_or(|t| t == context.trunk)
            && self.prefix.as_deref().is_none_or(|p| number.starts_with(p))
            && self.regex.as_ref().is_none_or(|r| r.is_match(number))
    }

    fn rewrite(&self, number: &str) -> String {
        let mut n: String = number
            .chars()
            .filter(|c| !self.remove_chars.contains(*c))
            .collect();
        if self.strip > 0 {
            n = n.chars().skip(self.strip).collect();
        }
        if let (Some(regex), Some(replace)) = (&self.regex, &self.replace) {
            n = regex.replace(&n, replace.as_str()).into_owned();
        }
        if !self.add.is_empty() {
            n.insert_str(0, &self.add);
        }
        if let Some(keep) = self.keep {
            n = n.chars().take(keep).collect();
        }
        n
    }
}

/// A versioned, checked rule table.
#[derive(Debug, Clone)]
pub struct RuleSet {
    version: String,
    description: String,
    rules: Vec<Rule>,
}

/// How many rules one number may pass through (a `continue` loop guard is not
/// needed — rules only move forward — but a table is bounded anyway).
const MAX_RULES: usize = 10_000;

impl RuleSet {
    /// The French preset shipped with the SBC (`rules/fr.toml`).
    pub fn french() -> Result<Self, Error> {
        Self::parse(include_str!("../rules/fr.toml"), Path::new("rules/fr.toml"))
    }

    /// Loads a rule file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Rules {
            file: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a rule file's text; a bad file is refused whole, and the
    /// error names the file, the rule and the field.
    pub fn parse(text: &str, file: &Path) -> Result<Self, Error> {
        let err = |detail: String| Error::Rules {
            file: file.display().to_string(),
            detail,
        };
        let spec: RuleFile =
            toml::from_str(text).map_err(|e| err(e.to_string().trim().to_owned()))?;
        if spec.version.trim().is_empty() {
            return Err(err("`version` must not be empty".into()));
        }
        if spec.rules.len() > MAX_RULES {
            return Err(err(format!(
                "{} rules; at most {MAX_RULES}",
                spec.rules.len()
            )));
        }
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.into_iter().enumerate() {
            let at = |field: &str, detail: String| {
                err(format!("rule {} ({}) `{field}`: {detail}", i + 1, r.name))
            };
            if r.name.trim().is_empty() {
                return Err(err(format!("rule {}: `name` must not be empty", i + 1)));
            }
            let regex = match &r.regex {
                Some(text) => Some(Regex::new(text).map_err(|e| at("regex", e.to_string()))?),
                None => None,
            };
            if r.replace.is_some() && regex.is_none() {
                return Err(at("replace", "needs a `regex` to replace".into()));
            }
            let refuse = match r.refuse {
                Some(status) if (400..700).contains(&status) => Some((
                    status,
                    r.reason
                        .clone()
                        .unwrap_or_else(|| "refused by the numbering plan".into()),
                )),
                Some(status) => {
                    return Err(at("refuse", format!("{status} is not a 4xx-6xx status")));
                }
                None => None,
            };
            if refuse.is_some() && r.continue_ {
                return Err(at("continue", "a refusing rule cannot continue".into()));
            }
            rules.push(Rule {
                name: r.name,
                direction: r.direction,
                field: r.field,
                trunk: r.trunk,
                prefix: r.prefix,
                regex,
                remove_chars: r.remove_chars,
                strip: r.strip,
                replace: r.replace,
                add: r.add,
                keep: r.keep,
                class: r.class,
                priority: r.priority,
                refuse,
                continue_: r.continue_,
            });
        }
        Ok(Self {
            version: spec.version,
            description: spec.description,
            rules,
        })
    }

    /// The table's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The table's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Runs `number` through the table.
    pub fn normalise(&self, number: &str, context: &Context<'_>) -> Result<Normalised, Refused> {
        let mut current = number.trim().to_owned();
        let mut applied = Vec::new();
        let mut class = None;
        let mut priority = false;
        for rule in &self.rules {
            if !rule.matches(&current, context) {
                continue;
            }
            applied.push(rule.name.clone());
            if let Some((status, reason)) = &rule.refuse {
                return Err(Refused {
                    status: *status,
                    reason: reason.clone(),
                    rule: Some(rule.name.clone()),
                    rules: applied,
                });
            }
            current = rule.rewrite(&current);
            if rule.class.is_some() {
                class.clone_from(&rule.class);
            }
            priority |= rule.priority;
            if !rule.continue_ {
                return Ok(Normalised {
                    number: current,
                    class,
                    priority,
                    rules: applied,
                });
            }
        }
        Err(Refused {
            status: 404,
            reason: format!("no rule accepts {current:?}"),
            rule: None,
            rules: applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<RuleSet, Error> {
        RuleSet::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn first_match_wins_and_continue_chains() {
        let t = table(
            r#"
version = "t1"
[[rule]]
name = "clean"
remove_chars = " ."
continue = true
[[rule]]
name = "national"
regex = "^0([1-9][0-9]{8})$"
replace = "+33$1"
class = "national"
[[rule]]
name = "never-reached"
prefix = "+33"
class = "other"
"#,
        )
        .expect("table");
        let n = t
            .normalise("01 42.68 53 00", &Context::default())
            .expect("ok");
        assert_eq!(n.number, "+33142685300");
        assert_eq!(n.class.as_deref(), Some("national"));
        assert_eq!(n.rules, vec!["clean", "national"]);
    }

    #[test]
    fn bad_files_are_refused_whole_with_the_field_named() {
        let e = table("version = \"x\"\n[[rule]]\nname = \"r\"\nregex = \"([\"\n")
            .expect_err("bad regex");
        assert!(e.to_string().contains("rule 1 (r) `regex`"), "{e}");
        let e = table("version = \"x\"\n[[rule]]\nname = \"r\"\nreplace = \"a\"\n")
            .expect_err("replace");
        assert!(e.to_string().contains("`replace`"), "{e}");
        let e =
            table("version = \"x\"\n[[rule]]\nname = \"r\"\nstrp = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("strp"), "{e}");
        let e = table("version = \"\"\n").expect_err("version");
        assert!(e.to_string().contains("version"), "{e}");
        let e =
            table("version = \"x\"\n[[rule]]\nname = \"r\"\nrefuse = 200\n").expect_err("status");
        assert!(e.to_string().contains("refuse"), "{e}");
    }

    #[test]
    fn context_filters_rules() {
        let t = table(
            r#"
version = "t2"
[[rule]]
name = "to-turrets-national"
direction = "inbound"
field = "calling"
regex = "^\\+33([1-9][0-9]{8})$"
replace = "0$1"
[[rule]]
name = "e164"
regex = "^\\+[1-9][0-9]{6,14}$"
"#,
        )
        .expect("table");
        let inbound = Context {
            direction: Direction::Inbound,
            field: Field::Calling,
            trunk: "carrier",
        };
        assert_eq!(
            t.normalise("+33142685300", &inbound).expect("ok").number,
            "0142685300"
        );
        assert_eq!(
            t.normalise("+33142685300", &Context::default())
                .expect("ok")
                .number,
            "+33142685300"
        );
        let refused = t
            .normalise("garbage", &Context::default())
            .expect_err("refused");
        assert_eq!((refused.status, refused.rule), (404, None));
    }
}
