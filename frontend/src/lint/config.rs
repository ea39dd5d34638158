//! The `check=` options: the `# check=` directive or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg (which replaces the directive), as
//! BuildKit's `linter.ParseLintOptions` reads them.

use std::collections::BTreeSet;

/// Which rules run and whether a warning fails the build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: a build with warnings fails before solving.
    pub error: bool,
}

/// A `check=` value BuildKit would refuse; the message is BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse check options: {0}")]
pub struct ConfigError(pub String);

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn list(v: &str) -> BTreeSet<String> {
    v.split(',').map(|r| r.trim().to_string()).collect()
}

impl Config {
    /// Parses `skip=…;experimental=…;error=…` (at most three parts, as
    /// BuildKit splits them).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let text = text.trim();
        let mut cfg = Config::default();
        if text.is_empty() {
            return Ok(cfg);
        }
        for part in text.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(ConfigError(format!(
                    "invalid check option {}",
                    crate::parser::go_quote(part)
                )));
            };
            let v = v.trim();
            match k.trim() {
                "skip" if v == "all" => cfg.skip_all = true,
                "skip" => cfg.skip = list(v),
                "experimental" if v == "all" => cfg.experimental_all = true,
                "experimental" => cfg.experimental = list(v),
                "error" => {
                    cfg.error = parse_bool(v).ok_or_else(|| {
                        ConfigError(format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::parser::go_quote(part),
                            crate::parser::go_quote(v)
                        ))
                    })?;
                }
                other => {
                    return Err(ConfigError(format!(
                        "invalid check option {}",
                        crate::parser::go_quote(other)
                    )))
                }
            }
        }
        Ok(cfg)
    }

    /// Whether `rule` runs under this config.
    pub fn enabled(&self, rule: &super::Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_forms() {
        let c = Config::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert!(c.error);
        assert!(c.skip.contains("StageNameCasing"));
        assert!(c.skip.contains("JSONArgsRecommended"));
        assert!(Config::parse("skip=all").unwrap().skip_all);
        assert!(Config::parse("experimental=all").unwrap().experimental_all);
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::parse("bogus").unwrap_err().to_string(),
            "failed to parse check options: invalid check option \"bogus\""
        );
        assert!(Config::parse("error=maybe").is_err());
    }
}
