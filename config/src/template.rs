//! The subset of Go's `text/template` that Fulcio's `ci-provider` issuers use, parsed once when the
//! configuration loads: text, `{{ .claim }}`, `{{ index . "dotted.or/slashed" }}`,
//! `{{ if eq A B }}…{{ else }}…{{ end }}` (with `(index …)` arguments), `missingkey=error`, and no
//! HTML escaping. A template without `{{` is a claim name.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Text(String),
    Value(Expr),
    If {
        cond: Expr,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Field(String),
    Str(String),
    Eq(Box<Expr>, Box<Expr>),
}

/// The data a template sees: claim names to their text.
pub type Data = BTreeMap<String, String>;

/// The deepest nesting of `if`s, or of parentheses in one action, a template may have. Rendering,
/// evaluating and dropping a template recurse once per level, so without a limit a nested
/// template overflows the stack (found by `tests/tests/fuzz.rs`); Fulcio's templates nest at
/// most two levels.
pub const MAX_NESTING: usize = 64;

impl Template {
    /// Parses `src`; errors name the offset of the bad action.
    pub fn parse(src: &str) -> Result<Template, String> {
        if !src.contains("{{") {
            return Ok(Template {
                nodes: vec![Node::Value(Expr::Field(src.trim().to_string()))],
            });
        }
        let mut stack: Vec<Frame> = vec![(None, Vec::new(), None)];
        let mut rest = src;
        let mut offset = 0;
        while !rest.is_empty() {
            let Some(start) = rest.find("{{") else {
                push(&mut stack, Node::Text(rest.to_string()));
                break;
            };
            if start > 0 {
                push(&mut stack, Node::Text(rest[..start].to_string()));
            }
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed action at offset {}", offset + start))?;
            let action = rest[start + 2..start + end]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            let at = offset + start;
            if let Some(cond) = action.strip_prefix("if ") {
                if stack.len() > MAX_NESTING {
                    return Err(format!("offset {at}: ifs nested deeper than {MAX_NESTING} levels"));
                }
                stack.push((
                    Some(parse_expr(cond).map_err(|e| format!("offset {at}: {e}"))?),
                    Vec::new(),
                    None,
                ));
            } else if action == "else" {
                let top = stack
                    .last_mut()
                    .filter(|t| t.0.is_some() && t.2.is_none())
                    .ok_or(format!("offset {at}: else without if"))?;
                top.2 = Some(std::mem::take(&mut top.1));
            } else if action == "end" {
                if stack.len() < 2 {
                    return Err(format!("offset {at}: end without if"));
                }
                let (cond, body, then) = stack.pop().expect("checked");
                let (then, otherwise) = match then {
                    Some(t) => (t, body),
                    None => (body, Vec::new()),
                };
                push(
                    &mut stack,
                    Node::If {
                        cond: cond.expect("if frame"),
                        then,
                        otherwise,
                    },
                );
            } else {
                push(
                    &mut stack,
                    Node::Value(parse_expr(action).map_err(|e| format!("offset {at}: {e}"))?),
                );
            }
            offset += start + end + 2;
            rest = &rest[start + end + 2..];
        }
        if stack.len() != 1 {
            return Err("unterminated if (missing {{ end }})".into());
        }
        Ok(Template {
            nodes: stack.pop().expect("root").1,
        })
    }

    /// Renders against `data`; a missing key is an error (Go's `missingkey=error`).
    pub fn render(&self, data: &Data) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

/// One open block while parsing: its condition, its body, and its `else` body once seen.
type Frame = (Option<Expr>, Vec<Node>, Option<Vec<Node>>);

fn push(stack: &mut [Frame], node: Node) {
    stack.last_mut().expect("root frame").1.push(node);
}

fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut lit = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => lit.push(chars.next().ok_or("unterminated string")?),
                    Some(ch) => lit.push(ch),
                    None => return Err("unterminated string".into()),
                }
            }
            out.push(lit);
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '(' || ch == ')' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

