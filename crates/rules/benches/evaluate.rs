//! Evaluations per second of typical Autopilot rules on one core.
//!
//! `cargo bench -p unbox-rules --bench evaluate`; criterion reports the time per evaluation
//! and, through `Throughput::Elements(1)`, evaluations per second ("elem/s").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use unbox_rules::{CompiledRule, DeviceProperties, Property, check};

/// A device as a server might hold it: plain fields, read without allocating.
struct Device {
    strings: Vec<Option<String>>,
    account_enabled: Option<bool>,
    device_physical_ids: Vec<String>,
    system_labels: Vec<String>,
}

impl Device {
    fn new(strings: &[(Property, &str)], physical_ids: &[&str]) -> Device {
        let mut device = Device {
            strings: vec![None; unbox_rules::PROPERTY_COUNT],
            account_enabled: Some(true),
            device_physical_ids: physical_ids.iter().map(|id| (*id).to_owned()).collect(),
            system_labels: Vec::new(),
        };
        for (property, value) in strings {
            device.strings[property.index().unwrap()] = Some((*value).to_owned());
        }
        device
    }
}

impl DeviceProperties for Device {
    fn string(&self, property: Property) -> Option<&str> {
        self.strings.get(property.index()?)?.as_deref()
    }

    fn boolean(&self, property: Property) -> Option<bool> {
        (property == Property::AccountEnabled)
            .then_some(self.account_enabled)
            .flatten()
    }

    fn collection(&self, property: Property) -> &[String] {
        match property {
            Property::DevicePhysicalIds => &self.device_physical_ids,
            Property::SystemLabels => &self.system_labels,
            _ => &[],
        }
    }
}

fn sales_laptop() -> Device {
    Device::new(
        &[
            (Property::DeviceManufacturer, "Dell Inc."),
            (Property::DeviceModel, "Latitude 7440"),
            (Property::DisplayName, "SALES-7XK2"),
            (Property::DeviceOwnership, "Company"),
            (Property::GroupTag, "Sales"),
            (Property::DeviceOsType, "Windows"),
        ],
        &[
            "[ZTDId]:0f8fad5b-d9cb-469f-a165-70867728950e",
            "[OrderID]:Sales",
            "[PurchaseOrderId]:PO-1001",
        ],
    )
}

fn kiosk() -> Device {
    Device::new(
        &[
            (Property::DeviceManufacturer, "Microsoft Corporation"),
            (Property::DeviceModel, "Surface Laptop 5"),
            (Property::DisplayName, "KIOSK-factorykiosk"),
            (Property::DeviceOwnership, "Company"),
            (Property::GroupTag, "F1.C1.SU"),
            (Property::DeviceOsType, "Windows"),
        ],
        &[
            "[ZTDID]:16fd2706-8baf-433b-82eb-8c7fada847da",
            "[OrderID]:F1.C1.SU",
            "[PurchaseOrderId]:PO-2002",
        ],
    )
}

const RULES: &[(&str, &str)] = &[
    (
        "any_eq_order_id",
        r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#,
    ),
    ("group_tag_eq", r#"device.groupTag -eq "Sales""#),
    (
        "any_starts_with_ztdid",
        r#"(device.devicePhysicalIds -any (_ -startsWith "[ZTDId]"))"#,
    ),
    (
        "display_name_match",
        r#"device.displayName -match "^SALES-[0-9A-Z]+$""#,
    ),
    (
        "and_or_combination",
        r#"(device.deviceManufacturer -eq "Microsoft Corporation" -and device.deviceModel -startsWith "Surface") -or ((device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales")) -and device.accountEnabled -eq true)"#,
    ),
    (
        "ownership_in",
        r#"device.deviceOwnership -in ["Personal", "Unknown", "Company"]"#,
    ),
    ("model_contains", r#"device.deviceModel -contains "laptop""#),
];

fn compile(rule: &str) -> CompiledRule {
    let checked = check(rule);
    checked.rule.expect("the benchmark rules are valid")
}

fn evaluate(c: &mut Criterion) {
    let devices = [("sales", sales_laptop()), ("kiosk", kiosk())];
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    for (name, rule) in RULES {
        let compiled = compile(rule);
        for (device_name, device) in &devices {
            group.bench_function(format!("{name}/{device_name}"), |b| {
                b.iter(|| compiled.evaluate(black_box(device)))
            });
        }
    }
    group.finish();
}

fn explain(c: &mut Criterion) {
    let device = sales_laptop();
    let compiled = compile(RULES[4].1);
    c.bench_function("explain/and_or_combination", |b| {
        b.iter(|| compiled.explain(black_box(&device)))
    });
}

fn check_rules(c: &mut Criterion) {
    c.bench_function("check/and_or_combination", |b| {
        b.iter(|| check(black_box(RULES[4].1)))
    });
}

criterion_group!(benches, evaluate, explain, check_rules);
criterion_main!(benches);
