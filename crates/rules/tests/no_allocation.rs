//! Evaluation does not allocate: a counting global allocator watches `evaluate`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Implementing GlobalAlloc is unsafe by definition; this one only forwards to the system
// allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;
use unbox_rules::{JsonDevice, check};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: the thread-local may be gone while a thread shuts down.
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn evaluate_does_not_allocate() {
    let device = JsonDevice::from_value(&json!({
        "deviceModel": "Surface Laptop 5",
        "displayName": "KIOSK-factorykiosk",
        "groupTag": "F1.C1.SU",
        "accountEnabled": true,
        "devicePhysicalIds": ["[ZTDId]:16fd2706", "[OrderID]:F1.C1.SU", "[PurchaseOrderId]:PO-7"],
        "systemLabels": ["M365Managed", "Stra\u{df}e"]
    }))
    .unwrap();
    let rules = [
        r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#,
        r#"device.groupTag -eq "f1.c1.su""#,
        r#"device.devicePhysicalIds -all (_ -startsWith "[") -and device.accountEnabled -eq true"#,
        r#"device.displayName -match "^kiosk-" -or device.deviceModel -notContains "laptop""#,
        r#"device.deviceModel -in ["Surface Laptop 5", "x"] -and -not device.enrollmentProfileName -ne null"#,
        r#"device.systemLabels -contains "STRASSE" -or device.systemLabels -any (_ -endsWith "\u{1E9E}E")"#,
    ];
    for rule in rules {
        let compiled = check(rule).rule.unwrap();
        // The first regex match on a thread sets up that thread's matching cache.
        let warm_up = compiled.evaluate(&device);
        let before = allocations();
        for _ in 0..100 {
            assert_eq!(compiled.evaluate(&device), warm_up);
        }
        assert_eq!(allocations() - before, 0, "{rule} allocated");
        // The counter does see allocations: explaining builds a tree of strings.
        let before = allocations();
        let explanation = compiled.explain(&device);
        assert!(allocations() > before);
        assert_eq!(explanation.membership_rule_evaluation_result, warm_up);
    }
}
