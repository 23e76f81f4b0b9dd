//! The real `herald-speaker` binary refuses bad flags at start, with a message that says which
//! flag and why — before it needs a cluster (no KUBECONFIG is set here, so a flag that passed
//! would fail later, differently).

use std::process::Command;

/// Runs the speaker with `args` and no cluster configuration: its exit status and stderr.
fn start(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-speaker"))
        .args(["--node-name", "hl-node1", "--log-format", "text"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .expect("the speaker binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    let cases: [(&[&str], &str); 9] = [
        (&["--heartbeat-ms", "0"], "--heartbeat-ms must be above 0"),
        (
            &["--withdraw-after-ms", "400", "--dead-after-ms", "600"],
            "--dead-after-ms (600 ms) must be at least twice --withdraw-after-ms (400 ms)",
        ),
        (
            &["--withdraw-after-ms", "150"],
            "--withdraw-after-ms (150 ms) must be longer than two heartbeat intervals",
        ),
        (
            &["--hold-down-ms", "1000"],
            "--hold-down-ms (1000 ms) must be at least twice --dead-after-ms",
        ),
        (
            &["--gratuitous-refresh-s", "18446744073709551615"],
            "--gratuitous-refresh-s is 18446744073709551615 s, more than the 86400 s accepted",
        ),
        (
            &["--membership-port", "0"],
            "--membership-port must not be 0",
        ),
        (
            &["--dead-after-ms", "3800", "--hold-down-ms", "8000"],
            "below the witness Lease's margin",
        ),
        (
            &["--heartbeat-ms", "99999999999"],
            "--heartbeat-ms is longer than an hour",
        ),
        (
            &["--key-rotation-window-s", "99999"],
            "--key-rotation-window-s is 99999 s",
        ),
    ];
    for (args, reason) in cases {
        let (ok, stderr) = start(args);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            stderr.contains("refusing to start") && stderr.contains(reason),
            "{args:?}: expected {reason:?} in\n{stderr}"
        );
    }
}

#[test]
fn good_flags_pass_the_check_and_fail_only_for_want_of_a_cluster() {
    let (ok, stderr) = start(&[
        "--heartbeat-ms",
        "50",
        "--withdraw-after-ms",
        "150",
        "--dead-after-ms",
        "400",
        "--hold-down-ms",
        "800",
        "--membership-addr",
        "127.0.0.1",
    ]);
    assert!(!ok);
    assert!(
        !stderr.contains("refusing to start") && stderr.contains("no Kubernetes client"),
        "{stderr}"
    );
}
