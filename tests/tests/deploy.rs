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
// `{{ toYaml PATH | nindent N }}`; `{{ if PATH }}`, `{{ if not PATH }}`, `{{ else }}`, `{{ end }}`
// (at most two levels deep); and the `{{-` / `-}}` whitespace trimming. Anything else panics, so
// a template that needs more of Helm fails here first.

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

fn render(template: &str, scope: &Value) -> String {
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
        let words: Vec<&str> = action.split_whitespace().collect();
        match words.as_slice() {
            ["if", "not", p] | ["if", p] => {
                let cond = truthy(lookup(scope, p)) != (words.len() == 3);
                frames.push((on(&frames), cond, false));
                assert!(frames.len() <= 2, "`if` nested deeper than 2 levels");
            }
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
    out
}

/// Renders every template of the chart with values.yaml plus `overrides` (dotted paths), and
/// returns every document.
fn render_chart(overrides: &[(&str, Value)]) -> Vec<Value> {
    let chart_dir = repo().join("deploy/helm/keyless");
    let mut values = yaml(&read("deploy/helm/keyless/values.yaml"));
    for (path, v) in overrides {
        let mut at = &mut values;
        for k in path.split('.') {
            at = &mut at[k];
        }
        *at = v.clone();
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
        let rendered = render(&text, &scope);
        let parsed: Vec<Value> = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&rendered)
            .unwrap_or_else(|e| panic!("{} renders to invalid YAML: {e}\n{rendered}", file.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
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
        render(t, &scope),
        "a:\n  b: 2\nd: \"\"\ne:\n  a: 1\n  b:\n  - \"x\"\n  - c: \"d:e\"\n"
    );
    assert_eq!(render("x {{- .Values.n -}} y", &scope), "x2y");
    assert_eq!(yaml(&render(t, &scope))["e"], scope["Values"]["m"]);
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
    assert!(
        deploy["spec"]["replicas"].as_u64().unwrap() > 1,
        "several replicas by default"
    );
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

    // PodDisruptionBudget keeping one replica.
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);

    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], "sigstore", "{}", d["kind"]);
    }
}

#[test]
fn helm_chart_switches() {
    let docs = render_chart(&[("serviceMonitor.enabled", json!(false))]);
    assert!(kind(&docs, "ServiceMonitor").is_empty());
    for k in ["Deployment", "ConfigMap", "Service", "PodDisruptionBudget"] {
        one(&docs, k);
    }

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
