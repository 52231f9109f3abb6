//! Any bytes that are UTF-8 go through `check`; a valid rule is evaluated and explained on a
//! fixed device, and explain must agree with evaluate. Printing a parsed tree and parsing it
//! back must give the same tree.
//!
//! From crates/rules, on the stable toolchain:
//! `cargo fuzz run -s none parse_check_eval -- -max_total_time=300 -dict=fuzz/rules.dict`
//! (seed the corpus first with `mkdir -p fuzz/corpus/parse_check_eval && cp
//! fuzz/seeds/parse_check_eval/* fuzz/corpus/parse_check_eval/`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use unbox_rules::{JsonDevice, MAX_RULE_LENGTH, check, parse};

static DEVICES: LazyLock<Vec<JsonDevice>> = LazyLock::new(|| {
    let devices = [
        serde_json::json!({
            "deviceId": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "displayName": "SALES-7XK2",
            "deviceManufacturer": "Dell Inc.",
            "deviceModel": "Latitude 7440",
            "deviceOSType": "Windows",
            "deviceOwnership": "Company",
            "accountEnabled": true,
            "groupTag": "Sales",
            "extensionAttribute1": "O'Brien \u{212A}",
            "devicePhysicalIds": ["[ZTDId]:0f8fad5b", "[OrderID]:Sales", "[PurchaseOrderId]:PO-1001"],
            "systemLabels": ["M365Managed"]
        }),
        serde_json::json!({}),
    ];
    devices
        .iter()
        .filter_map(|value| JsonDevice::from_value(value).ok())
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(rule) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check(rule);
    assert_eq!(checked.rule.is_some(), checked.errors().next().is_none());
    for diagnostic in &checked.diagnostics {
        assert!(diagnostic.start <= diagnostic.end && diagnostic.end <= rule.len());
    }
    if let Some(compiled) = &checked.rule {
        for device in DEVICES.iter() {
            let result = compiled.evaluate(device);
            let explanation = compiled.explain(device);
            assert_eq!(explanation.membership_rule_evaluation_result, result);
        }
    }
    if let Some(tree) = parse(rule).expr {
        let printed = tree.to_string();
        if printed.chars().count() <= MAX_RULE_LENGTH {
            let reparsed = parse(&printed).expr.map(|expr| expr.without_spans());
            assert_eq!(reparsed, Some(tree.without_spans()), "{printed}");
            assert_eq!(check(&printed).is_valid(), checked.is_valid(), "{printed}");
        }
    }
});
