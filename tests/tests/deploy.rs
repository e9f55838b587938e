//! The deployment material under `deploy/`, checked without Docker, Helm or a cluster:
//!
//! - the Helm chart, rendered by the small renderer below (the template subset the chart is kept
//!   to), every document parsed as YAML, and the contract asserted: replicas, probes, security
//!   context, the PIN from a Secret, a ConfigMap whose `keyless.yaml` passes the product's own
//!   validation and names only files the pod has, Service, ServiceMonitor (and its switch), PDB;
//! - the compose and systemd configurations, validated by `keyless_config`, and consistent with
//!   the compose file and the unit that run them;
//! - the systemd unit's hardening, and `systemd-analyze verify` when the command exists;
//! - the Dockerfile's build command, and that it copies every workspace member.

use std::path::{Path, PathBuf};

use keyless_config::{CaConfig, Config, CtLogConfig, SecretRef};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

// ---- the template renderer -------------------------------------------------------------------
//
// Exactly the subset of Go templates the chart uses: `{{ PATH }}` with PATH one of `.Values.a.b`,
// `.Release.Name|Namespace`, `.Chart.Name|Version|AppVersion`; `{{ PATH | quote }}`;
// `{{ toYaml PATH | nindent N }}`; `{{ if EXPR }}`, `{{ else }}`, `{{ end }}` (at most three
// levels deep); `{{ fail "message" }}`; `{{/* comments */}}`; and the `{{-` / `-}}` whitespace
// trimming. EXPR is a PATH, a number, a "string", or a call of `not`, `and`, `or` (which stop at
// the first deciding argument, as Helm's do), `gt`, `int` or `kindIs`, with parentheses. Anything
// else panics, so a template that needs more of Helm fails here first.

fn lookup<'a>(scope: &'a Value, path: &str) -> &'a Value {
    let path = path
        .strip_prefix('.')
        .unwrap_or_else(|| panic!("unsupported template expression {path:?}"));
    path.split('.').fold(scope, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn scalar(v: &Value, what: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        _ => panic!("{what} is {v}, not a scalar"),
    }
}

/// The words of an action: `(`, `)`, "string literals" (unquoted, with `\"` and `\\`), and the
/// rest split at whitespace.
fn tokens(action: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' | ')' => {
                out.push(c.to_string());
                chars.next();
            }
            '"' => {
                chars.next();
                let mut lit = String::from("\"");
                loop {
                    match chars.next().expect("unterminated string") {
                        '"' => break,
                        '\\' => lit.push(chars.next().expect("unterminated string")),
                        c => lit.push(c),
                    }
                }
                out.push(lit);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(word);
            }
        }
    }
    out
}

/// An expression tree: a value, or a function applied to its arguments.
enum Expr {
    Lit(Value),
    Call(String, Vec<Expr>),
}

/// One operand at `toks[*at..]`: a parenthesised call, a literal or a path.
fn operand(toks: &[String], at: &mut usize, scope: &Value) -> Expr {
    let t = &toks[*at];
    *at += 1;
    if t == "(" {
        let e = call(toks, at, scope);
        assert_eq!(toks.get(*at).map(String::as_str), Some(")"), "unbalanced parentheses");
        *at += 1;
        e
    } else if let Some(s) = t.strip_prefix('"') {
        Expr::Lit(Value::from(s))
    } else if t.starts_with('.') {
        Expr::Lit(lookup(scope, t).clone())
    } else if let Ok(n) = t.parse::<i64>() {
        Expr::Lit(Value::from(n))
    } else {
        panic!("unsupported operand {t:?}")
    }
}

/// A function and its arguments up to `)` or the end, or a lone operand.
fn call(toks: &[String], at: &mut usize, scope: &Value) -> Expr {
    let name = toks[*at].clone();
    if !["not", "and", "or", "gt", "int", "kindIs"].contains(&name.as_str()) {
        return operand(toks, at, scope);
    }
    *at += 1;
    let mut args = Vec::new();
    while *at < toks.len() && toks[*at] != ")" {
        args.push(operand(toks, at, scope));
    }
    Expr::Call(name, args)
}

fn eval(e: &Expr) -> Value {
    let number = |v: &Value| -> f64 {
        match v {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::String(s) => s.parse().unwrap_or(0.0),
            Value::Null => 0.0,
            _ => panic!("{v} is not a number"),
        }
    };
    let Expr::Call(name, args) = e else {
        let Expr::Lit(v) = e else { unreachable!() };
        return v.clone();
    };
    match (name.as_str(), args.as_slice()) {
        ("not", [a]) => Value::Bool(!truthy(&eval(a))),
        // Helm's `and` / `or` return the deciding argument and evaluate no further.
        ("and", [first, rest @ ..]) => rest
            .iter()
            .fold(eval(first), |v, a| if truthy(&v) { eval(a) } else { v }),
        ("or", [first, rest @ ..]) => rest
            .iter()
            .fold(eval(first), |v, a| if truthy(&v) { v } else { eval(a) }),
        ("gt", [a, b]) => Value::Bool(number(&eval(a)) > number(&eval(b))),
        ("int", [a]) => Value::from(number(&eval(a)) as i64),
        ("kindIs", [k, a]) => {
            let kind = match eval(a) {
                Value::Object(_) => "map",
                Value::String(_) => "string",
                Value::Array(_) => "slice",
                Value::Bool(_) => "bool",
                Value::Number(_) => "float64",
                Value::Null => "invalid",
            };
            Value::Bool(eval(k) == kind)
        }
        _ => panic!("unsupported call {name} with {} arguments", args.len()),
    }
}

/// Evaluates the expression of `if EXPR`.
fn condition(expr: &str, scope: &Value) -> bool {
    let toks = tokens(expr);
    let mut at = 0;
    let e = call(&toks, &mut at, scope);
    assert_eq!(at, toks.len(), "trailing words in {expr:?}");
    truthy(&eval(&e))
}

/// Block-style YAML with JSON scalars (valid YAML, and unambiguous), no trailing newline: what
/// Helm's `toYaml` yields up to quoting style.
fn to_yaml(v: &Value) -> String {
    let key = |k: &str| {
        let plain = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        if plain {
            k.to_string()
        } else {
            Value::from(k).to_string()
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(c) if !c.is_empty() => format!("{}:\n{}", key(k), indent(&to_yaml(v), 2)),
                Value::Array(a) if !a.is_empty() => format!("{}:\n{}", key(k), to_yaml(v)),
                _ => format!("{}: {}", key(k), to_yaml(v)),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|v| format!("- {}", to_yaml(v).replace('\n', "\n  ")))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => v.to_string(),
    }
}

