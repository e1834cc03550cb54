//! Normalisations per second through the French preset, over a mix of dialled forms.
//! Run: `cargo bench -p sbc-shim --bench normalise`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbc_shim::normalise::{Context, RuleSet};

const MIX: &[&str] = &[
    "0142685300",
    "01 42 68 53 00",
    "+33 (0)1 42 68 53 00",
    "0033142685300",
    "00441234567890",
    "0612345678",
    "112",
    "0800123456",
    "16330142685300",
    "+12125550100",
];

fn bench(c: &mut Criterion) {
    let rules = RuleSet::french().expect("preset");
    let context = Context::default();
    let mut group = c.benchmark_group("normalise");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("french_preset_mix_of_10", |b| {
        b.iter(|| {
            MIX.iter()
                .filter(|n| rules.normalise(std::hint::black_box(n), &context).is_ok())
                .count()
        })
    });
    // Reference, same run: the `phonenumber` crate (libphonenumber's data) parsing
    // the same mix as French numbers and formatting them E.164. It refuses the short
    // codes and carrier-select forms the table handles; those count as done.
    let _ = phonenumber::parse(Some(phonenumber::country::Id::FR), "0142685300");
    group.bench_function("phonenumber_crate_mix_of_10", |b| {
        b.iter(|| {
            MIX.iter()
                .filter_map(|n| {
                    phonenumber::parse(Some(phonenumber::country::Id::FR), std::hint::black_box(n))
                        .ok()
                })
                .map(|p| p.format().mode(phonenumber::Mode::E164).to_string().len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
