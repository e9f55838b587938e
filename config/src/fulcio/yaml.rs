//! Fulcio issuer files in YAML, read as Fulcio reads them.
//!
//! Fulcio decodes its file with Go's yaml.v3, a port of libyaml, and three of its habits matter
//! for real files:
//! - an alias name is `[0-9A-Za-z_-]+` and ends at anything else, so `*github-type:` is the alias
//!   `github-type` used as a mapping key (Fulcio's public file does this under
//!   `ci-issuer-metadata`). YAML 1.2 lets `:` into a name, so a spec-following scanner reads the
//!   alias `github-type:` and fails; before such an alias is read, a space goes in front of its
//!   `:`, which is what libyaml sees;
//! - every scalar is decoded into a string field as its text (`client-id: 0x10` is `"0x10"`),
//!   so scalars stay text here; only untagged plain `~`/`null`/empty scalars are null;
//! - `<<` merge keys work, and a mapping key given twice is an error.
//!
//! Aliases are replayed into the tree, bounded by [`MAX_YAML_ALIAS_EVENTS`] nodes in all, so a few
//! hundred bytes of nested aliases cannot expand into millions of nodes. Only the first document
//! is read, as yaml.v3 does.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use granit_parser::{Event, Parser, ScalarStyle, Scanner, Span, StrInput, TokenType};
use serde_json::{Map, Value};

use crate::{ConfigError, ConfigWarning, MAX_YAML_ALIAS_EVENTS};

/// A YAML file read into JSON values, and what the operator should know about the reading.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) value: Value,
    pub(crate) warnings: Vec<ConfigWarning>,
}

/// Reads `text`. Every error names the line and column.
pub(crate) fn parse(text: &str) -> Result<Document, ConfigError> {
    let mut text = separate_alias_keys(text)?;
    // An alias key the pre-pass missed is separated when the parser reaches it.
    let mut passes_left = 16;
    loop {
        match read(&text) {
            Ok(doc) => return Ok(doc),
            Err(Stop::AliasKey(colon)) if passes_left > 0 => {
                passes_left -= 1;
                text.to_mut().insert(colon, ' ');
            }
            Err(Stop::AliasKey(_)) => {
                return Err(syntax("too many aliases used as mapping keys"));
            }
            Err(Stop::Invalid(e)) => return Err(e),
        }
    }
}

/// Puts a space before the `:` of every alias libyaml would end there (`*github-type:` becomes
/// `*github-type :`). A candidate (`*name:` then a blank, after a blank or `[{,`) counts only if
/// the scanner, reading the text up to it, starts an alias token at its `*`: so a `*` inside a
/// quoted or block scalar or a comment is never touched. One scan per candidate, bounded by the
/// work it costs (a real file has one alias key per CI provider).
fn separate_alias_keys(text: &str) -> Result<Cow<'_, str>, ConfigError> {
    let mut fixed = Cow::Borrowed(text);
    // Bytes re-scanned, in all: Fulcio's public-good file (six alias keys) needs ~90 KB; 4 MiB is
    // ~45 times that and keeps the worst 64 KiB file to milliseconds (64 MiB took 230 ms).
    let mut budget = 4usize << 20;
    let mut from = 0;
    while let Some(found) = fixed[from..].find('*') {
        let star = from + found;
        from = star + 1;
        let bytes = fixed.as_bytes();
        let after_token_start =
            star == 0 || matches!(bytes[star - 1], b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',');
        let name_len = bytes[star + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
            .count();
        let colon = star + 1 + name_len;
        let alias_key = after_token_start
            && name_len > 0
            && bytes.get(colon) == Some(&b':')
            && bytes.get(colon + 1).is_none_or(|b| b.is_ascii_whitespace());
        if !alias_key {
            continue;
        }
        budget = budget
            .checked_sub(colon + 2)
            .ok_or_else(|| syntax("too many aliases used as mapping keys (more than 4 MiB of text to re-scan)"))?;
        let probe = format!("{} :", &fixed[..colon]);
        let is_alias = Scanner::new(StrInput::new(&probe))
            .map_while(Result::ok)
            .map(|t| t.into_parts())
            .any(|(span, t)| matches!(t, TokenType::Alias(_)) && span.start.byte_offset() == Some(star));
        if is_alias {
            fixed.to_mut().insert(colon, ' ');
        }
    }
    Ok(fixed)
}

/// The length of the alias libyaml reads from a YAML 1.2 alias `name`, when the rest is a `:`.
fn libyaml_alias_end(name: &str) -> Option<usize> {
    let end = name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    (end > 0 && name[end..] == *":").then_some(end)
}

fn syntax(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::syntax("", e)
}

enum Stop {
    /// An alias libyaml would end before the `:` at this byte offset.
    AliasKey(usize),
    Invalid(ConfigError),
}