/// Helm's `indent`: every line, blank ones included.
fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// One frame per open `if`: (the enclosing branch is output, the condition, in the else branch).
type Frame = (bool, bool, bool);

fn on(frames: &[Frame]) -> bool {
    frames.last().is_none_or(|&(outer, cond, els)| outer && cond != els)
}

/// The rendered text, or the message of the `fail` that stopped it (as `helm template` stops).
fn render(template: &str, scope: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next { text.trim_start() } else { text };
        let Some(after) = after else {
            if on(&frames) {
                out.push_str(text);
            }
            break;
        };
        let end = after.find("}}").expect("unclosed {{");
        let mut action = &after[..end];
        rest = &after[end + 2..];
        if let Some(a) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = a;
        }
        trim_next = action.ends_with(" -");
        action = action.trim_end_matches(" -").trim();
        if on(&frames) {
            out.push_str(text);
        }
        if action.starts_with("/*") {
            assert!(action.ends_with("*/"), "unclosed comment {action:?}");
            continue;
        }
        if let Some(expr) = action.strip_prefix("if ") {
            let cond = on(&frames) && condition(expr, scope);
            frames.push((on(&frames), cond, false));
            assert!(frames.len() <= 3, "`if` nested deeper than 3 levels");
            continue;
        }
        if let Some(msg) = action.strip_prefix("fail ") {
            if on(&frames) {
                let toks = tokens(msg);
                match toks.as_slice() {
                    [m] if m.starts_with('"') => return Err(m[1..].to_string()),
                    _ => panic!("`fail` takes one string: {action:?}"),
                }
            }
            continue;
        }
        let words: Vec<&str> = action.split_whitespace().collect();
        match words.as_slice() {
            ["else"] => frames.last_mut().expect("`else` without `if`").2 = true,
            ["end"] => {
                frames.pop().expect("`end` without `if`");
            }
            ["toYaml", _, "|", "nindent", _] | [_, "|", "quote"] | [_] if !on(&frames) => {}
            ["toYaml", p, "|", "nindent", n] => {
                out.push('\n');
                out.push_str(&indent(&to_yaml(lookup(scope, p)), n.parse().unwrap()));
            }
            [p, "|", "quote"] => {
                let v = lookup(scope, p);
                let s = if v.is_null() { String::new() } else { scalar(v, p) };
                out.push_str(&Value::from(s).to_string());
            }
            [p] => out.push_str(&scalar(lookup(scope, p), p)),
            _ => panic!("unsupported template action {{{{ {action} }}}}"),
        }
    }
    assert!(frames.is_empty(), "`if` without `end`");
    Ok(out)
}

