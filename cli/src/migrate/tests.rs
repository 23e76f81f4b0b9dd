use super::*;

fn fixture(name: &str) -> Vec<SourceDocument> {
    let text = match name {
        "layer2-simple" => include_str!("../../tests/fixtures/metallb/layer2-simple.yaml"),
        "pools-and-advertisements" => {
            include_str!("../../tests/fixtures/metallb/pools-and-advertisements.yaml")
        }
        "bgp" => include_str!("../../tests/fixtures/metallb/bgp.yaml"),
        "services" => include_str!("../../tests/fixtures/metallb/services.yaml"),
        "kubectl-list" => include_str!("../../tests/fixtures/metallb/kubectl-list.yaml"),
        "unknown-field" => include_str!("../../tests/fixtures/metallb/unknown-field.yaml"),
        other => panic!("no fixture {other}"),
    };
    parse_documents(name, text).expect("fixtures are YAML")
}

fn object<'a>(m: &'a Migration, kind: &str, name: &str) -> &'a Value {
    m.objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", m.objects))
}

#[test]
fn the_simplest_layer2_configuration_moves_whole() {
    let m = migrate(&fixture("layer2-simple")).expect("migrates");
    assert!(m.is_complete(), "{:#?}", m.findings);
    let pool = object(&m, "IPAddressPool", "first-pool");
    assert_eq!(pool["apiVersion"], "herald.dev/v1beta1");
    assert_eq!(
        pool["spec"]["addresses"],
        json!(["192.0.2.240-192.0.2.250"])
    );
    assert_eq!(pool["spec"]["autoAssign"], true);
    assert!(
        pool["metadata"].get("namespace").is_none(),
        "Herald's pools are cluster-scoped"
    );
    let ad = object(&m, "L2Advertisement", "example");
    assert_eq!(ad["spec"], json!({}));
    // The empty advertisement covers every pool; said, not lost.
    assert!(m.findings.iter().all(|f| f.severity == Severity::Note));
}

#[test]
fn every_documented_pool_and_advertisement_field_is_carried_over() {
    let m = migrate(&fixture("pools-and-advertisements")).expect("migrates");
    assert!(m.is_complete(), "{:#?}", m.findings);
    assert_eq!(m.objects.len(), 5);
    // Pools first, then advertisements, each in input order.
    let kinds: Vec<_> = m
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "IPAddressPool",
            "IPAddressPool",
            "IPAddressPool",
            "L2Advertisement",
            "L2Advertisement"
        ]
    );
    let production = object(&m, "IPAddressPool", "production");
    assert_eq!(production["spec"]["avoidBuggyIPs"], true);
    assert_eq!(production["spec"]["addresses"][2], "2001:db8:1::/120");
    assert_eq!(production["metadata"]["labels"], json!({"zone": "east"}));
    assert_eq!(
        production["metadata"]["annotations"],
        json!({"team": "network"}),
        "kubectl's record of the MetalLB object is not carried over"
    );
    assert_eq!(
        object(&m, "IPAddressPool", "expensive")["spec"]["autoAssign"],
        false
    );
    let scoped = &object(&m, "IPAddressPool", "ns-scoped")["spec"]["serviceAllocation"];
    assert_eq!(scoped["priority"], 50);
    assert_eq!(scoped["namespaces"], json!(["shop"]));
    assert_eq!(
        scoped["namespaceSelectors"],
        json!([{"matchLabels": {"tier": "gold"}}])
    );
    assert_eq!(
        scoped["serviceSelectors"][0]["matchExpressions"][0]["values"],
        json!(["public"])
    );
    let by_name = object(&m, "L2Advertisement", "by-name");
    assert_eq!(
        by_name["spec"]["ipAddressPools"],
        json!(["production", "expensive"])
    );
    assert_eq!(by_name["spec"]["interfaces"], json!(["eth0", "bond0.100"]));
    assert_eq!(
        by_name["spec"]["nodeSelectors"].as_array().map(Vec::len),
        Some(2)
    );
    let by_label = object(&m, "L2Advertisement", "by-label");
    assert_eq!(
        by_label["spec"]["ipAddressPoolSelectors"][0]["matchExpressions"][0]["key"],
        "zone"
    );
}

