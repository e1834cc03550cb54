//! TOML configuration: unknown keys refused, errors naming the file and the key, and
//! environment variables overriding file values.
//!
//! An override is `PREFIX__SECTION__KEY=value` (double underscores between levels,
//! case-insensitive), e.g. `TPO__SIP__LISTEN=127.0.1.21:5060`. Values are read as
//! TOML (numbers, booleans, arrays) and fall back to strings.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::Error;

/// Loads `path` (or the embedded defaults when `None`) into `T`, applying environment
/// overrides with `env_prefix`.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    embedded_default: &str,
    env_prefix: &str,
) -> Result<T, Error> {
    let (name, text) = match path {
        Some(p) => (
            p.to_path_buf(),
            std::fs::read_to_string(p).map_err(|e| Error::Config {
                file: p.to_path_buf(),
                detail: e.to_string(),
            })?,
        ),
        None => ("<embedded defaults>".into(), embedded_default.to_owned()),
    };
    let vars: Vec<(String, String)> = std::env::vars().collect();
    parse(&text, &name, env_prefix, &vars)
}

/// Parses `text` as if read from `file`, with `vars` as the environment.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    file: &Path,
    env_prefix: &str,
    vars: &[(String, String)],
) -> Result<T, Error> {
    let err = |detail: String| Error::Config {
        file: file.to_path_buf(),
        detail,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    let prefix = format!("{}__", env_prefix.to_ascii_uppercase());
    for (key, value) in vars {
        let Some(path) = key
            .to_ascii_uppercase()
            .strip_prefix(&prefix)
            .map(str::to_owned)
        else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut node = &mut table;
        for part in &parts[..parts.len() - 1] {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| err(format!("environment {key}: `{part}` is not a section")))?;
        }
        node.insert(parts[parts.len() - 1].clone(), parsed);
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| err(e.to_string().trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sip {
        listen: String,
        #[serde(default)]
        max_transactions: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        sip: Sip,
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse::<Conf>(
            "[sip]\nlisten = \"a\"\nlisten_port = 5\n",
            Path::new("tpo.toml"),
            "TPO",
            &[],
        )
        .expect_err("unknown key");
        let text = e.to_string();
        assert!(
            text.contains("tpo.toml") && text.contains("listen_port"),
            "{text}"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let vars = vec![
            ("TPO__SIP__LISTEN".to_owned(), "127.0.1.21:5060".to_owned()),
            ("TPO__SIP__MAX_TRANSACTIONS".to_owned(), "7".to_owned()),
            ("OTHER__SIP__LISTEN".to_owned(), "x".to_owned()),
        ];
        let c: Conf = parse("[sip]\nlisten = \"a\"\n", Path::new("f"), "TPO", &vars).expect("ok");
        assert_eq!(
            c.sip,
            Sip {
                listen: "127.0.1.21:5060".into(),
                max_transactions: 7
            }
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let e =
            parse::<Conf>("[sip]\nlisten = 5\n", Path::new("f.toml"), "X", &[]).expect_err("type");
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