/// Helm's merge of a values file over another: maps merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Renders every template of the chart with values.yaml, then the values `files` (paths under the
/// chart, as `helm -f`), then `overrides` (dotted paths, as `--set`; `null` removes the key), and
/// returns every document, or the message of a `fail`.
fn try_render_chart(files: &[&str], overrides: &[(&str, Value)]) -> Result<Vec<Value>, String> {
    let chart_dir = repo().join("deploy/helm/keyless");
    let mut values = yaml(&read("deploy/helm/keyless/values.yaml"));
    for file in files {
        merge(&mut values, &yaml(&read(&format!("deploy/helm/keyless/{file}"))));
    }
    for (path, v) in overrides {
        let (parent, last) = path.rsplit_once('.').map_or(("", *path), |(p, l)| (p, l));
        let mut at = &mut values;
        for k in parent.split('.').filter(|k| !k.is_empty()) {
            at = &mut at[k];
        }
        if v.is_null() {
            // As `--set key=null`: the key is gone.
            at.as_object_mut().map(|m| m.remove(last));
        } else {
            at[last] = v.clone();
        }
    }
    let chart = yaml(&read("deploy/helm/keyless/Chart.yaml"));
    let scope = json!({
        "Values": values,
        "Release": {"Name": "keyless", "Namespace": "sigstore"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rendered = render(&text, &scope)?;
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&rendered)
            .unwrap_or_else(|e| panic!("{} renders to invalid YAML: {e}\n{rendered}", file.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    Ok(docs)
}

/// [`try_render_chart`] with values.yaml alone and `overrides`, which must render.
fn render_chart(overrides: &[(&str, Value)]) -> Vec<Value> {
    try_render_chart(&[], overrides).unwrap_or_else(|e| panic!("the chart refused to render: {e}"))
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

#[test]
fn renderer_follows_helm() {
    let scope = json!({"Values": {"on": true, "off": "", "n": 2, "m": {"a": 1, "b": ["x", {"c": "d:e"}]}}});
    let t = "a:\n{{- if .Values.on }}\n  b: {{ .Values.n }}\n{{- else }}\n  c: 1\n{{- end }}\n{{- if not .Values.off }}\nd: {{ .Values.off | quote }}\n{{- end }}\ne:\n  {{- toYaml .Values.m | nindent 2 }}\n";
    assert_eq!(
        render(t, &scope).unwrap(),
        "a:\n  b: 2\nd: \"\"\ne:\n  a: 1\n  b:\n  - \"x\"\n  - c: \"d:e\"\n"
    );
    assert_eq!(render("x {{- .Values.n -}} y", &scope).unwrap(), "x2y");
    assert_eq!(yaml(&render(t, &scope).unwrap())["e"], scope["Values"]["m"]);

    // Conditions, comments and `fail`.
    let cond = |expr: &str| {
        render(
            &format!("{{{{/* c */}}}}{{{{ if {expr} }}}}y{{{{ else }}}}n{{{{ end }}}}"),
            &scope,
        )
        .unwrap()
    };
    assert_eq!(cond("gt (int .Values.n) 1"), "y");
    assert_eq!(cond("gt (int .Values.n) 2"), "n");
    assert_eq!(cond("and .Values.on .Values.n"), "y");
    assert_eq!(cond("and .Values.on .Values.off"), "n");
    assert_eq!(cond("and .Values.missing .Values.missing.deeper"), "n");
    assert_eq!(cond("or .Values.off .Values.on"), "y");
    assert_eq!(cond("not (and (kindIs \"map\" .Values.m) .Values.m.a)"), "n");
    assert_eq!(cond("kindIs \"map\" .Values.n"), "n");
    assert_eq!(cond("not .Values.m.zzz"), "y");
    let t = "a: 1\n{{- if .Values.on }}\n{{- fail \"no \\\"way\\\": (b)\" }}\n{{- end }}\n";
    assert_eq!(render(t, &scope), Err("no \"way\": (b)".to_string()));
    assert_eq!(
        render(&t.replace(".Values.on", ".Values.off"), &scope).unwrap(),
        "a: 1\n"
    );
}

// ---- the Helm chart --------------------------------------------------------------------------

/// The container port a probe or service names (by number or by name).
fn port(container: &Value, p: &Value) -> u64 {
    p.as_u64().unwrap_or_else(|| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == *p)
            .unwrap_or_else(|| panic!("no container port named {p}"))["containerPort"]
            .as_u64()
            .unwrap()
    })
}

#[test]
fn helm_chart_renders_the_contract() {
    let docs = render_chart(&[]);
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["spec"]["replicas"], 1, "one replica by default");
    let pod = &deploy["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(deploy["spec"]["selector"]["matchLabels"], *labels);
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(
        c["image"], "ghcr.io/example/keyless:0.1.0",
        "empty tag means appVersion"
    );

    // Probes: liveness /healthz, readiness /readyz, on the API port 5555.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(port(c, &c[probe]["httpGet"]["port"]), 5555, "{probe}");
    }
    // Locked down.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());

    // The PIN comes from a Secret, under the name the configuration reads.
    let env = c["env"].as_array().unwrap();
    let pin = env
        .iter()
        .find(|e| e["name"] == "KEYLESS_HSM_PIN")
        .expect("KEYLESS_HSM_PIN env");
    let secret_ref = &pin["valueFrom"]["secretKeyRef"];
    assert_eq!(secret_ref["name"], "keyless-hsm-pin", "the existing Secret by default");
    assert_eq!(secret_ref["key"], "pin");
    assert!(kind(&docs, "Secret").is_empty(), "no Secret without a PIN in values");

    // Files the pod has under /etc/keyless: the ConfigMap's items, mounted read-only.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/keyless")
        .expect("config mounted at /etc/keyless");
    assert_eq!(mount["readOnly"], true);
    let volumes = spec["volumes"].as_array().unwrap();
    let vol = |name: &Value| volumes.iter().find(|v| v["name"] == *name).unwrap();
    let config_vol = &vol(&mount["name"])["configMap"];
    let cm = one(&docs, "ConfigMap");
    assert_eq!(config_vol["name"], cm["metadata"]["name"]);
    let files: Vec<String> = config_vol["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert!(
                cm["data"].get(i["key"].as_str().unwrap()).is_some(),
                "{i} not in the ConfigMap"
            );
            format!("/etc/keyless/{}", i["path"].as_str().unwrap())
        })
        .collect();
    assert!(files.contains(&"/etc/keyless/keyless.yaml".to_string()));
    assert_eq!(c["args"], json!(["serve", "--config", "/etc/keyless/keyless.yaml"]));

    // keyless.yaml passes the product's validation (paths resolve against a temporary folder).
    let base = tempfile::tempdir().unwrap();
    let text = cm["data"]["keyless.yaml"]
        .as_str()
        .expect("keyless.yaml in the ConfigMap");
    let config = Config::from_yaml(text, base.path()).unwrap_or_else(|e| panic!("chart config: {e}\n{text}"));
    let CaConfig::Pkcs11(p11) = &config.ca else {
        panic!("the chart's CA key is in an HSM: {:?}", config.ca)
    };
    assert_eq!(p11.pin, SecretRef::Env("KEYLESS_HSM_PIN".into()));
    assert!(
        files.contains(&p11.chain.display().to_string()),
        "chain {:?} not mounted",
        p11.chain
    );
    let module_dir = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| !vol(&m["name"])["hostPath"].is_null())
        .expect("PKCS#11 module directory mounted")["mountPath"]
        .as_str()
        .unwrap();
    assert!(
        p11.module.starts_with(module_dir),
        "module {:?} outside {module_dir}",
        p11.module
    );
    let CtLogConfig::Remote(ct) = &config.ct_log else {
        panic!("replicas share one remote CT log: {:?}", config.ct_log)
    };
    assert_eq!(ct.public_key, Path::new("/etc/keyless/ct/log.pub"));
    assert!(files.contains(&"/etc/keyless/ct/log.pub".to_string()));
    assert!(
        !config.listen.ip().is_loopback(),
        "probes cannot reach a loopback listener"
    );
    assert_eq!(port(c, &json!("api")), u64::from(config.listen.port()));
    let metrics = config.metrics_listen.expect("metrics_listen");
    assert_eq!(port(c, &json!("metrics")), u64::from(metrics.port()));
    let grpc = config.grpc_listen.expect("grpc_listen: Fulcio's gRPC port");
    assert_eq!(port(c, &json!("grpc")), u64::from(grpc.port()));
    assert_eq!(grpc.port(), 5554, "Fulcio's gRPC port");

    // Service: API and metrics, selecting the pods.
    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["selector"], *labels);
    let svc_ports: Vec<(u64, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["name"].as_str().unwrap().to_string()))
        .collect();
    assert!(svc_ports.contains(&(5555, "api".into())) && svc_ports.contains(&(2112, "metrics".into())));
    assert!(svc_ports.contains(&(5554, "grpc".into())), "{svc_ports:?}");

    // ServiceMonitor scraping the Service's metrics port.
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(svc["metadata"]["labels"][k], *v, "ServiceMonitor selects the Service");
    }

    // One replica: the record (SQLite under data_dir) on a claim the chart keeps, one pod at a
    // time on it, and no budget that would block a node drain.
    assert!(config.audit.enabled && config.audit.postgres.is_none());
    let data = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == config.data_dir.display().to_string())
        .expect("data_dir mounted");
    let pvc = one(&docs, "PersistentVolumeClaim");
    assert_eq!(
        vol(&data["name"])["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(
        pvc["spec"].get("storageClassName").is_none(),
        "the cluster's default class"
    );
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    assert!(kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(
        !c["env"].to_string().contains("KEYLESS_AUDIT_DB"),
        "no database without audit.postgres"
    );

    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], "sigstore", "{}", d["kind"]);
    }
}

