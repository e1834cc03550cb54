//! The French preset against a golden table (`tests/golden/fr.tsv`), written from the
//! French numbering plan (ARCEP), not from the engine's output; plus properties.

use std::sync::LazyLock;

use proptest::prelude::*;
use sbc_shim::normalise::{Context, Direction, Field, RuleSet};

static PRESET: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::french().expect("preset loads"));

#[test]
fn french_preset_golden_table() {
    let rules = RuleSet::french().expect("preset loads");
    let table = include_str!("golden/fr.tsv");
    let mut checked = 0;
    for (line_no, line) in table.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 6, "line {}: {line:?}", line_no + 1);
        let context = Context {
            direction: if cols[1] == "inbound" {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            field: if cols[2] == "calling" {
                Field::Calling
            } else {
                Field::Called
            },
            trunk: "carrier",
        };
        let result = rules.normalise(cols[0], &context);
        let last_rule = |rules: &[String]| rules.last().cloned().unwrap_or_else(|| "-".into());
        match cols[3].strip_prefix("refuse ") {
            Some(status) => {
                let refused = result.expect_err(&format!(
                    "line {}: {} must be refused",
                    line_no + 1,
                    cols[0]
                ));
                assert_eq!(
                    refused.status.to_string(),
                    status,
                    "line {}: {refused}",
                    line_no + 1
                );
                assert_eq!(
                    refused.rule.as_deref().unwrap_or("-"),
                    cols[5],
                    "line {}",
                    line_no + 1
                );
            }
            None => {
                let ok = result
                    .unwrap_or_else(|e| panic!("line {}: {} refused: {e}", line_no + 1, cols[0]));
                assert_eq!(ok.number, cols[3], "line {}: {ok:?}", line_no + 1);
                assert_eq!(
                    ok.class.as_deref().unwrap_or("-"),
                    cols[4],
                    "line {}",
                    line_no + 1
                );
                assert_eq!(last_rule(&ok.rules), cols[5], "line {}", line_no + 1);
                assert_eq!(
                    ok.priority,
                    cols[4] == "emergency",
                    "line {}: priority",
                    line_no + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "the golden table lost rows: {checked}");
}

/// Every French E.164 result of the golden table is a valid number for libphonenumber's
/// data (the `phonenumber` crate), which knows the ranges but not the short codes.
#[test]
fn french_results_are_valid_for_phonenumber() {
    let table = include_str!("golden/fr.tsv");
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[3].starts_with("+33") {
            let parsed =
                phonenumber::parse(None, cols[3]).unwrap_or_else(|e| panic!("{}: {e}", cols[3]));
            assert!(
                phonenumber::is_valid(&parsed),
                "{} is not a valid French number",
                cols[3]
            );
            assert_eq!(
                parsed.format().mode(phonenumber::Mode::E164).to_string(),
                cols[3]
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked}");
}

fn national() -> impl Strategy<Value = String> {
    ("[1-59]", "[0-9]{8}").prop_map(|(a, b)| format!("0{a}{b}"))
}

proptest! {
    /// Any national number becomes +33 without its 0, however it is punctuated.
    #[test]
    fn national_numbers_become_e164(number in national(), seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("."), Just("-")], 10)) {
        let rules = &*PRESET;
        let punctuated: String = number.chars().zip(seps.iter()).map(|(c, s)| format!("{c}{s}")).collect();
        let ok = rules.normalise(&punctuated, &Context::default()).expect("accepted");
        prop_assert_eq!(ok.number, format!("+33{}", &number[1..]));
    }

    /// Normalising a normalised called number changes nothing.
    #[test]
    fn normalisation_is_idempotent(number in prop_oneof![national(), "00[1-9][0-9]{8,12}", "\\+[1-9][0-9]{8,13}"]) {
        let rules = &*PRESET;
        if let Ok(first) = rules.normalise(&number, &Context::default()) {
            let second = rules.normalise(&first.number, &Context::default()).expect("still accepted");
            prop_assert_eq!(second.number, first.number);
        }
    }

    /// Nothing panics, and every refusal is 404 or 484.
    #[test]
    fn any_input_is_answered(number in "\\PC{0,30}") {
        let rules = &*PRESET;
        if let Err(refused) = rules.normalise(&number, &Context::default()) {
            prop_assert!(refused.status == 404 || refused.status == 484);
        }
    }
}
