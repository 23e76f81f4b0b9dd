//! The Helm chart (`deploy/helm/herald`) installs the same Herald as the kustomize base
//! (`deploy/kustomize`): both are rendered and compared object by object. helm and kubectl come
//! from the lab's build scripts (tests/lab/build-helm.sh, tests/lab/build-k8s.sh; cached, the
//! first run builds them); a test fails, saying why, when they cannot be built. No API server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use herald_tests::tools::{json_at as at, lab_tool, output_of, repo_root};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "deploy/helm/herald";
const NAMESPACE: &str = "herald-system";

/// kind, apiVersion, namespace and name: what identifies an object in a render.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    kind: String,
    api_version: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn new(kind: &str, api_version: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            api_version: api_version.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) ", self.kind, self.api_version)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.name)
    }
}

type Objects = BTreeMap<ObjectKey, Value>;

/// The objects of a multi-document YAML stream; empty documents are skipped, a repeated object
/// is an error.
fn parse_objects(what: &str, yaml: &str) -> anyhow::Result<Objects> {
    let mut objects = Objects::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let object = Value::deserialize(document)
            .with_context(|| format!("{what}: a document is not YAML"))?;
        if object.is_null() {
            continue;
        }
        let field = |path: &str| -> anyhow::Result<String> {
            let value = object.pointer(path).and_then(Value::as_str);
            Ok(value
                .with_context(|| format!("{what}: an object without {path}: {object}"))?
                .to_string())
        };
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key = ObjectKey::new(
            &field("/kind")?,
            &field("/apiVersion")?,
            namespace,
            &field("/metadata/name")?,
        );
        if objects.insert(key.clone(), object).is_some() {
            bail!("{what}: {key} twice");
        }
    }
    Ok(objects)
}

/// Where two JSON values differ, one line per difference: `path: left ≠ right`.
fn differences(path: &str, left: &Value, right: &Value, out: &mut Vec<String>) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            for k in keys {
                let sub = format!("{path}.{k}");
                match (l.get(k), r.get(k)) {
                    (Some(a), Some(b)) => differences(&sub, a, b, out),
                    (a, b) => out.push(format!("{sub}: {} ≠ {}", show(a), show(b))),
                }
            }
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => {
            for (i, (a, b)) in l.iter().zip(r).enumerate() {
                differences(&format!("{path}[{i}]"), a, b, out);
            }
        }
        // kubectl kustomize re-serialises the CRDs' `minimum: 0.0` as `0`: the same number.
        (Value::Number(l), Value::Number(r)) if l.as_f64() == r.as_f64() => {}
        _ if left != right => out.push(format!("{path}: {left} ≠ {right}")),
        _ => {}
    }
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

/// helm, with none of the user's helm state (repositories, plugins, caches) and no cluster.
fn helm(state: &Path) -> anyhow::Result<Command> {
    let mut command = Command::new(lab_tool("build-helm.sh", "helm")?);
    command
        .env("HELM_CONFIG_HOME", state.join("config"))
        .env("HELM_CACHE_HOME", state.join("cache"))
        .env("HELM_DATA_HOME", state.join("data"))
        .env_remove("KUBECONFIG")
        .env_remove("HELM_NAMESPACE");
    Ok(command)
}

/// `helm template herald deploy/helm/herald --namespace NAMESPACE --include-crds` with `extra`
/// arguments (values), as text.
fn helm_template(namespace: &str, extra: &[&str]) -> anyhow::Result<String> {
    let state = tempfile::tempdir()?;
    output_of(
        helm(state.path())?
            .args(["template", "herald", CHART, "--namespace", namespace])
            .arg("--include-crds")
            .args(extra),
    )
}

fn helm_objects(namespace: &str, extra: &[&str]) -> anyhow::Result<Objects> {
    parse_objects("helm template", &helm_template(namespace, extra)?)
}

fn kustomize_objects() -> anyhow::Result<Objects> {
    let kubectl = lab_tool("build-k8s.sh", "kubectl")?;
    let yaml = output_of(Command::new(kubectl).args(["kustomize", "deploy/kustomize"]))?;
    parse_objects("kubectl kustomize", &yaml)
}