#[test]
fn helm_chart_switches() {
    let docs = render_chart(&[("serviceMonitor.enabled", json!(false))]);
    assert!(kind(&docs, "ServiceMonitor").is_empty());
    for k in ["Deployment", "ConfigMap", "Service", "PersistentVolumeClaim"] {
        one(&docs, k);
    }
    let docs = render_chart(&[
        ("persistence.storageClass", json!("fast")),
        ("persistence.size", json!("5Gi")),
    ]);
    let pvc = one(&docs, "PersistentVolumeClaim");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");

    // A PIN in values: the chart makes the Secret and the Deployment reads it.
    let docs = render_chart(&[("hsm.pin", json!("123456")), ("image.tag", json!("v9"))]);
    let secret = one(&docs, "Secret");
    assert_eq!(secret["stringData"]["pin"], "123456");
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/example/keyless:v9");
    let pin = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "KEYLESS_HSM_PIN")
        .unwrap();
    assert_eq!(pin["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"]);

    // Extra environment and no host module directory.
    let docs = render_chart(&[
        (
            "extraEnv",
            json!([{"name": "ChrystokiConfigurationPath", "value": "/opt/pkcs11/etc"}]),
        ),
        ("pkcs11.hostPath", json!("")),
    ]);
    let spec = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let env = spec["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env.last().unwrap()["name"], "ChrystokiConfigurationPath");
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["hostPath"].is_null())
    );

    // No `grpc_listen`: no gRPC port on the pod or the Service.
    let docs = render_chart(&[("config.grpc_listen", Value::Null)]);
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let names = |ports: &Value| -> Vec<String> {
        ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&c["ports"]), ["api", "metrics"]);
    assert_eq!(names(&one(&docs, "Service")["spec"]["ports"]), ["api", "metrics"]);
}

/// The pod's volume that `name` names.
fn volume<'a>(spec: &'a Value, name: &Value) -> &'a Value {
    spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == *name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The ConfigMap's keyless.yaml, validated by the product.
fn chart_config(docs: &[Value]) -> Config {
    let text = one(docs, "ConfigMap")["data"]["keyless.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let base = tempfile::tempdir().unwrap();
    Config::from_yaml(&text, base.path()).unwrap_or_else(|e| panic!("chart config: {e}\n{text}"))
}

/// values-replicas.yaml: three pods sharing the record on PostgreSQL (URL from a Secret, one audit
/// key from another), one remote CT log and the HSM key; no per-pod record, ready only with the
/// database, and a budget that lets a drain take one pod at a time.
#[test]
fn helm_chart_runs_several_replicas_on_shared_state() {
    let docs = try_render_chart(&["values-replicas.yaml"], &[]).unwrap_or_else(|e| panic!("refused: {e}"));
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert!(deploy["spec"]["strategy"].is_null(), "a rolling update, pod by pod");
    let pod = &deploy["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let config = chart_config(&docs);

    // The record on PostgreSQL, its URL from the Secret under the name the config reads.
    let pg = config.audit.postgres.as_ref().expect("audit.postgres");
    let SecretRef::Env(var) = &pg.url else {
        panic!("{:?}", pg.url)
    };
    assert_eq!(var, "KEYLESS_AUDIT_DB");
    let env = c["env"].as_array().unwrap();
    let db = env.iter().find(|e| e["name"] == *var).expect("the database URL env");
    assert_eq!(
        db["valueFrom"]["secretKeyRef"],
        json!({"name": "keyless-audit-db", "key": "url"})
    );
    assert!(db.get("value").is_none(), "the URL never sits in the manifest");

    // One audit key for all: config.audit.key is the file of the mounted Secret.
    let key = config.audit.key.as_ref().expect("audit.key");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| key.starts_with(m["mountPath"].as_str().unwrap()) && m["mountPath"] != "/")
        .unwrap_or_else(|| panic!("{} is not mounted", key.display()));
    assert_eq!(mount["readOnly"], true);
    let secret = &volume(spec, &mount["name"])["secret"];
    assert_eq!(secret["secretName"], "keyless-audit-key");
    let file = key.strip_prefix(mount["mountPath"].as_str().unwrap()).unwrap();
    assert!(
        secret["items"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "audit-key.pem", "path": file.display().to_string()})),
        "{secret}"
    );

    // No record in the pods: no claim, data_dir on an emptyDir.
    assert!(kind(&docs, "PersistentVolumeClaim").is_empty());
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_null()),
        "a ReadWriteOnce claim cannot be shared by the pods"
    );
    let data = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == config.data_dir.display().to_string())
        .unwrap();
    assert_eq!(volume(spec, &data["name"])["emptyDir"], json!({}));

    // One remote CT log and the CA key in the HSM, as in values.yaml.
    assert!(matches!(config.ct_log, CtLogConfig::Remote(_)), "{:?}", config.ct_log);
    assert!(matches!(config.ca, CaConfig::Pkcs11(_)), "{:?}", config.ca);

    // Ready only with the record: /readyz on the API port.
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(port(c, &c["readinessProbe"]["httpGet"]["port"]), 5555);

    // The budget selects the pods and lets exactly one go at a time.
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
    let replicas = deploy["spec"]["replicas"].as_i64().unwrap();
    let disruptions = match (
        pdb["spec"]["minAvailable"].as_i64(),
        pdb["spec"]["maxUnavailable"].as_i64(),
    ) {
        (Some(min), None) => replicas - min,
        (None, Some(max)) => max,
        other => panic!("one of minAvailable and maxUnavailable: {other:?}"),
    };
    assert_eq!(disruptions, 1);

    // One pod on PostgreSQL: no claim and no budget either.
    let docs = try_render_chart(&["values-replicas.yaml"], &[("replicas", json!(1))]).unwrap();
    assert!(kind(&docs, "PersistentVolumeClaim").is_empty() && kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(one(&docs, "Deployment")["spec"]["strategy"].is_null());
}

