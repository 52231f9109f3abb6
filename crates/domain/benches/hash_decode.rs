//! Decoding a hardware hash and working out its strong keys: the full decode with its values
//! copied into the identity (as registration and imports do) against the device call's lookup
//! decode, for a hash like the boot storm's (one adapter) and a fuller one (three adapters,
//! two disks, UUID, SKU, family, product key id).
//!
//! `cargo bench -p unbox-domain --bench hash_decode`; criterion reports the time per hash
//! and, through `Throughput::Elements(1)`, hashes per second ("elem/s").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use unbox_domain::hardware_hash::{HashSpec, build, decode, decode_for_lookup};
use unbox_domain::identity::Identity;
use uuid::Uuid;

fn hashes(fuller: bool) -> Vec<String> {
    (0..1_000u32)
        .map(|i| {
            let serial = format!("BS{i:07}");
            let [_, a, b, c] = i.to_be_bytes();
            let mut spec = HashSpec {
                manufacturer: "Dell Inc.".into(),
                model: "Latitude 7440".into(),
                tpm_ek_modulus: Some(serial.bytes().cycle().take(256).collect()),
                serial,
                macs: vec![[0x02, 0, a, b, c, 1]],
                ..HashSpec::default()
            };
            if fuller {
                spec.macs
                    .extend([[0x02, 1, a, b, c, 2], [0x02, 2, a, b, c, 3]]);
                spec.disk_ids = vec![format!("NVME{i:010}"), format!("SSD{i:08}")];
                spec.smbios_uuid = Some(Uuid::from_u128(u128::from(i) + 77));
                spec.sku = Some("0B7C".into());
                spec.system_family = Some("Latitude".into());
                spec.product_key_id = Some("3272713890123".into());
            }
            build(&spec).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, fuller) in [("one adapter", false), ("three adapters, two disks", true)] {
        let texts = hashes(fuller);
        let mut group = c.benchmark_group(format!("hash decode, {name}"));
        group.throughput(Throughput::Elements(1));
        let mut at = 0;
        group.bench_function("decode, identity, strong keys", |b| {
            b.iter(|| {
                at = (at + 1) % texts.len();
                let hash = decode(black_box(&texts[at])).unwrap();
                black_box(Identity::from_hash(&hash).strong_keys())
            });
        });
        group.bench_function("decode_for_lookup, identity, strong keys", |b| {
            b.iter(|| {
                at = (at + 1) % texts.len();
                let values = decode_for_lookup(black_box(&texts[at])).unwrap();
                black_box(Identity::from_lookup_values(values).strong_keys())
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