#[test]
fn the_output_is_valid_herald_configuration() {
    let m = migrate(&fixture("pools-and-advertisements")).expect("migrates");
    let yaml = m.to_yaml().expect("serializes");
    let back = parse_documents("out", &yaml).expect("output is YAML");
    assert_eq!(back.len(), m.objects.len());
    for doc in back {
        let json = serde_json::to_value(&doc.value).expect("json");
        match json["kind"].as_str() {
            Some("IPAddressPool") => {
                let pool: IPAddressPool = serde_json::from_value(json).expect("a Herald pool");
                assert!(!pool.spec.addresses.is_empty());
            }
            Some("L2Advertisement") => {
                let _: L2Advertisement = serde_json::from_value(json).expect("a Herald ad");
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
}

#[test]
fn bgp_is_reported_object_by_object_and_the_pool_still_moves() {
    let m = migrate(&fixture("bgp")).expect("migrates");
    assert!(!m.is_complete());
    object(&m, "IPAddressPool", "bgp-pool");
    assert_eq!(m.objects.len(), 1);
    let unsupported: Vec<&str> = m
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Unsupported)
        .map(|f| f.object.as_str())
        .collect();
    assert_eq!(unsupported.len(), 4, "{unsupported:#?}");
    for kind in [
        "BGPPeer metallb-system/sample",
        "BGPAdvertisement metallb-system/local",
        "Community metallb-system/communities",
        "BFDProfile metallb-system/fast",
    ] {
        assert!(
            unsupported.iter().any(|o| o.starts_with(kind)),
            "{kind} not reported: {unsupported:#?}"
        );
    }
    assert!(m.findings[0].to_string().contains("BGP has no equivalent"));
    assert!(
        m.findings[0].object.contains("bgp #1"),
        "the origin is named"
    );
}

#[test]
fn fields_herald_lacks_are_named_with_their_path() {
    let m = migrate(&fixture("unknown-field")).expect("migrates");
    assert!(!m.is_complete());
    let fields: Vec<_> = m
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Unsupported)
        .filter_map(|f| f.field.as_deref())
        .collect();
    assert_eq!(
        fields,
        ["spec.futureField", "spec.nodeSelectors[0].somethingElse"]
    );
    let ad = object(&m, "L2Advertisement", "newer");
    assert_eq!(
        ad["spec"]["nodeSelectors"],
        json!([{"matchLabels": {"role": "edge"}}])
    );
}

#[test]
fn a_kubectl_list_is_read_item_by_item_without_server_fields() {
    let m = migrate(&fixture("kubectl-list")).expect("migrates");
    assert!(m.is_complete(), "{:#?}", m.findings);
    let pool = object(&m, "IPAddressPool", "listed");
    assert_eq!(pool["metadata"], json!({"name": "listed"}));
    assert!(pool.get("status").is_none());
    object(&m, "L2Advertisement", "listed");
}

#[test]
fn services_are_listed_with_what_herald_makes_of_each_annotation() {
    let m = migrate(&fixture("services")).expect("migrates");
    assert!(m.objects.is_empty());
    assert_eq!(
        m.services.len(),
        2,
        "the Service without MetalLB annotations is not listed"
    );
    let web = &m.services[0];
    assert_eq!(web.service, "shop/web");
    assert_eq!(
        web.annotations["metallb.io/loadBalancerIPs"],
        AnnotationVerdict::Honoured
    );
    assert_eq!(
        web.annotations["metallb.io/allow-shared-ip"],
        AnnotationVerdict::Honoured
    );
    assert!(matches!(
        web.annotations["metallb.io/ip-allocated-from-pool"],
        AnnotationVerdict::Ignored { .. }
    ));
    let legacy = &m.services[1];
    assert!(matches!(
        &legacy.annotations["metallb.universe.tf/address-pool"],
        AnnotationVerdict::HonouredDeprecated { rename_to } if rename_to.starts_with("metallb.io/address-pool")
    ));
    assert!(m.is_complete());
}

#[test]
fn an_annotation_herald_does_not_read_makes_the_result_incomplete() {
    let docs = parse_documents(
        "svc",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: b\n  annotations:\n    metallb.io/some-future-knob: x\n",
    )
    .expect("yaml");
    let m = migrate(&docs).expect("migrates");
    assert_eq!(
        m.services[0].annotations["metallb.io/some-future-knob"],
        AnnotationVerdict::Unsupported
    );
    assert!(!m.is_complete());
}

#[test]
fn two_namespaces_with_one_pool_name_cannot_both_move() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: a}\nspec: {addresses: [192.0.2.1/32]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: b}\nspec: {addresses: [192.0.2.2/32]}\n";
    let m = migrate(&parse_documents("dup", text).expect("yaml")).expect("migrates");
    assert_eq!(m.objects.len(), 1);
    assert_eq!(m.objects[0]["spec"]["addresses"], json!(["192.0.2.1/32"]));
    assert!(!m.is_complete());
    assert_eq!(m.findings[0].field.as_deref(), Some("metadata.name"));
    assert!(m.findings[0].object.starts_with("IPAddressPool b/p"));
}

