//! `unbox rules check|eval`, run as the built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

fn unbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unbox"))
        .args(args)
        .output()
        .expect("the unbox binary runs")
}

/// Exit code and parsed stdout.
fn run_json(args: &[&str]) -> (i32, Value) {
    let output = unbox(args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "stdout of {args:?} is not JSON ({error}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), value)
}

/// A file of its own in this test target's scratch folder. Tests run in
/// parallel, so each call gets a fresh name: a shared one would let one test
/// read the file while another truncates it.
fn scratch_file(name: &str, contents: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique);
    std::fs::write(&path, contents).unwrap();
    path
}

fn sales_laptop() -> PathBuf {
    scratch_file(
        "sales-laptop.json",
        &json!({
            "deviceModel": "Latitude 7440",
            "deviceOwnership": "Company",
            "accountEnabled": true,
            "devicePhysicalIds": ["[ZTDId]:0f8fad5b", "[OrderID]:Sales"],
            "systemLabels": []
        })
        .to_string(),
    )
}

#[test]
fn check_valid_rule() {
    let (code, value) = run_json(&[
        "rules",
        "check",
        "--rule",
        r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#,
    ]);
    assert_eq!(code, 0);
    assert_eq!(value, json!({"valid": true, "diagnostics": []}));
}

#[test]
fn check_valid_rule_with_warning() {
    let (code, value) = run_json(&[
        "rules",
        "check",
        "--rule",
        r#"device.devicePhysicalIds -any _ -startsWith "[ZTDId]""#,
    ]);
    assert_eq!(code, 0);
    assert_eq!(value["valid"], json!(true));
    assert_eq!(value["diagnostics"][0]["severity"], json!("warning"));
}

#[test]
fn check_invalid_rule() {
    let (code, value) = run_json(&[
        "rules",
        "check",
        "--rule",
        r#"(device.invalidProperty -eq "Value")"#,
    ]);
    assert_eq!(code, 2);
    assert_eq!(value["valid"], json!(false));
    let error = &value["diagnostics"][0];
    assert_eq!(error["severity"], json!("error"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Attribute not supported")
    );
    assert_eq!(
        (error["start"].clone(), error["end"].clone()),
        (json!(1), json!(23))
    );
}

#[test]
fn rule_may_begin_with_a_hyphen() {
    let (code, value) = run_json(&[
        "rules",
        "check",
        "--rule",
        r#"-not (device.deviceOwnership -eq "Company")"#,
    ]);
    assert_eq!(code, 0, "{value}");
    assert_eq!(value["valid"], json!(true));

    let device = sales_laptop();
    let (code, value) = run_json(&[
        "rules",
        "eval",
        "--rule",
        r#"-not (device.deviceOwnership -eq "Company")"#,
        "--device",
        device.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(value["result"], json!(false));
}

#[test]
fn eval_valid_rule() {
    let device = sales_laptop();
    let device = device.to_str().unwrap();
    let (code, value) = run_json(&[
        "rules",
        "eval",
        "--rule",
        r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:sales")) -and device.accountEnabled -eq true"#,
        "--device",
        device,
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        value,
        json!({"valid": true, "result": true, "diagnostics": []})
    );

    // A false result is still a successful run; absent properties are null.
    let (code, value) = run_json(&[
        "rules",
        "eval",
        "--rule",
        "device.groupTag -ne null",
        "--device",
        device,
    ]);
    assert_eq!(code, 0);
    assert_eq!(value["result"], json!(false));
}

#[test]
fn eval_reports_warnings_and_explains() {
    let device = sales_laptop();
    let (code, value) = run_json(&[
        "rules",
        "eval",
        "--rule",
        r#"device.deviceModel –eq "latitude 7440""#,
        "--device",
        device.to_str().unwrap(),
        "--explain",
    ]);
    assert_eq!(code, 0);
    assert_eq!(value["result"], json!(true));
    assert_eq!(value["diagnostics"][0]["severity"], json!("warning"));
    assert_eq!(
        value["explanation"]["membershipRuleEvaluationResult"],
        json!(true)
    );
    assert_eq!(
        value["explanation"]["membershipRuleEvaluationDetails"]["propertyToEvaluate"],
        json!({"propertyName": "deviceModel", "propertyValue": "Latitude 7440"})
    );
}

#[test]
fn eval_invalid_rule() {
    let device = sales_laptop();
    let (code, value) = run_json(&[
        "rules",
        "eval",
        "--rule",
        r#"device.systemLabels -contains "x" -and device.deviceModel -eq Latitude"#,
        "--device",
        device.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(value["valid"], json!(false));
    assert!(value.get("result").is_none());
    let first = &value["diagnostics"][0];
    assert_eq!(first["severity"], json!("error"));
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .starts_with("Query compilation error")
    );
}

#[test]
fn eval_reads_the_device_from_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unbox"))
        .args([
            "rules",
            "eval",
            "--rule",
            r#"device.groupTag -eq "Sales""#,
            "--device",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"groupTag": "sales"}"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["result"], json!(true));
}

#[test]
fn bad_device_file_is_a_one_line_error() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-device.json");
    let not_json = scratch_file("not-json.json", "{\"deviceModel\": ");
    let wrong_type = scratch_file("wrong-type.json", r#"{"accountEnabled": "yes"}"#);
    let not_object = scratch_file("not-object.json", "[1, 2]");
    for (path, expected) in [
        (&missing, "cannot read device file"),
        (&not_json, "invalid JSON"),
        (&wrong_type, "accountEnabled"),
        (&not_object, "JSON object"),
    ] {
        let output = unbox(&[
            "rules",
            "eval",
            "--rule",
            "device.accountEnabled -eq true",
            "--device",
            path.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1), "{path:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let output = unbox(&["rules", "eval", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--device <FILE>"));
    assert!(help.contains("1 when the device file cannot be read"));
    let output = unbox(&["rules", "check", "--help"]);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("2 when it is not"));
}

#[test]
fn missing_rule_is_a_usage_error() {
    let output = unbox(&["rules", "check"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rule"));
}
