//! `unbox` as the built binary: help texts, argument parsing, the login file's location, and
//! what needs no server. Everything against a server is in tests/e2e/cli.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `unbox` with a clean environment of its own (no UNBOX_* from the caller).
fn unbox(args: &[&str], config_home: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_unbox"));
    for (name, _) in std::env::vars() {
        if name.starts_with("UNBOX_") {
            command.env_remove(name);
        }
    }
    command
        .env("XDG_CONFIG_HOME", config_home)
        .args(args)
        .output()
        .expect("the unbox binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_documents_every_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let output = unbox(&["--help"], home.path());
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    for line in [
        "Exit status:",
        "0  success",
        "1  failure",
        "2  usage or invalid input",
        "3  not found",
        "4  unauthorized or forbidden",
        "5  conflict",
        "6  an import finished with failed rows",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    for command in [
        "login",
        "logout",
        "devices",
        "import",
        "imports",
        "profiles",
        "groups",
        "deployments",
        "partner",
        "rules",
        "hwid",
        "device",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} missing from:\n{help}"
        );
    }
    let import = text(&unbox(&["import", "--help"], home.path()).stdout);
    assert!(
        import.contains("6 when it finished with failed rows"),
        "{import}"
    );
    let boot = text(&unbox(&["device", "boot", "--help"], home.path()).stdout);
    assert!(
        boot.contains("3 when the device is not registered"),
        "{boot}"
    );
    let hwid = text(&unbox(&["hwid", "--help"], home.path()).stdout);
    assert!(
        hwid.contains("2 when the machine has no usable identity"),
        "{hwid}"
    );
}

#[test]
fn rules_may_begin_with_a_hyphen_everywhere() {
    let home = tempfile::tempdir().unwrap();
    let rule = r#"-not (device.deviceOwnership -eq "Company")"#;
    for args in [
        vec!["groups", "validate-rule", "--rule", rule],
        vec!["groups", "create", "--name", "x", "--rule", rule],
        vec![
            "groups",
            "evaluate",
            "--rule",
            rule,
            "--device-id",
            "0193a1b2-0000-7000-8000-000000000000",
        ],
        vec![
            "groups",
            "update",
            "0193a1b2-0000-7000-8000-000000000000",
            "--rule",
            rule,
        ],
    ] {
        // Parsed: the command gets as far as wanting credentials (exit 4), not a usage error.
        let mut all = vec!["--server", "http://127.0.0.1:9"];
        all.extend(args.iter());
        let output = unbox(&all, home.path());
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: not logged in"), "{stderr}");
    }
}

#[test]
fn secrets_may_begin_with_a_hyphen() {
    // Generated secrets are base64url: one in 64 begins with '-'.
    let home = tempfile::tempdir().unwrap();
    let output = unbox(
        &[
            "--server",
            "http://127.0.0.1:9",
            "--client-id",
            "-id",
            "--client-secret",
            "-8Xy_secret",
            "devices",
            "list",
        ],
        home.path(),
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_on_stderr() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec!["devices", "show", "not-a-uuid"],
        vec!["devices", "list", "--limit", "2", "--all"],
        vec!["profiles", "assign", "0193a1b2-0000-7000-8000-000000000000"],
        vec!["hwid", "--format", "xml"],
        vec!["nonsense"],
    ] {
        let output = unbox(&args, home.path());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
    // No server anywhere: exit 2 with what to do.
    let output = unbox(&["devices", "list"], home.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("pass --server URL"));
}

#[test]
fn the_login_file_lives_in_the_config_directory() {
    let home = tempfile::tempdir().unwrap();
    let output = unbox(&["logout"], home.path());
    assert_eq!(output.status.code(), Some(0));
    let expected = home.path().join("unbox").join("config.json");
    assert_eq!(
        text(&output.stdout).trim(),
        format!("Not logged in: there is no {}", expected.display())
    );
    // A saved login (made by hand here) is found there, and logout removes it.
    std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
    std::fs::write(
        &expected,
        r#"{"server": "http://127.0.0.1:9", "clientId": "a", "clientSecret": "b"}"#,
    )
    .unwrap();
    let output = unbox(&["devices", "list"], home.path());
    assert_eq!(output.status.code(), Some(1), "the saved server is used");
    assert!(text(&output.stderr).contains("cannot reach http://127.0.0.1:9"));
    let output = unbox(&["logout", "-o", "json"], home.path());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["removed"], true);
    assert!(!expected.exists());
}

#[test]
fn hwid_of_a_tree_and_of_nothing() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dmi = root.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    for (name, value) in [
        ("sys_vendor", "LENOVO\n"),
        ("product_name", "21HD\n"),
        ("product_serial", "PF4XYZ12\n"),
    ] {
        std::fs::write(dmi.join(name), value).unwrap();
    }
    let root_arg = root.path().to_str().unwrap();
    let output = unbox(&["hwid", "--root", root_arg], home.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let identity: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(identity["serialNumber"], "PF4XYZ12");
    assert_eq!(identity["macAddresses"], serde_json::json!([]));
    let csv = unbox(
        &["hwid", "--root", root_arg, "--format", "csv"],
        home.path(),
    );
    assert!(
        text(&csv.stdout)
            .starts_with("Device Serial Number,Windows Product ID,Hardware Hash\r\nPF4XYZ12,,T0")
    );

    let empty = tempfile::tempdir().unwrap();
    let output = unbox(
        &["hwid", "--root", empty.path().to_str().unwrap()],
        home.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("holds no sysfs tree"));
}
