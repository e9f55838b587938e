//! Per-issuer claim policy: `deny` rules are checked first, then, if any `allow` rules exist, one of
//! them must match. A rule matches when all its conditions hold; conditions compare a claim's text
//! (strings as they are, numbers and booleans in their JSON form) with a value, a glob, or a list.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ConfigError;

/// An issuer's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Rules that refuse a token when they match.
    pub deny: Vec<Rule>,
    /// If non-empty, a token must match one of these.
    pub allow: Vec<Rule>,
}

/// A named conjunction of conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Shown in refusals and logs.
    pub name: String,
    /// Claim name → condition; all must hold.
    pub when: Vec<(String, Condition)>,
}

/// A condition on one claim's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Exactly this value.
    Equals(String),
    /// A glob: `*` any run of characters, `?` one character.
    Glob(String),
    /// One of these values.
    In(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    deny: Vec<RawRule>,
    #[serde(default)]
    allow: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: BTreeMap<String, RawCondition>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCondition {
    Text(String),
    Map(RawConditionMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConditionMap {
    equals: Option<String>,
    glob: Option<String>,
    #[serde(rename = "in")]
    any_of: Option<Vec<String>>,
}

impl RawPolicy {
    pub(crate) fn validate(self) -> Result<Policy, ConfigError> {
        let rules = |list: Vec<RawRule>, section: &str| {
            list.into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let path = format!("policy.{section}[{i}]");
                    if r.name.is_empty() {
                        return Err(ConfigError::rule(format!("{path}.name"), "must not be empty"));
                    }
                    if r.when.is_empty() {
                        return Err(ConfigError::rule(
                            format!("{path}.when"),
                            "needs at least one condition",
                        ));
                    }
                    let when = r
                        .when
                        .into_iter()
                        .map(|(claim, c)| {
                            let cond = match c {
                                RawCondition::Text(t) if t.contains(['*', '?']) => Condition::Glob(t),
                                RawCondition::Text(t) => Condition::Equals(t),
                                RawCondition::Map(RawConditionMap {
                                    equals: Some(v),
                                    glob: None,
                                    any_of: None,
                                }) => Condition::Equals(v),
                                RawCondition::Map(RawConditionMap {
                                    equals: None,
                                    glob: Some(g),
                                    any_of: None,
                                }) => Condition::Glob(g),
                                RawCondition::Map(RawConditionMap {
                                    equals: None,
                                    glob: None,
                                    any_of: Some(l),
                                }) => Condition::In(l),
                                RawCondition::Map(_) => {
                                    return Err(ConfigError::rule(
                                        format!("{path}.when.{claim}"),
                                        "give exactly one of equals, glob or in",
                                    ));
                                }
                            };
                            Ok((claim, cond))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Rule { name: r.name, when })
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        Ok(Policy {
            deny: rules(self.deny, "deny")?,
            allow: rules(self.allow, "allow")?,
        })
    }
}

impl Condition {
    /// Whether `value` (a claim's text; `None` when absent) satisfies the condition.
    pub fn holds(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return false };
        match self {
            Condition::Equals(e) => v == e,
            Condition::Glob(g) => glob(g.as_bytes(), v.as_bytes()),
            Condition::In(list) => list.iter().any(|e| e == v),
        }
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|n| glob(rest, &s[n..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert!(Condition::Glob("refs/tags/*".into()).holds(Some("refs/tags/v1.2.3")));
        assert!(!Condition::Glob("refs/tags/*".into()).holds(Some("refs/heads/main")));
        assert!(Condition::Glob("v?.*".into()).holds(Some("v1.0")));
        assert!(Condition::In(vec!["a".into(), "b".into()]).holds(Some("b")));
        assert!(!Condition::Equals("acme".into()).holds(None));
    }
}