fn parse_expr(s: &str) -> Result<Expr, String> {
    let toks = tokens(s)?;
    let mut depth = 0usize;
    for t in &toks {
        match t.as_str() {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(format!("parentheses nested deeper than {MAX_NESTING} levels"));
        }
    }
    let mut pos = 0;
    let e = expr(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?} in {s:?}", toks[pos]));
    }
    Ok(e)
}

fn expr(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    let head = t.get(*pos).ok_or("empty action")?.clone();
    *pos += 1;
    match head.as_str() {
        "eq" => {
            let a = arg(t, pos)?;
            let b = arg(t, pos)?;
            Ok(Expr::Eq(Box::new(a), Box::new(b)))
        }
        "index" => {
            if t.get(*pos).map(String::as_str) != Some(".") {
                return Err("index takes . and a quoted key".into());
            }
            *pos += 1;
            match arg(t, pos)? {
                Expr::Str(k) => Ok(Expr::Field(k)),
                _ => Err("index key must be a quoted string".into()),
            }
        }
        _ => {
            *pos -= 1;
            arg(t, pos)
        }
    }
}

fn arg(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    let tok = t.get(*pos).ok_or("missing argument")?.clone();
    *pos += 1;
    if tok == "(" {
        let e = expr(t, pos)?;
        if t.get(*pos).map(String::as_str) != Some(")") {
            return Err("missing )".into());
        }
        *pos += 1;
        return Ok(e);
    }
    if let Some(lit) = tok.strip_prefix('"') {
        return Ok(Expr::Str(lit.to_string()));
    }
    if let Some(field) = tok.strip_prefix('.') {
        if field.is_empty() || field.contains('.') {
            return Err(format!("{tok:?}: use index for dotted keys"));
        }
        return Ok(Expr::Field(field.to_string()));
    }
    Err(format!("unsupported token {tok:?}"))
}

fn eval(e: &Expr, data: &Data) -> Result<String, String> {
    match e {
        Expr::Str(s) => Ok(s.clone()),
        Expr::Field(k) => data
            .get(k)
            .cloned()
            .ok_or_else(|| format!("map has no entry for key {k:?}")),
        Expr::Eq(a, b) => Ok((eval(a, data)? == eval(b, data)?).to_string()),
    }
}

fn render_nodes(nodes: &[Node], data: &Data, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Value(e) => out.push_str(&eval(e, data)?),
            Node::If { cond, then, otherwise } => {
                let v = eval(cond, data)?;
                let truthy = !(v.is_empty() || v == "false");
                render_nodes(if truthy { then } else { otherwise }, data, out)?;
            }
        }
    }
    Ok(())
}

/// A claim value as Fulcio's templates see it: strings as they are, integral numbers without a
/// fraction, other numbers in shortest form, booleans as `true`/`false`, objects and arrays in
/// Go's `%v` form.
pub fn claim_text(v: &Value) -> String {
    let mut out = String::new();
    write_claim(v, &mut out);
    out
}