fn object<'a>(objects: &'a Objects, kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|(k, _)| k.kind == kind && k.name == name)
        .map(|(_, v)| v)
        .with_context(|| format!("no {kind} {name} in the render"))
}

/// Each (JSON pointer, value) of `expected` is in `value`.
fn expect_fields(what: &str, value: &Value, expected: &[(&str, Value)]) -> anyhow::Result<()> {
    for (pointer, want) in expected {
        let got = at(value, pointer)?;
        ensure!(got == want, "{what} {pointer}: {got}, expected {want}");
    }
    Ok(())
}

/// The membership key of the chart's Secret, checked to be what the quickstart's
/// `openssl rand -base64 32` makes: the base64 text of 32 random bytes.
fn membership_key(objects: &Objects) -> anyhow::Result<String> {
    let secret = object(objects, "Secret", "herald-memberlist")?;
    ensure!(at(secret, "/type")? == "Opaque", "Secret type: {secret}");
    let data = at(secret, "/data/secretkey")?
        .as_str()
        .context("data.secretkey is not a string")?;
    let key = String::from_utf8(BASE64.decode(data).context("data.secretkey: not base64")?)
        .context("the key is not text")?;
    let bytes = BASE64
        .decode(&key)
        .with_context(|| format!("the key {key:?} is not base64 text"))?;
    ensure!(
        bytes.len() == 32,
        "the key holds {} bytes, not 32",
        bytes.len()
    );
    Ok(key)
}

/// The chart with its default values renders every object of the kustomize base, equal field
/// by field, plus the membership key Secret (the quickstart makes that one with kubectl); the
/// base's Namespace is the Helm release's namespace, which Helm does not render.
#[test]
fn chart_renders_the_kustomize_base() -> anyhow::Result<()> {
    let kustomize = kustomize_objects()?;
    let helm = helm_objects(NAMESPACE, &[])?;

    let only_kustomize: Vec<&ObjectKey> =
        kustomize.keys().filter(|k| !helm.contains_key(k)).collect();
    let only_helm: Vec<&ObjectKey> = helm.keys().filter(|k| !kustomize.contains_key(k)).collect();
    let namespace = ObjectKey::new("Namespace", "v1", "", NAMESPACE);
    let secret = ObjectKey::new("Secret", "v1", NAMESPACE, "herald-memberlist");
    ensure!(
        only_kustomize == [&namespace] && only_helm == [&secret],
        "the renders hold different objects: only in kustomize {only_kustomize:?} \
         (expected only the Namespace), only in helm {only_helm:?} (expected only the Secret)"
    );

    let mut report = Vec::new();
    for (key, expected) in &kustomize {
        if let Some(rendered) = helm.get(key) {
            let mut diffs = Vec::new();
            differences("", expected, rendered, &mut diffs);
            if !diffs.is_empty() {
                report.push(format!(
                    "{key} (kustomize ≠ helm):\n  {}",
                    diffs.join("\n  ")
                ));
            }
        }
    }
    ensure!(
        report.is_empty(),
        "the chart's defaults differ from deploy/kustomize:\n{}",
        report.join("\n")
    );
    let compared: BTreeSet<&str> = helm.keys().map(|k| k.kind.as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
        "DaemonSet",
    ] {
        ensure!(compared.contains(kind), "no {kind} was compared");
    }
    Ok(())
}

/// Every render makes a new random key (`helm install` keeps the cluster's on upgrade, by
/// `lookup`, which `helm template` cannot do).
#[test]
fn chart_makes_a_random_membership_key() -> anyhow::Result<()> {
    let first = membership_key(&helm_objects(NAMESPACE, &[])?)?;
    let second = membership_key(&helm_objects(NAMESPACE, &[])?)?;
    ensure!(first != second, "two renders gave the same key {first:?}");
    Ok(())
}