/// With several replicas the chart refuses what each pod would keep to itself, and says why.
#[test]
fn helm_chart_refuses_replicas_that_cannot_share() {
    let refused = |files: &[&str], overrides: &[(&str, Value)]| {
        try_render_chart(files, overrides)
            .err()
            .unwrap_or_else(|| panic!("rendered: {files:?} {overrides:?}"))
    };
    // The record: values.yaml with three replicas keeps it in SQLite.
    let e = refused(&[], &[("replicas", json!(3))]);
    assert!(
        e.contains("replicas > 1") && e.contains("PostgreSQL") && e.contains("own SQLite record"),
        "{e}"
    );
    let e = refused(&["values-replicas.yaml"], &[("config.audit.postgres", Value::Null)]);
    assert!(e.contains("PostgreSQL"), "{e}");
    // The embedded CT log, in each of its spellings (omitted means embedded).
    for ct in [
        Value::Null,
        json!("embedded"),
        json!({"embedded": {"listen": "0.0.0.0:6962"}}),
    ] {
        let e = refused(&["values-replicas.yaml"], &[("config.ct_log", ct.clone())]);
        assert!(
            e.contains("replicas > 1") && e.contains("CT log") && e.contains("inside each pod"),
            "{ct}: {e}"
        );
    }
    // A CA key generated by each pod.
    let e = refused(&["values-replicas.yaml"], &[("config.ca", Value::Null)]);
    assert!(
        e.contains("replicas > 1") && e.contains("key ceremony") && e.contains("generates a CA key"),
        "{e}"
    );
    // PostgreSQL without its URL, or without the one audit key.
    let e = refused(&["values-replicas.yaml"], &[("postgres.existingSecret", json!(""))]);
    assert!(
        e.contains("postgres.existingSecret") && e.contains("KEYLESS_AUDIT_DB"),
        "{e}"
    );
    for gone in ["auditKey.existingSecret", "config.audit.key"] {
        let e = refused(&["values-replicas.yaml"], &[(gone, Value::Null)]);
        assert!(
            e.contains("audit key") && e.contains("auditKey.existingSecret"),
            "{gone}: {e}"
        );
    }

    // One replica may keep all of it in its volume: generated CA, embedded log, SQLite record.
    let docs = render_chart(&[("config.ca", Value::Null), ("config.ct_log", json!("embedded"))]);
    let config = chart_config(&docs);
    assert!(matches!(config.ca, CaConfig::Generated(_)) && matches!(config.ct_log, CtLogConfig::Embedded(_)));
    one(&docs, "PersistentVolumeClaim");
}

/// The in-cluster issuer switch gives the pod its service-account token (and only then), at the
/// paths `kubernetes_in_cluster` reads by default; a private CT CA bundle is mounted where the
/// values' comment says.
#[test]
fn helm_chart_in_cluster_issuer_and_ct_ca() {
    let docs = render_chart(&[]);
    let spec = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false, "no token by default");
    assert!(one(&docs, "ConfigMap")["data"].get("ct-ca.pem").is_none());

    let docs = render_chart(&[
        ("kubernetesIssuer.enabled", json!(true)),
        (
            "config.issuers",
            json!([{"url": "https://kubernetes.default.svc", "type": "kubernetes", "kubernetes_in_cluster": true}]),
        ),
        (
            "config.ct_log",
            json!({"url": "http://ctlog.ctlog-system.svc/fulcio", "public_key": "/etc/keyless/ct/log.pub",
                   "origin": "ctlog.ctlog-system.svc"}),
        ),
        (
            "ctLogCaCert",
            json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
        ),
    ]);
    let spec = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], true);
    let cm = one(&docs, "ConfigMap");
    let text = cm["data"]["keyless.yaml"].as_str().unwrap();
    let base = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(text, base.path()).unwrap_or_else(|e| panic!("chart config: {e}\n{text}"));
    let ic = config.issuers[0]
        .options
        .in_cluster
        .as_ref()
        .expect("in-cluster issuer");
    // What automountServiceAccountToken provides.
    assert_eq!(ic.token_file, Path::new(keyless_config::POD_TOKEN_FILE));
    assert_eq!(ic.ca_files, [PathBuf::from(keyless_config::POD_CA_FILE)]);
    let CtLogConfig::Remote(ct) = &config.ct_log else {
        panic!("{:?}", config.ct_log)
    };
    assert!(ct.plain_http_off_loopback() && ct.origin.as_deref() == Some("ctlog.ctlog-system.svc"));
    assert!(cm["data"]["ct-ca.pem"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    let items = &spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()["configMap"]["items"];
    assert!(
        items
            .as_array()
            .unwrap()
            .contains(&json!({"key": "ct-ca.pem", "path": "ct/ca.pem"})),
        "{items}"
    );
    assert!(read("deploy/helm/keyless/values.yaml").contains("ca_cert: /etc/keyless/ct/ca.pem"));
}

/// A Fulcio operator's `config.contents` moves to `fulcioConfig` unchanged: the chart writes it as
/// the issuers file and points keyless.yaml at it. Fulcio's public-good file serves every issuer
/// it names; the Fulcio chart's default (the cluster's own issuer) is fetched in-cluster.
#[test]
fn helm_chart_serves_fulcios_issuer_file() {
    let loaded = |docs: &[Value]| {
        let cm = one(docs, "ConfigMap");
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("{}/", dir.path().display());
        let keyless = cm["data"]["keyless.yaml"]
            .as_str()
            .unwrap()
            .replace("/etc/keyless/", &prefix);
        std::fs::write(
            dir.path().join("fulcio-config.yaml"),
            cm["data"]["fulcio-config.yaml"].as_str().unwrap(),
        )
        .unwrap();
        Config::from_yaml(&keyless, dir.path()).unwrap_or_else(|e| panic!("chart config: {e}\n{keyless}"))
    };
    let mounted = |docs: &[Value]| {
        let spec = &one(docs, "Deployment")["spec"]["template"]["spec"];
        let config = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap();
        config["configMap"]["items"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "fulcio-config.yaml", "path": "fulcio-config.yaml"}))
    };
    assert!(!mounted(&render_chart(&[])), "no issuer file by default");

    let public_good = keyless_config::issuers_file_as_json(keyless_config::PUBLIC_GOOD_ISSUERS).unwrap();
    let docs = render_chart(&[("fulcioConfig", public_good), ("config.issuers", json!([]))]);
    assert!(mounted(&docs));
    let config = loaded(&docs);
    assert_eq!(
        config.issuers.len(),
        keyless_config::public_good_issuers().unwrap().len()
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let fulcio_chart_default = json!({
        "OIDCIssuers": {"https://kubernetes.default.svc": {
            "IssuerURL": "https://kubernetes.default.svc", "ClientID": "sigstore", "Type": "kubernetes"}},
        "MetaIssuers": {"https://kubernetes.*.svc": {"ClientID": "sigstore", "Type": "kubernetes"}},
    });
    let docs = render_chart(&[
        ("fulcioConfig", fulcio_chart_default),
        ("config.issuers", json!([])),
        ("kubernetesIssuer.enabled", json!(true)),
    ]);
    let config = loaded(&docs);
    assert_eq!(config.issuers.len(), 2);
    let exact = config
        .issuers
        .iter()
        .find(|i| i.url == "https://kubernetes.default.svc")
        .unwrap();
    assert!(
        exact.options.in_cluster.is_some(),
        "the cluster's issuer is fetched with the pod's token"
    );
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
}

