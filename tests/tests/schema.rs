//! One-object validation lives in the CRD schema: the API server refuses bad objects with a
//! message naming the field. And the committed CRD YAML is what the code generates.

use herald_config::l2advertisement::{InterfaceName, PreferredNodeSelector};
use herald_config::pool::{IPAddressPool, ServiceAllocation};
use herald_config::{L2Advertisement, L2AdvertisementSpec};
use herald_tests::{TEST_LABEL, TestEnv, init_tracing, pool_spec};
use kube::api::{Api, PostParams};

#[test]
fn committed_crds_are_generated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds/herald.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = herald_controller::crds::render().expect("render CRDs");
    assert!(
        committed == generated,
        "deploy/crds/herald.yaml is stale: run `make crds` and commit the result"
    );
}

async fn refused(
    api: &Api<IPAddressPool>,
    env: &TestEnv,
    name: &str,
    mut pool: IPAddressPool,
) -> String {
    pool.metadata.name = Some(env.pool_name(name));
    pool.metadata.labels = Some([(TEST_LABEL.to_string(), env.ns.clone())].into());
    match api.create(&PostParams::default(), &pool).await {
        Ok(_) => panic!("{name}: the API server accepted an invalid pool"),
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{name}: {e:?}");
            e.message
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[tokio::test]
async fn bad_pools_are_refused_naming_the_field() -> anyhow::Result<()> {
    init_tracing();
    let env = TestEnv::new("schema").await?;
    let api: Api<IPAddressPool> = Api::all(env.client.clone());
    let cases: &[(&str, &[&str], &str)] = &[
        ("not-an-ip", &["192.0.2.1", "banana"], "spec.addresses[1]"),
        ("bad-cidr", &["192.0.2.0/33"], "spec.addresses[0]"),
        ("mixed", &["192.0.2.1-2001:db8::1"], "spec.addresses[0]"),
        (
            "three-dashes",
            &["192.0.2.1-192.0.2.2-192.0.2.3"],
            "spec.addresses[0]",
        ),
        ("empty", &[], "spec.addresses"),
    ];
    let reserved: &[(&str, &[&str], &str)] = &[
        ("multicast", &["224.0.0.1"], "spec.addresses[0]"),
        (
            "multicast-cidr",
            &["192.0.2.0/24", "239.1.0.0/16"],
            "spec.addresses[1]",
        ),
        ("holds-multicast", &["192.0.0.0/2"], "spec.addresses[0]"),
        ("broadcast", &["255.255.255.255"], "spec.addresses[0]"),
        ("loopback", &["127.0.0.0/8"], "spec.addresses[0]"),
        ("everything", &["0.0.0.0/0"], "spec.addresses[0]"),
        (
            "link-local",
            &["169.254.0.1-169.254.0.9"],
            "spec.addresses[0]",
        ),
        ("unspecified", &["::"], "spec.addresses[0]"),
        ("loopback6", &["::1"], "spec.addresses[0]"),
        ("link-local6", &["fe80::/64"], "spec.addresses[0]"),
        (
            "multicast6",
            &["2001:db8::1", "ff02::1"],
            "spec.addresses[1]",
        ),
        ("holds-multicast6", &["f000::/4"], "spec.addresses[0]"),
    ];
    let reserved_message =
        "holds multicast, broadcast, loopback, link-local or unspecified addresses";
    let expected = cases
        .iter()
        .map(|case| (case, None))
        .chain(reserved.iter().map(|case| (case, Some(reserved_message))));
    for ((name, addresses, field), says) in expected {
        let message = refused(
            &api,
            &env,
            name,
            IPAddressPool::new(name, pool_spec(addresses)),
        )
        .await;
        assert!(message.contains(field), "{name}: {message}");
        if let Some(says) = says {
            assert!(message.contains(says), "{name}: {message}");
        }
    }
    let mut negative = pool_spec(&["192.0.2.0/28"]);
    negative.service_allocation = Some(ServiceAllocation {
        priority: Some(-1),
        ..Default::default()
    });
    let message = refused(
        &api,
        &env,
        "negative",
        IPAddressPool::new("negative", negative),
    )
    .await;
    assert!(
        message.contains("spec.serviceAllocation.priority"),
        "{message}"
    );

    // Valid forms are accepted.
    let mut ok = IPAddressPool::new(
        &env.pool_name("ok"),
        pool_spec(&[
            "192.0.2.0/28",
            "192.0.2.100 - 192.0.2.110",
            "2001:db8::1",
            "2001:db8::/120",
            "192.0.2.77/24",
        ]),
    );
    ok.metadata.labels = Some([(TEST_LABEL.to_string(), env.ns.clone())].into());
    api.create(&PostParams::default(), &ok).await?;

    let ads: Api<L2Advertisement> = Api::all(env.client.clone());
    let bad_ad = |name: &str, spec: L2AdvertisementSpec| {
        let mut ad = L2Advertisement::new(&format!("{}-{name}", env.ns), spec);
        ad.metadata.labels = Some([(TEST_LABEL.to_string(), env.ns.clone())].into());
        ad
    };
    let e = ads
        .create(
            &PostParams::default(),
            &bad_ad(
                "iface",
                L2AdvertisementSpec {
                    interfaces: vec![
                        InterfaceName("eth0".into()),
                        InterfaceName("has space".into()),
                    ],
                    ..Default::default()
                },
            ),
        )
        .await
        .expect_err("interface name with a space");
    assert!(e.to_string().contains("spec.interfaces[1]"), "{e}");
    let e = ads
        .create(
            &PostParams::default(),
            &bad_ad(
                "weight",
                L2AdvertisementSpec {
                    preferred_node_selectors: vec![PreferredNodeSelector {
                        weight: 0,
                        preference: Default::default(),
                    }],
                    ..Default::default()
                },
            ),
        )
        .await
        .expect_err("weight 0");
    assert!(
        e.to_string()
            .contains("spec.preferredNodeSelectors[0].weight"),
        "{e}"
    );
    ads.delete_collection(
        &Default::default(),
        &kube::api::ListParams::default().labels(&format!("{TEST_LABEL}={}", env.ns)),
    )
    .await?;
    env.cleanup().await
}

/// `kubectl apply` shows the same refusal, and `kubectl get` the printer columns.
#[tokio::test]
async fn kubectl_refuses_and_prints_columns() -> anyhow::Result<()> {
    init_tracing();
    let Ok(kubectl) = which("kubectl") else {
        eprintln!("SKIPPED kubectl_refuses_and_prints_columns: kubectl is not installed");
        return Ok(());
    };
    let env = TestEnv::new("kubectl").await?;
    let bad = format!(
        "apiVersion: herald.dev/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {}\nspec:\n  addresses: [\"192.0.2.0/40\"]\n",
        env.pool_name("bad")
    );
    let out = run_with_stdin(&kubectl, &["apply", "-f", "-"], &bad)?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.addresses[0]"), "{stderr}");

    env.apply_pool("shown", pool_spec(&["192.0.2.176/29"]))
        .await?;
    let out = std::process::Command::new(&kubectl)
        .args(["get", "ipaddresspools", &env.pool_name("shown")])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    for column in [
        "ADDRESSES",
        "AUTO ASSIGN",
        "ASSIGNED IPV4",
        "AVAILABLE IPV4",
        "ASSIGNED IPV6",
        "AVAILABLE IPV6",
    ] {
        assert!(table.contains(column), "{column} missing:\n{table}");
    }
    assert!(table.contains("192.0.2.176/29"), "{table}");
    env.cleanup().await
}

fn which(cmd: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{cmd} not found"))
}

fn run_with_stdin(
    cmd: &std::path::Path,
    args: &[&str],
    input: &str,
) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let mut child = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}