/// Installed in another namespace, every namespaced object and every RBAC subject follows it,
/// and nothing names herald-system.
#[test]
fn chart_follows_the_release_namespace() -> anyhow::Result<()> {
    let namespace = "lb-example";
    let text = helm_template(namespace, &[])?;
    ensure!(
        !text.contains(NAMESPACE),
        "rendered in {namespace}, the chart still names {NAMESPACE}:\n{text}"
    );
    let objects = parse_objects("helm template", &text)?;
    let cluster_scoped = [
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    for (key, object) in &objects {
        if cluster_scoped.contains(&key.kind.as_str()) {
            ensure!(key.namespace.is_empty(), "{key} is cluster-scoped");
        } else {
            ensure!(key.namespace == namespace, "{key} is not in {namespace}");
        }
        for subject in object
            .pointer("/subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            ensure!(
                at(subject, "/namespace")? == namespace,
                "{key}: subject {subject} outside {namespace}"
            );
        }
    }
    Ok(())
}

/// Every value lands where it should.
#[test]
fn chart_values_reach_the_objects() -> anyhow::Result<()> {
    let objects = helm_objects(
        NAMESPACE,
        &[
            "--set=image.repository=registry.example/herald",
            "--set=image.tag=mine",
            "--set=image.pullPolicy=Always",
            r#"--set-json=imagePullSecrets=[{"name":"registry-example"}]"#,
            "--set=memberlist.existingSecret=my-key",
            "--set=controller.replicas=3",
            "--set=controller.metricsPort=9472",
            r#"--set-json=controller.extraArgs=["--load-balancer-class=example.com/lb"]"#,
            r#"--set-json=controller.resources={"requests":{"cpu":"50m"}}"#,
            r#"--set-json=controller.nodeSelector={"kubernetes.io/os":"linux"}"#,
            r#"--set-json=controller.tolerations=[{"key":"example.com/lb","operator":"Exists"}]"#,
            "--set=speaker.metricsPort=9473",
            r#"--set-json=speaker.extraArgs=["--hold-down-ms=5000"]"#,
            r#"--set-json=speaker.resources={"limits":{"memory":"64Mi"}}"#,
            r#"--set-json=speaker.nodeSelector={"example.com/edge":"true"}"#,
            "--set-json=speaker.tolerations=[]",
        ],
    )?;
    ensure!(
        !objects.keys().any(|k| k.kind == "Secret"),
        "with memberlist.existingSecret the chart must make no Secret"
    );
    let role = object(&objects, "Role", "herald-speaker-memberlist")?;
    ensure!(
        at(role, "/rules/0/resourceNames")? == &json!(["my-key"]),
        "the speaker may not read the existing Secret: {role}"
    );

    let deployment = object(&objects, "Deployment", "herald-controller")?;
    let pod = at(deployment, "/spec/template")?;
    let controller = at(pod, "/spec/containers/0")?;
    let expected_controller = [
        ("/spec/replicas", json!(3)),
        (
            "/spec/template/metadata/annotations/prometheus.io~1port",
            json!("9472"),
        ),
        (
            "/spec/template/spec/imagePullSecrets",
            json!([{"name": "registry-example"}]),
        ),
        (
            "/spec/template/spec/nodeSelector",
            json!({"kubernetes.io/os": "linux"}),
        ),
        (
            "/spec/template/spec/tolerations",
            json!([{"key": "example.com/lb", "operator": "Exists"}]),
        ),
    ];
    expect_fields(
        "Deployment herald-controller",
        deployment,
        &expected_controller,
    )?;
    let expected_container = [
        ("/image", json!("registry.example/herald:mine")),
        ("/imagePullPolicy", json!("Always")),
        (
            "/args",
            json!([
                "--metrics-addr=0.0.0.0:9472",
                "--load-balancer-class=example.com/lb"
            ]),
        ),
        ("/ports/0/containerPort", json!(9472)),
        // Helm merges maps into the defaults (null removes a key).
        (
            "/resources",
            json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}),
        ),
    ];
    expect_fields("the controller container", controller, &expected_container)?;

    let daemonset = object(&objects, "DaemonSet", "herald-speaker")?;
    let pod = at(daemonset, "/spec/template/spec")?;
    let speaker = at(pod, "/containers/0")?;
    ensure!(
        pod.get("tolerations").is_none(),
        "speaker tolerations [] must render none: {pod}"
    );
    ensure!(at(pod, "/nodeSelector")? == &json!({"example.com/edge": "true"}));
    ensure!(at(pod, "/imagePullSecrets")? == &json!([{"name": "registry-example"}]));
    let expected_speaker = [
        ("/image", json!("registry.example/herald:mine")),
        ("/imagePullPolicy", json!("Always")),
        (
            "/args",
            json!([
                "--metrics-addr=0.0.0.0:9473",
                "--secret-name=my-key",
                "--hold-down-ms=5000"
            ]),
        ),
        ("/ports/0/containerPort", json!(9473)),
        (
            "/resources",
            json!({"requests": {"cpu": "10m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}}),
        ),
    ];
    expect_fields("the speaker container", speaker, &expected_speaker)?;
    Ok(())
}

/// Values the chart cannot honour are refused, naming the value: by its schema, or (flags the
/// chart sets itself) by the template.
#[test]
fn chart_refuses_bad_values() -> anyhow::Result<()> {
    let cases = [
        ("--set=controller.replicas=two", "/controller/replicas"),
        ("--set=controler.replicas=3", "'controler' not allowed"),
        ("--set=image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("--set=speaker.metricsPort=70000", "/speaker/metricsPort"),
        (
            "--set=memberlist.existingSecret=Not_A_Name",
            "/memberlist/existingSecret",
        ),
        (
            r#"--set-json=controller.extraArgs=["--lease-namespace","elsewhere"]"#,
            "/controller/extraArgs/1",
        ),
        (
            r#"--set-json=speaker.extraArgs=["--metrics-addr=0.0.0.0:1"]"#,
            "speaker.extraArgs: --metrics-addr is managed by the chart: set speaker.metricsPort",
        ),
        (
            r#"--set-json=speaker.extraArgs=["--secret-name=other"]"#,
            "speaker.extraArgs: --secret-name is managed by the chart: set memberlist.existingSecret",
        ),
        (
            r#"--set-json=speaker.extraArgs=["--witness-lease=other"]"#,
            "speaker.extraArgs: --witness-lease is managed by the chart",
        ),
        (
            r#"--set-json=controller.extraArgs=["--lease-namespace=elsewhere"]"#,
            "controller.extraArgs: --lease-namespace is managed by the chart",
        ),
    ];
    for (value, named) in cases {
        match helm_template(NAMESPACE, &[value]) {
            Ok(_) => bail!("the chart accepted {value}"),
            Err(e) => {
                let message = format!("{e:#}");
                ensure!(
                    message.contains(named),
                    "{value}: the refusal does not say {named:?}: {message}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn chart_passes_helm_lint() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let out =
        output_of(helm(state.path())?.args(["lint", "--strict", "--namespace", NAMESPACE, CHART]))?;
    ensure!(
        out.contains("0 chart(s) failed"),
        "helm lint --strict {CHART}:\n{out}"
    );
    Ok(())
}

/// The chart's CRDs are the generated ones, and its version is the workspace's (the image tag
/// defaults to v<appVersion>).
#[test]
fn chart_follows_the_workspace() -> anyhow::Result<()> {
    let root = repo_root();
    let generated = std::fs::read_to_string(root.join("deploy/crds/herald.yaml"))?;
    let chart_crds = std::fs::read_to_string(root.join(CHART).join("crds/herald.yaml"))
        .context("reading the chart's crds/herald.yaml")?;
    ensure!(
        chart_crds == generated,
        "{CHART}/crds/herald.yaml differs from deploy/crds/herald.yaml: run `make crds` and commit the result"
    );

    let cargo = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let workspace_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .context("no version in Cargo.toml")?;
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(
        root.join(CHART).join("Chart.yaml"),
    )?)?;
    for field in ["version", "appVersion"] {
        ensure!(
            chart.get(field) == Some(&json!(workspace_version)),
            "Chart.yaml {field} is {:?}, the workspace version is {workspace_version}",
            chart.get(field)
        );
    }
    Ok(())
}