// ---- compose and systemd ---------------------------------------------------------------------

fn load(rel: &str) -> Config {
    let path = repo().join(rel);
    Config::from_yaml(&read(rel), path.parent().unwrap()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn compose_config_is_valid_and_matches_compose() {
    let config = load("deploy/docker/keyless.yaml");
    let compose = yaml(&read("deploy/docker/compose.yaml"));
    let services = &compose["services"];
    let keyless = &services["keyless"];

    let CaConfig::Pkcs11(p11) = &config.ca else {
        panic!("{:?}", config.ca)
    };
    assert_eq!(p11.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
    let SecretRef::Env(pin_var) = &p11.pin else {
        panic!("{:?}", p11.pin)
    };
    assert!(
        keyless["environment"][pin_var.as_str()].is_string(),
        "compose sets {pin_var}"
    );
    assert!(
        matches!(config.ct_log, CtLogConfig::Embedded(_)),
        "one node: the embedded log"
    );
    assert!(
        !config.listen.ip().is_loopback(),
        "published ports need 0.0.0.0 in the container"
    );
    let grpc = config.grpc_listen.expect("grpc_listen");
    assert!(
        !grpc.ip().is_loopback(),
        "published ports need 0.0.0.0 in the container"
    );
    assert!(
        keyless["ports"]
            .to_string()
            .contains(&format!("127.0.0.1:{0}:{0}", grpc.port())),
        "compose publishes the gRPC port"
    );

    // The INSECURE test issuer: the configured issuer, reachable on loopback in keyless's netns.
    let oidc = &services["insecure-dev-oidc"];
    assert_eq!(oidc["network_mode"], "service:keyless");
    assert_eq!(oidc["image"], "node:20-bookworm-slim");
    assert!(oidc["command"].to_string().contains("oauth2-mock-server@8.2.3"));
    let url = oidc["environment"]["INSECURE_DEV_OIDC_URL"].as_str().unwrap();
    assert_eq!(config.issuers.iter().map(|i| i.url.as_str()).collect::<Vec<_>>(), [url]);

    // The one-shot init: token, then ceremony, before the server starts.
    let init = &services["softhsm-init"];
    assert_eq!(
        keyless["depends_on"]["softhsm-init"]["condition"],
        "service_completed_successfully"
    );
    assert!(init["environment"]["KEYLESS_HSM_SO_PIN"].is_string());
    assert_eq!(keyless["read_only"], true);
    let script = read("deploy/docker/init-softhsm.sh");
    assert!(script.contains("softhsm2-util --init-token --free --label"));
    assert!(script.contains("keyless ca init --config"));
}

/// The source of what a compose service mounts at `target` (`SOURCE:TARGET[:ro]`): a file
/// (`./x`) or a named volume.
fn mount_source(service: &Value, target: &str) -> Option<String> {
    service["volumes"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            (dst == target).then(|| src.to_string())
        })
}

/// The keyless configuration a compose service mounts at `target`, loaded by the product.
fn compose_config(service: &Value, target: &str) -> Config {
    let src = mount_source(service, target).unwrap_or_else(|| panic!("nothing mounted at {target}: {service}"));
    let rel = src.strip_prefix("./").expect("a file beside the compose file");
    load(&format!("deploy/docker/{rel}"))
}

/// haproxy.cfg as (section header, its lines), comments dropped.
fn haproxy_sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let body = line.split('#').next().unwrap().trim_end();
        if body.trim().is_empty() {
            continue;
        }
        if body.starts_with(char::is_whitespace) {
            out.last_mut()
                .expect("a setting before any section")
                .1
                .push(body.trim().to_string());
        } else {
            out.push((body.to_string(), Vec::new()));
        }
    }
    out
}