#[test]
fn garbage_is_a_clear_error() {
    let cases = [
        ("key: [unclosed", "not valid YAML"),
        ("just a string", "not a Kubernetes object"),
        ("- a\n- list", "not a Kubernetes object"),
        (
            "apiVersion: metallb.io/v1beta1\nmetadata: {name: x}",
            "no kind",
        ),
        ("kind: IPAddressPool\nmetadata: {name: x}", "no apiVersion"),
        (
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {}",
            "no metadata.name",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: [192.0.2.0/40]}",
            "spec.addresses[0]",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: 5}",
            "IPAddressPool x (garbage #1): spec:",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: []}",
            "at least one address",
        ),
        (
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: x}\nspec: {interfaces: [a-name-far-too-long]}",
            "spec.interfaces[0]",
        ),
        ("apiVersion: v1\nkind: List\nitems: [3]", "items[0]"),
        ("", "no documents"),
    ];
    for (text, expected) in cases {
        let result = parse_documents("garbage", text).and_then(|docs| migrate(&docs));
        match result {
            Ok(m) => panic!("{text:?} migrated: {m:#?}"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{text:?}: {e} does not say {expected:?}"
            ),
        }
    }
}

#[test]
fn other_objects_are_noted_not_lost() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app, namespace: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\ndata: {config: 'address-pools: []'}\n---\napiVersion: metallb.io/v1beta1\nkind: ServiceL2Status\nmetadata: {name: l2-abc, namespace: metallb-system}\n";
    let m = migrate(&parse_documents("mixed", text).expect("yaml")).expect("migrates");
    let severities: Vec<_> = m
        .findings
        .iter()
        .map(|f| (f.object.split(' ').next().unwrap_or_default(), f.severity))
        .collect();
    assert_eq!(
        severities,
        [
            ("Deployment", Severity::Note),
            ("ConfigMap", Severity::Unsupported),
            ("ServiceL2Status", Severity::Note)
        ]
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the input, `migrate` answers (objects or an error) and never panics.
        #[test]
        fn never_panics_on_any_yaml(text in "\\PC{0,200}") {
            let _ = parse_documents("any", &text).and_then(|docs| migrate(&docs));
        }

        /// Any IPv4 pool range MetalLB accepts moves unchanged.
        #[test]
        fn ranges_move_unchanged(a in 0u8..=255, b in 0u8..=255) {
            let (lo, hi) = (a.min(b), a.max(b));
            let entry = format!("192.0.2.{lo}-192.0.2.{hi}");
            let text = format!("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p}}\nspec: {{addresses: ['{entry}']}}\n");
            let m = migrate(&parse_documents("p", &text).expect("yaml")).expect("migrates");
            prop_assert_eq!(&m.objects[0]["spec"]["addresses"], &json!([entry]));
            prop_assert!(m.is_complete());
        }
    }
}