/// Writes into one buffer, so nested claims cost time linear in their size (building and joining
/// a string per level would copy deep values once per level). Depth is bounded by serde_json's
/// recursion limit when the token was parsed.
fn write_claim(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("<nil>"),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e17 => out.push_str(&(f as i64).to_string()),
            Some(f) => out.push_str(&f.to_string()),
            None => out.push_str(&n.to_string()),
        },
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_claim(item, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push_str("map[");
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_claim(item, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Data {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), claim_text(v)))
            .collect()
    }

    /// Found by `tests/tests/fuzz.rs`: deeply nested `if`s or parentheses overflowed the stack
    /// when parsed, rendered or dropped. Nesting is now limited when the template is parsed.
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let d = data(json!({"a": "x"}));
        let ifs = format!("{}{}", "{{ if .a }}".repeat(20_000), "{{ end }}".repeat(20_000));
        let e = Template::parse(&ifs).unwrap_err();
        assert!(e.contains("nested deeper than 64"), "{e}");
        let parens = format!("{{{{ {}.a{} }}}}", "(".repeat(20_000), ")".repeat(20_000));
        let e = Template::parse(&parens).unwrap_err();
        assert!(e.contains("nested deeper than 64"), "{e}");
        let eqs = format!(
            "{{{{ if {}.a{} }}}}x{{{{ end }}}}",
            "eq (".repeat(20_000),
            " \"x\")".repeat(20_000)
        );
        assert!(Template::parse(&eqs).unwrap_err().contains("nested deeper than 64"));
        // Up to the limit, nesting works.
        let ok = format!("{}x{}", "{{ if .a }}".repeat(64), "{{ end }}".repeat(64));
        assert_eq!(Template::parse(&ok).unwrap().render(&d).unwrap(), "x");
        let ok = format!("{{{{ {}.a{} }}}}", "(".repeat(64), ")".repeat(64));
        assert_eq!(Template::parse(&ok).unwrap().render(&d).unwrap(), "x");
    }

    #[test]
    fn semantics_of_section_4_6() {
        let d = data(
            json!({"url": "https://github.com", "job_workflow_ref": "o/r/.github/w.yml@refs/heads/main",
            "run_id": 1000000.0, "ts": 1753000000.0, "ratio": 1.4, "one": 1.0, "flag": true, "empty": "",
            "oidc.circleci.com/vcs-ref": "refs/heads/main", "env": "production", "html": "<alert()/>"}),
        );
        let r = |t: &str| Template::parse(t).unwrap().render(&d);
        assert_eq!(
            r("{{ .url }}/{{ .job_workflow_ref }}").unwrap(),
            "https://github.com/o/r/.github/w.yml@refs/heads/main"
        );
        assert_eq!(
            r("{{.run_id}} {{.ts}} {{.ratio}} {{.one}} {{.flag}}").unwrap(),
            "1000000 1753000000 1.4 1 true"
        );
        assert_eq!(r("{{ .empty }}/123").unwrap(), "/123");
        assert_eq!(r("{{ .html }}").unwrap(), "<alert()/>");
        assert_eq!(
            r(r#"{{ index . "oidc.circleci.com/vcs-ref" }}"#).unwrap(),
            "refs/heads/main"
        );
        assert_eq!(
            r(r#"{{ if eq .env "production" }}prod{{ else }}other{{ end }}"#).unwrap(),
            "prod"
        );
        assert_eq!(
            r(r#"{{ if eq .env "staging" }}stage{{ else }}""{{ end }}"#).unwrap(),
            "\"\""
        );
        assert_eq!(
            r(r#"{{ if eq (index . "oidc.circleci.com/vcs-ref") "refs/heads/main" }}main{{ end }}"#).unwrap(),
            "main"
        );
        assert_eq!(r("url").unwrap(), "https://github.com", "a bare name is a claim name");
        assert_eq!(r("{{ .missing }}").unwrap_err(), "map has no entry for key \"missing\"");
        assert_eq!(r("nope").unwrap_err(), "map has no entry for key \"nope\"");
        assert!(Template::parse("{{ .a }").is_err());
        assert!(Template::parse("{{ if eq .a \"b\" }}x").is_err());
        assert!(Template::parse("{{ end }}").is_err());
        assert!(Template::parse("{{ .a.b }}").is_err());
        assert_eq!(claim_text(&json!({"k": "v"})), "map[k:v]");
        assert_eq!(claim_text(&json!(["a", "b"])), "[a b]");
        assert_eq!(
            claim_text(&json!({"a": [1, true, null, {"b": 1.5}], "c": "d"})),
            "map[a:[1 true <nil> map[b:1.5]] c:d]"
        );
    }
}
