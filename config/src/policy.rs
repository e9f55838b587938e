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
    /// A glob: `*` any run of bytes (possibly none), `?` exactly one byte.
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

/// Anchored glob over bytes: `*` any run (possibly empty), `?` exactly one byte.
///
/// Claim values are attacker-chosen and this runs on the async workers, so it must not backtrack
/// exponentially. On a mismatch it resumes after the most recent `*`, which takes one more byte;
/// earlier stars never need revisiting (the latest star can absorb anything they could), so the
/// worst case is O(len(p)·len(s)) steps with no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // (pattern index just after the latest `*`, subject index where that star's run ends)
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((after, end)) => {
                    star = Some((after, end + 1));
                    pi = after;
                    si = end + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
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
        assert!(Condition::Glob("*".into()).holds(Some("")));
        assert!(!Condition::Glob("?".into()).holds(Some("")));
        assert!(Condition::Glob("a*b*c".into()).holds(Some("aXbYbZc")));
        assert!(!Condition::Glob("a*b*c".into()).holds(Some("aXbYbZ")));
    }

    /// The old recursive matcher, kept as the reference the linear one must agree with.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|n| reference(rest, &s[n..])),
            Some((b'?', rest)) => !s.is_empty() && reference(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    /// Every pattern over {a, *, ?} up to 5 bytes against every subject over {a, b} up to 6 bytes.
    #[test]
    fn same_semantics_as_the_recursive_matcher() {
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut last = vec![Vec::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| [w.as_slice(), &[*c]].concat()))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let (patterns, subjects) = (all(b"a*?", 5), all(b"ab", 6));
        for p in &patterns {
            for s in &subjects {
                assert_eq!(glob(p, s), reference(p, s), "{:?} vs {:?}", p, s);
            }
        }
    }

    /// A four-star glob against a 1,500-byte claim that almost matches: the recursive matcher took
    /// minutes here; this must take milliseconds.
    #[test]
    fn hostile_claim_is_matched_in_linear_time() {
        let claim = format!("refs/{}", "-".repeat(1500));
        let started = std::time::Instant::now();
        assert!(!Condition::Glob("refs/*-*-*-*x".into()).holds(Some(&claim)));
        assert!(!Condition::Glob("*a*a*a*a*b".into()).holds(Some(&"a".repeat(1500))));
        assert!(Condition::Glob("refs/*-*-*-*".into()).holds(Some(&claim)));
        assert!(
            started.elapsed() < std::time::Duration::from_millis(200),
            "took {:?}",
            started.elapsed()
        );
    }
}