impl From<ConfigError> for Stop {
    fn from(e: ConfigError) -> Stop {
        Stop::Invalid(e)
    }
}

/// A node of the document; aliases share the anchored node instead of copying it.
struct Node {
    kind: Kind,
    /// Nodes in this node once every alias in it is expanded (itself included).
    size: usize,
    /// The text of a scalar, which is what a mapping key is.
    text: Option<String>,
    /// An untagged plain `<<`.
    merge: bool,
}

enum Kind {
    Null,
    Str(String),
    Seq(Vec<Rc<Node>>),
    Map(BTreeMap<String, Rc<Node>>),
}

enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Rc<Node>>,
        size: usize,
    },
    Map {
        anchor: usize,
        entries: BTreeMap<String, Rc<Node>>,
        /// The key read, waiting for its value.
        key: Option<Rc<Node>>,
        /// Values of `<<` keys, merged when the mapping ends.
        merges: Vec<Rc<Node>>,
        size: usize,
    },
}

fn at(span: &Span) -> String {
    format!("line {} column {}", span.start.line(), span.start.col() + 1)
}

fn read(text: &str) -> Result<Document, Stop> {
    let options = granit_parser::options! {
        emit_unresolved_aliases: true,
        emit_comments: false,
    };
    let events = Parser::new_from_str_with_options(text, options);
    let mut anchors: HashMap<usize, Rc<Node>> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut replayed = 0usize;
    let mut root = None;
    let mut warnings = Vec::new();
    let mut documents = 0;
    for next in events {
        let (event, span) = next.map_err(syntax)?;
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    warnings.push(ConfigWarning::new(
                        "",
                        "only the first YAML document is read (as Fulcio reads it); the others are ignored",
                    ));
                    break;
                }
                continue;
            }
            Event::DocumentEnd => continue,
            Event::StreamEnd => break,
            Event::Scalar(value, style, anchor, tag) => {
                let tag = tag
                    .as_deref()
                    .filter(|t| t.is_yaml_core_schema())
                    .map(|t| t.suffix().to_string());
                let untagged_plain = style == ScalarStyle::Plain && tag.is_none();
                let null = (untagged_plain && matches!(&*value, "" | "~" | "null" | "Null" | "NULL"))
                    || tag.as_deref() == Some("null");
                let node = Node {
                    kind: if null { Kind::Null } else { Kind::Str(value.to_string()) },
                    size: 1,
                    merge: untagged_plain && value == "<<",
                    text: Some(value.into_owned()),
                };
                (Rc::new(node), anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    items: Vec::new(),
                    size: 1,
                });
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    entries: BTreeMap::new(),
                    key: None,
                    merges: Vec::new(),
                    size: 1,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { anchor, items, size }) => (
                    Rc::new(Node {
                        kind: Kind::Seq(items),
                        size,
                        text: None,
                        merge: false,
                    }),
                    anchor,
                ),
                _ => return Err(syntax(format!("unbalanced sequence at {}", at(&span))).into()),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    anchor,
                    mut entries,
                    merges,
                    mut size,
                    ..
                }) => {
                    // Keys written in the mapping win over merged ones; among merged mappings,
                    // the first to name a key wins (YAML's merge-key rule, as yaml.v3 applies it).
                    for source in merges {
                        let sources: Vec<&Rc<Node>> = match &source.kind {
                            Kind::Map(_) => vec![&source],
                            Kind::Seq(items) => items.iter().collect(),
                            Kind::Null | Kind::Str(_) => vec![&source],
                        };
                        for m in sources {
                            let Kind::Map(from) = &m.kind else {
                                return Err(syntax(format!(
                                    "a merge key (<<) takes a mapping or a list of mappings ({})",
                                    at(&span)
                                ))
                                .into());
                            };
                            for (k, v) in from {
                                if !entries.contains_key(k) {
                                    size += v.size;
                                    entries.insert(k.clone(), v.clone());
                                }
                            }
                        }
                    }
                    (
                        Rc::new(Node {
                            kind: Kind::Map(entries),
                            size,
                            text: None,
                            merge: false,
                        }),
                        anchor,
                    )
                }
                _ => return Err(syntax(format!("unbalanced mapping at {}", at(&span))).into()),
            },
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| syntax(format!("unknown alias at {}", at(&span))))?;
                replayed = replayed.saturating_add(node.size);
                if replayed > MAX_YAML_ALIAS_EVENTS {
                    return Err(syntax(format!(
                        "aliases expand to more than {MAX_YAML_ALIAS_EVENTS} nodes (the alias replay limit) at {}",
                        at(&span)
                    ))
                    .into());
                }
                (node, 0)
            }
            Event::UnresolvedAlias(name) => {
                if let (Some(end), Some(start)) = (libyaml_alias_end(&name), span.start.byte_offset()) {
                    return Err(Stop::AliasKey(start + 1 + end));
                }
                return Err(syntax(format!("unknown alias *{name} at {}", at(&span))).into());
            }
            // Comments, anchor metadata and whatever else a newer parser reports are not data.
            _ => continue,
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => {
                root = Some(node);
            }
            Some(Frame::Seq { items, size, .. }) => {
                *size += node.size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                merges,
                size,
                ..
            }) => match key.take() {
                None => {
                    if node.text.is_none() {
                        return Err(syntax(format!("a mapping key must be a scalar ({})", at(&span))).into());
                    }
                    *key = Some(node);
                }
                Some(k) if k.merge => {
                    merges.push(node);
                }
                Some(k) => {
                    let name = k.text.clone().unwrap_or_default();
                    if entries.contains_key(&name) {
                        return Err(syntax(format!("mapping key {name:?} is given twice ({})", at(&span))).into());
                    }
                    *size += node.size + 1;
                    entries.insert(name, node);
                }
            },
        }
    }
    Ok(Document {
        value: root.map_or(Value::Null, |n| to_json(&n)),
        warnings,
    })
}