/// compose.replicas.yaml: three `keyless serve` replicas with one configuration that the product
/// accepts, the same CA key (one ceremony, one token), the same PostgreSQL record, the same CT log
/// (`keyless ctlog serve`), and a load balancer that lists all three and checks /readyz.
#[test]
fn compose_replicas_share_one_record_one_log_one_key() {
    let compose = yaml(&read("deploy/docker/compose.replicas.yaml"));
    let services = &compose["services"];
    let names = ["keyless-1", "keyless-2", "keyless-3"];
    // The image's default command is `serve`: exactly the three replicas run it.
    let serving: Vec<&str> = services
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["image"] == "keyless:dev" && s["command"].is_null() && s["entrypoint"].is_null())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(serving, names);
    let replicas: Vec<&Value> = names.iter().map(|n| &services[*n]).collect();
    let configs: Vec<Config> = replicas
        .iter()
        .map(|s| compose_config(s, "/etc/keyless/keyless.yaml"))
        .collect();
    let shared = "/var/lib/keyless";
    let volume = mount_source(replicas[0], shared).expect("the shared volume");
    assert!(compose["volumes"].get(&volume).is_some(), "{volume} is a named volume");

    for ((name, s), c) in names.iter().zip(&replicas).zip(&configs) {
        // One configuration, one shared volume, one SoftHSM configuration.
        assert_eq!(c.ca, configs[0].ca, "{name}: the same CA key");
        assert_eq!(c.ct_log, configs[0].ct_log, "{name}: the same CT log");
        assert_eq!(c.audit, configs[0].audit, "{name}: the same record");
        assert_eq!(mount_source(s, shared), Some(volume.clone()), "{name}");
        assert_eq!(s["environment"], replicas[0]["environment"], "{name}");
        assert_eq!(s["read_only"], true, "{name}");
        // Its own data_dir: a tmpfs, outside the shared volume.
        let data_dir = c.data_dir.display().to_string();
        assert!(!c.data_dir.starts_with(shared), "{name}: data_dir {data_dir} is shared");
        assert!(
            s["tmpfs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().unwrap().starts_with(&format!("{data_dir}:uid=10001,"))),
            "{name}: data_dir on a tmpfs the keyless user owns"
        );
        assert!(!c.listen.ip().is_loopback(), "{name}: reachable by the load balancer");
        assert!(s["healthcheck"]["test"].to_string().contains("GET /readyz"), "{name}");
        assert_eq!(s["restart"], "unless-stopped", "{name}");
    }
    let config = &configs[0];
    let env = &replicas[0]["environment"];

    // The CA key: in the token of the shared volume, made by the one ceremony (init), the chain
    // beside it.
    let CaConfig::Pkcs11(p11) = &config.ca else {
        panic!("{:?}", config.ca)
    };
    assert!(p11.chain.starts_with(shared));
    let SecretRef::Env(pin) = &p11.pin else { panic!() };
    assert!(env[pin.as_str()].is_string());
    let softhsm = read(&format!(
        "deploy/docker/{}",
        mount_source(replicas[0], env["SOFTHSM2_CONF"].as_str().unwrap())
            .unwrap()
            .trim_start_matches("./")
    ));
    assert!(
        softhsm.contains(&format!("directories.tokendir = {shared}/")),
        "{softhsm}"
    );
    let init = &services["init"];
    assert_eq!(mount_source(init, shared), Some(volume.clone()));
    let init_script = read("deploy/docker/init-replicas.sh");
    assert!(init["entrypoint"].to_string().contains("/etc/keyless/init-replicas.sh"));
    assert_eq!(
        mount_source(init, "/etc/keyless/init-replicas.sh").as_deref(),
        Some("./init-replicas.sh")
    );
    assert!(init_script.contains("KEYLESS_CONFIG=/etc/keyless/ctlog.yaml sh /etc/keyless/init-softhsm.sh"));
    assert!(read("deploy/docker/init-softhsm.sh").contains("config=${KEYLESS_CONFIG:-/etc/keyless/keyless.yaml}"));
    for (name, s) in [("keyless-1", &services["keyless-1"]), ("ctlog", &services["ctlog"])] {
        assert_eq!(
            s["depends_on"]["init"]["condition"], "service_completed_successfully",
            "{name} waits for the ceremony"
        );
    }

    // The record: PostgreSQL, the URL from the environment, naming the postgres service.
    let pg = config.audit.postgres.as_ref().expect("audit.postgres");
    let SecretRef::Env(var) = &pg.url else {
        panic!("{:?}", pg.url)
    };
    let url = env[var.as_str()].as_str().expect("the database URL in the environment");
    let db = &services["postgres"];
    let (creds, at) = url.strip_prefix("postgres://").unwrap().split_once('@').unwrap();
    assert_eq!(
        at,
        format!("postgres:5432/{}", db["environment"]["POSTGRES_DB"].as_str().unwrap())
    );
    let (user, password) = creds.split_once(':').unwrap();
    assert_eq!(user, db["environment"]["POSTGRES_USER"]);
    let pw_var = |v: &str| v.trim_start_matches("${").split(':').next().unwrap().to_string();
    assert_eq!(
        pw_var(password),
        pw_var(db["environment"]["POSTGRES_PASSWORD"].as_str().unwrap())
    );
    let image = db["image"].as_str().unwrap();
    let tag = image.strip_prefix("postgres:").expect("the official image");
    assert!(tag.starts_with(|c: char| c.is_ascii_digit()), "a pinned major: {image}");
    assert!(db["healthcheck"]["test"].to_string().contains("pg_isready"));
    assert_eq!(
        services["keyless-1"]["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    // One audit key: keyless-1 makes it in the shared volume before the others start, one at a
    // time (SoftHSM's file token is not safe for two processes opening it at once).
    let key = config.audit.key.as_ref().expect("audit.key");
    assert!(key.starts_with(shared), "{}", key.display());
    for pair in names.windows(2) {
        assert_eq!(
            services[pair[1]]["depends_on"][pair[0]]["condition"], "service_healthy",
            "{} starts once {} is up",
            pair[1], pair[0]
        );
    }

    // The CT log: `keyless ctlog serve`, the embedded log alone, at the URL the replicas use, its
    // public key exported by init where the replicas read it.
    let CtLogConfig::Remote(remote) = &config.ct_log else {
        panic!("{:?}", config.ct_log)
    };
    let ctlog = &services["ctlog"];
    assert_eq!(
        ctlog["command"],
        json!(["ctlog", "serve", "--config", "/etc/keyless/ctlog.yaml"])
    );
    let log_config = compose_config(ctlog, "/etc/keyless/ctlog.yaml");
    let CtLogConfig::Embedded(embedded) = &log_config.ct_log else {
        panic!("{:?}", log_config.ct_log)
    };
    assert_eq!(
        remote.url.as_str(),
        format!("http://ctlog:{}/{}", embedded.listen.port(), embedded.prefix)
    );
    assert!(!embedded.listen.ip().is_loopback());
    assert!(embedded.pkcs11_key_label.is_some(), "the log key made by the ceremony");
    // The replicas reach the log over the compose network: not outside submitters.
    let replica_ip: std::net::IpAddr = "172.18.0.5".parse().unwrap();
    assert!(
        embedded.submissions.ca_addresses.iter().any(|r| r.contains(replica_ip)),
        "the replicas' compose network is exempt from the log's quotas"
    );
    assert_eq!(log_config.ca, config.ca, "the log accepts the replicas' root");
    assert!(log_config.data_dir.starts_with(shared), "the log's entries persist");
    assert_eq!(mount_source(ctlog, shared), Some(volume.clone()));
    assert!(
        remote.public_key.starts_with(shared)
            && init_script.contains(&format!("pub={}\n", remote.public_key.display())),
        "init writes the log key the replicas read"
    );
    assert_eq!(
        services["keyless-1"]["depends_on"]["ctlog"]["condition"],
        "service_healthy"
    );
    assert!(ctlog["healthcheck"]["test"].to_string().contains("ct/v1/get-sth"));

    // The issuer: one container every replica reaches by name.
    let oidc = &services["insecure-dev-oidc"];
    let issuer_url = oidc["environment"]["INSECURE_DEV_OIDC_URL"].as_str().unwrap();
    assert_eq!(issuer_url, "http://insecure-dev-oidc:8080");
    for c in configs.iter().chain([&log_config]) {
        assert_eq!(
            c.issuers.iter().map(|i| i.url.as_str()).collect::<Vec<_>>(),
            [issuer_url]
        );
        assert!(c.issuers[0].options.insecure_plain_http);
        c.check_trusts_issuers().unwrap();
    }

    // The load balancer: one published address, round robin over all three, /readyz checked.
    let lb = &services["lb"];
    let image = lb["image"].as_str().unwrap();
    assert!(
        image
            .strip_prefix("haproxy:")
            .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit())),
        "a pinned haproxy: {image}"
    );
    assert!(lb["ports"].to_string().contains("127.0.0.1:5555:5555"));
    assert_eq!(
        mount_source(lb, "/usr/local/etc/haproxy/haproxy.cfg").as_deref(),
        Some("./haproxy.cfg")
    );
    let cfg = read("deploy/docker/haproxy.cfg");
    let sections = haproxy_sections(&cfg);
    let section = |header: &str| {
        &sections
            .iter()
            .find(|(h, _)| h == header)
            .unwrap_or_else(|| panic!("no `{header}` in haproxy.cfg"))
            .1
    };
    let api = section("frontend api");
    assert!(api.contains(&format!("bind :{}", config.listen.port())));
    let backend = api
        .iter()
        .find_map(|l| l.strip_prefix("default_backend "))
        .expect("default_backend");
    let grpc_port = config.grpc_listen.expect("grpc_listen").port();
    for (backend, port) in [(backend, config.listen.port()), ("keyless-grpc", grpc_port)] {
        let lines = section(&format!("backend {backend}"));
        assert!(lines.contains(&"option httpchk GET /readyz".to_string()), "{backend}");
        assert!(lines.contains(&"http-check expect status 200".to_string()), "{backend}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("default-server ") && l.contains(" check ")),
            "{backend}: servers are checked"
        );
        let servers: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("server "))
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        let want: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        assert_eq!(servers, want, "{backend}");
    }

    // haproxy's own check (unresolved replica names only warn); scripts/test.sh installs it.
    assert!(
        std::process::Command::new("haproxy").arg("-v").output().is_ok(),
        "haproxy is not installed: run scripts/test.sh, which installs it"
    );
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(repo().join("deploy/docker/haproxy.cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_config_is_valid_and_matches_the_unit() {
    let config = load("deploy/systemd/keyless.yaml");
    let unit = read("deploy/systemd/keyless.service");
    let CaConfig::Pkcs11(p11) = &config.ca else {
        panic!("{:?}", config.ca)
    };
    // LoadCredential=hsm-pin:... lands in $CREDENTIALS_DIRECTORY = /run/credentials/<unit>.
    assert!(unit.contains("\nLoadCredential=hsm-pin:/etc/keyless/hsm-pin\n"));
    assert_eq!(
        p11.pin,
        SecretRef::File("/run/credentials/keyless.service/hsm-pin".into())
    );
    assert_eq!(
        config.data_dir,
        Path::new("/var/lib/keyless"),
        "the unit's StateDirectory"
    );
}

/// `key=value` lines of the unit (comments and section headers skipped).
fn unit_settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .map(|l| l.split_once('=').unwrap_or_else(|| panic!("not key=value: {l}")))
        .collect()
}

