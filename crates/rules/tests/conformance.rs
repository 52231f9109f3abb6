//! Every case of shared/testdata/rules/conformance.json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::Value;
use unbox_rules::{JsonDevice, Severity, check};

const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/rules/conformance.json"
);

fn conformance() -> Value {
    let text = std::fs::read_to_string(CONFORMANCE).unwrap_or_else(|error| {
        panic!(
            "cannot read the conformance cases at {CONFORMANCE}: {error}. \
             The shared/ folder must sit beside the repository (shared/testdata/rules/conformance.json)."
        )
    });
    serde_json::from_str(&text).expect("conformance.json is valid JSON")
}

#[test]
fn every_conformance_case_passes() {
    let data = conformance();
    let devices: BTreeMap<String, JsonDevice> = data["devices"]
        .as_object()
        .expect("devices")
        .iter()
        .map(|(name, value)| {
            let device = JsonDevice::from_value(value)
                .unwrap_or_else(|error| panic!("device {name}: {error}"));
            (name.clone(), device)
        })
        .collect();
    let cases = data["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());

    let mut failures = Vec::new();
    for case in cases {
        let rule = case["rule"].as_str().expect("rule");
        let checked = check(rule);
        let warns = case["warns"].as_bool().unwrap_or(false);
        let has_warning = checked
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning);
        if case["valid"].as_bool().expect("valid") {
            let Some(compiled) = &checked.rule else {
                failures.push(format!(
                    "{rule:?}: expected valid, got {:?}",
                    checked.diagnostics
                ));
                continue;
            };
            if warns != has_warning {
                failures.push(format!(
                    "{rule:?}: expected warning: {warns}, diagnostics {:?}",
                    checked.diagnostics
                ));
            }
            for (name, expected) in case["expect"].as_object().expect("expect") {
                let device = &devices[name];
                let expected = expected.as_bool().expect("bool");
                let result = compiled.evaluate(device);
                let explained = compiled.explain(device).membership_rule_evaluation_result;
                if result != expected || explained != expected {
                    failures.push(format!(
                        "{rule:?} on {name}: expected {expected}, evaluate gave {result}, explain gave {explained}"
                    ));
                }
            }
        } else {
            let expected = case["error"].as_str().expect("error");
            match checked.diagnostics.first() {
                Some(first)
                    if checked.rule.is_none()
                        && first.severity == Severity::Error
                        && first.message.starts_with(expected) =>
                {
                    assert!(first.start <= first.end && first.end <= rule.len());
                }
                _ => failures.push(format!(
                    "{rule:?}: expected an error starting {expected:?}, got {:?}",
                    checked.diagnostics
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