/// Expands the shared nodes into plain JSON; bounded because every alias was counted.
fn to_json(node: &Node) -> Value {
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => Value::Array(items.iter().map(|n| to_json(n)).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).value
    }

    /// Fulcio's public file uses an alias as a mapping key; libyaml ends the name at `:`.
    #[test]
    fn alias_as_mapping_key() {
        let text = "define:\n  - &gh \"github-workflow\"\n  - &gl gitlab-pipeline\nmeta:\n  *gh:\n    a: 1\n  *gl:\n    b: *gh\n";
        assert_eq!(
            value(text)["meta"],
            json!({"github-workflow": {"a": "1"}, "gitlab-pipeline": {"b": "github-workflow"}})
        );
        // In a flow mapping too, and an alias followed by a space was always fine.
        assert_eq!(value("d: &k x\nm: {*k: 1}\n")["m"], json!({"x": "1"}));
        assert_eq!(value("d: &k x\nm:\n  *k : 1\n")["m"], json!({"x": "1"}));
        // A `*` in a quoted or block scalar, or in a comment, is text: never touched.
        let v = value("d: &k x\nq: \"*k: 1\"\nb: |\n  *k: y\n# *k: z\np: a *k:b\n");
        assert_eq!((v["q"].as_str(), v["b"].as_str()), (Some("*k: 1"), Some("*k: y\n")));
        assert_eq!(v["p"], "a *k:b");
        let e = parse("m:\n  *nope: 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown alias"), "{e}");
    }

    /// Scalars are text, as yaml.v3 decodes them into Fulcio's string fields.
    #[test]
    fn scalars_are_text() {
        let v = value("a: 0x10\nb: true\nc: 1.0\nd: ~\ne:\nf: ''\ng: !!str null\nh: |\n  two\n  lines\n");
        assert_eq!(
            v,
            json!({"a": "0x10", "b": "true", "c": "1.0", "d": null, "e": null, "f": "", "g": "null", "h": "two\nlines\n"})
        );
    }

    #[test]
    fn merge_keys_and_duplicates() {
        let v = value(
            "base: &b {client-id: sigstore, type: email}\nx:\n  <<: *b\n  type: uri\ny:\n  <<: [{a: 1}, {a: 2, c: 3}]\n",
        );
        assert_eq!(v["x"], json!({"client-id": "sigstore", "type": "uri"}));
        assert_eq!(v["y"], json!({"a": "1", "c": "3"}));
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err().to_string();
        assert!(e.contains("\"a\" is given twice") && e.contains("line 3"), "{e}");
        let e = parse("x:\n  <<: scalar\n").unwrap_err().to_string();
        assert!(e.contains("merge key"), "{e}");
    }

    #[test]
    fn only_the_first_document_is_read() {
        let doc = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(doc.value, json!({"a": "1"}));
        assert_eq!(doc.warnings.len(), 1);
        assert!(parse("").unwrap().value.is_null());
    }

    #[test]
    fn alias_bombs_stop_at_the_limit() {
        let mut text = String::from("a: &a [x, x]\n");
        let mut prev = "a".to_string();
        for i in 0..20 {
            text.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}]\n"));
            prev = format!("b{i}");
        }
        let started = std::time::Instant::now();
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("alias replay limit"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Many alias keys cost one pass each, but stay bounded.
        let mut keys = String::from("d: &k x\nm:\n");
        for _ in 0..3 {
            keys.push_str("  *k: 1\n");
        }
        let e = parse(&keys).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
    }
}