#[test]
fn systemd_unit_is_hardened() {
    let unit = read("deploy/systemd/keyless.service");
    let settings = unit_settings(&unit);
    let get = |k: &str| settings.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    for (k, v) in [
        (
            "ExecStart",
            "/usr/local/bin/keyless serve --config /etc/keyless/keyless.yaml",
        ),
        ("Environment", "KEYLESS_LOG_FORMAT=json"),
        ("LoadCredential", "hsm-pin:/etc/keyless/hsm-pin"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "keyless"),
        ("ConfigurationDirectory", "keyless"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(k), Some(v), "{k}");
    }
    for k in ["PrivateDevices", "LimitNOFILE"] {
        assert!(get(k).is_some(), "{k} is set");
    }
    let stop = keyless_config::parse_duration(get("TimeoutStopSec").expect("TimeoutStopSec")).unwrap();
    assert!(
        stop.as_secs() >= 25,
        "TimeoutStopSec {stop:?} must cover the 20 s drain plus a margin"
    );

    // systemd's own check, on a copy whose ExecStart names a binary that exists here.
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipping `systemd-analyze verify`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("keyless.service");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/keyless",
            &format!("ExecStart={}", exe.display()),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the container image ---------------------------------------------------------------------

#[test]
fn dockerfile_builds_like_ci() {
    let dockerfile = read("deploy/docker/Dockerfile");
    assert!(dockerfile.contains("\nRUN cargo build --release --locked --bin keyless\n"));
    // CI (the README's test command) runs the same build step.
    assert!(
        read("scripts/test.sh").contains("\ncargo build --release --locked --bin keyless\n"),
        "scripts/test.sh must run the Dockerfile's build command"
    );
    for needle in [
        "FROM rust:1-bookworm AS builder",
        "FROM debian:bookworm-slim",
        "USER 10001:10001",
        "VOLUME [\"/var/lib/keyless\"]",
        "EXPOSE 5555 5554 6962 2112",
        "ENTRYPOINT [\"keyless\"]",
        "CMD [\"serve\", \"--config\", \"/etc/keyless/keyless.yaml\"]",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle:?}");
    }
    // The builder copies only what it names (there is no .dockerignore): every workspace member.
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = "))
        .expect("workspace members");
    let members: Vec<String> = serde_json::from_str(members).expect("members on one line");
    for m in members {
        assert!(
            dockerfile.contains(&format!("COPY {m}/")),
            "workspace member {m} is not copied into the build"
        );
    }
}
