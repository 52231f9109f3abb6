//! Property tests: printing and parsing back, no panics anywhere, and case-insensitive
//! comparisons against a straightforward reference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::json;
use unbox_rules::ast::{
    ArrayElement, Comparison, Expr, ExprKind, Operator, Quantified, Quantifier, Span, Subject,
    Value,
};
use unbox_rules::{JsonDevice, MAX_RULE_LENGTH, check, parse};

fn subject() -> impl Strategy<Value = Subject> {
    let names = prop::sample::select(vec![
        "deviceModel",
        "DEVICEMODEL",
        "devicePhysicalIds",
        "systemLabels",
        "accountEnabled",
        "extensionAttribute3",
        "extensionAttribute16",
        "groupTag",
        "department",
        "a.b",
        "x9",
    ]);
    let objects = prop::sample::select(vec![Some("device"), Some("Device"), Some("user"), None]);
    prop_oneof![
        1 => Just(Subject::Element),
        4 => (objects, names).prop_map(|(object, name)| match object {
            Some(object) => Subject::Property {
                object: Some(object.to_owned()),
                name: name.to_owned(),
            },
            // Without an object the name is one word without a dot.
            None => Subject::Property {
                object: None,
                name: name.replace('.', ""),
            },
        }),
    ]
}

/// Strings with everything that needs escaping, and some of anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9 \"'`\\\\\\[\\]():_.-]{0,12}", ".{0,8}",]
}

fn number() -> impl Strategy<Value = String> {
    "-?[0-9]{1,4}(\\.[0-9]{1,2})?"
}

fn value() -> impl Strategy<Value = Value> {
    let element = prop_oneof![
        text().prop_map(ArrayElement::String),
        number().prop_map(ArrayElement::Number),
    ];
    prop_oneof![
        4 => text().prop_map(Value::String),
        1 => number().prop_map(Value::Number),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => prop::collection::vec(element, 0..4).prop_map(Value::Array),
    ]
}

fn expr_of(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn comparison() -> impl Strategy<Value = Expr> {
    (
        subject(),
        prop::sample::select(Operator::ALL.to_vec()),
        value(),
    )
        .prop_map(|(subject, operator, value)| {
            expr_of(ExprKind::Comparison(Comparison {
                subject,
                subject_span: Span::default(),
                operator,
                operator_span: Span::default(),
                value,
                value_span: Span::default(),
            }))
        })
}

fn expr() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(5, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(|e| expr_of(ExprKind::Or(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|e| expr_of(ExprKind::And(e))),
            inner
                .clone()
                .prop_map(|e| expr_of(ExprKind::Not(Box::new(e)))),
            (
                subject(),
                prop::sample::select(vec![Quantifier::Any, Quantifier::All]),
                inner
            )
                .prop_map(|(subject, quantifier, predicate)| {
                    expr_of(ExprKind::Quantified(Quantified {
                        subject,
                        subject_span: Span::default(),
                        quantifier,
                        quantifier_span: Span::default(),
                        predicate: Box::new(predicate),
                    }))
                }),
        ]
    })
}

/// Pieces of rules, to build inputs that get deep into the grammar.
const TOKENS: &[&str] = &[
    "device.deviceModel",
    "device.groupTag",
    "device.devicePhysicalIds",
    "device.systemLabels",
    "device.accountEnabled",
    "device.enrollmentProfileName",
    "device.extensionAttribute1",
    "device.nope",
    "user.department",
    "deviceModel",
    "_",
    "-eq",
    "eq",
    "-NE",
    "-startsWith",
    "-notStartsWith",
    "-endsWith",
    "-notEndsWith",
    "-contains",
    "-notContains",
    "-match",
    "-notMatch",
    "-in",
    "-notIn",
    "-any",
    "-all",
    "-and",
    "-or",
    "-not",
    "and",
    "or",
    "not",
    "–eq",
    "–and",
    "-like",
    "(",
    ")",
    "[",
    "]",
    ",",
    "\"Sales\"",
    "\"[OrderID]:\"",
    "\"^\\[ZTDId\\]\"",
    "\"(?=x)\"",
    "\"*\"",
    "\"O''Brien\"",
    "\"a`\"b\"",
    "'single'",
    "\"",
    "'",
    "“x”",
    "true",
    "FALSE",
    "null",
    "$null",
    "42",
    "-7",
    "Latitude",
    "\\",
    "@",
    "é",
    "\u{212A}",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(TOKENS),
            prop::sample::select(vec![" ", " ", "", "\n"]),
        ),
        0..40,
    )
    .prop_map(|pieces| {
        pieces
            .into_iter()
            .flat_map(|(token, space)| [token, space])
            .collect()
    })
}

fn select_tokens(tokens: &[&'static str]) -> impl Strategy<Value = String> + Clone + use<> {
    prop::sample::select(tokens.to_vec()).prop_map(str::to_owned)
}

fn string_value() -> impl Strategy<Value = String> + Clone {
    select_tokens(&[
        "\"Sales\"",
        "\"[OrderID]:Sales\"",
        "\"[ZTDId]\"",
        "\"^\\[ZTDId\\]:\"",
        "\"latitude\"",
        "\"\"",
        "\"O''Brien\"",
        "'single'",
        "\"(?i)k.*\"",
        "\"\u{212A}\"",
    ])
}

fn array_tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![string_value(), select_tokens(&["42", "-1"])],
        0..3,
    )
    .prop_map(|elements| {
        let mut tokens = vec!["[".to_owned()];
        for (index, element) in elements.into_iter().enumerate() {
            if index > 0 {
                tokens.push(",".to_owned());
            }
            tokens.push(element);
        }
        tokens.push("]".to_owned());
        tokens
    })
}

/// A comparison that is valid for `subject` (a string property or `_`).
fn text_comparison(
    subject: impl Strategy<Value = String> + Clone,
) -> impl Strategy<Value = Vec<String>> {
    let scalar_operators = select_tokens(&[
        "-eq",
        "ne",
        "-startsWith",
        "-notStartsWith",
        "-endsWith",
        "-notEndsWith",
        "-contains",
        "-notContains",
        "-match",
        "-notMatch",
        "–eq",
    ]);
    prop_oneof![
        (subject.clone(), scalar_operators, string_value()).prop_map(|(s, o, v)| vec![s, o, v]),
        (
            subject.clone(),
            select_tokens(&["-eq", "-ne"]),
            select_tokens(&["null", "$null"])
        )
            .prop_map(|(s, o, v)| vec![s, o, v]),
        (subject, select_tokens(&["-in", "-notIn"]), array_tokens()).prop_map(|(s, o, a)| {
            let mut tokens = vec![s, o];
            tokens.extend(a);
            tokens
        }),
    ]
}

/// Combines token sequences with -and, -or, -not and parentheses.
fn combined(
    leaf: impl Strategy<Value = Vec<String>> + 'static,
) -> impl Strategy<Value = Vec<String>> {
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                select_tokens(&["-and", "-or", "and", "OR"]),
                inner.clone()
            )
                .prop_map(|(mut left, operator, right)| {
                    left.push(operator);
                    left.extend(right);
                    left
                }),
            inner.clone().prop_map(|tokens| {
                let mut negated = vec!["-not".to_owned()];
                negated.extend(tokens);
                negated
            }),
            inner.prop_map(|tokens| {
                let mut grouped = vec!["(".to_owned()];
                grouped.extend(tokens);
                grouped.push(")".to_owned());
                grouped
            }),
        ]
    })
}

/// Token sequences of valid rules.
fn valid_rule_tokens() -> impl Strategy<Value = Vec<String>> {
    let string_property = select_tokens(&[
        "device.deviceModel",
        "device.GROUPTAG",
        "device.enrollmentProfileName",
        "device.extensionAttribute1",
        "device.displayName",
    ]);
    let collection = select_tokens(&["device.devicePhysicalIds", "device.systemLabels"]);
    let predicate = combined(text_comparison(Just("_".to_owned())));
    let leaf = prop_oneof![
        3 => text_comparison(string_property),
        1 => text_comparison(collection.clone()),
        1 => (
            select_tokens(&["-eq", "-ne"]),
            select_tokens(&["true", "false", "null", "\"TRUE\""])
        )
            .prop_map(|(o, v)| vec!["device.accountEnabled".to_owned(), o, v]),
        2 => (collection, select_tokens(&["-any", "-all"]), predicate).prop_map(|(c, q, p)| {
            let mut tokens = vec![c, q, "(".to_owned()];
            tokens.extend(p);
            tokens.push(")".to_owned());
            tokens
        }),
    ];
    combined(leaf)
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, String),
    Replace(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(TOKENS).prop_map(str::to_owned);
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        (any::<prop::sample::Index>(), token.clone()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<prop::sample::Index>(), token).prop_map(|(i, t)| Mutation::Replace(i, t)),
    ]
}

/// Valid rules with a few tokens deleted, inserted or replaced: mostly almost right.
fn mutated_rule() -> impl Strategy<Value = String> {
    (valid_rule_tokens(), prop::collection::vec(mutation(), 0..3)).prop_map(
        |(mut tokens, mutations)| {
            for mutation in mutations {
                match mutation {
                    Mutation::Delete(index) if !tokens.is_empty() => {
                        tokens.remove(index.index(tokens.len()));
                    }
                    Mutation::Insert(index, token) => {
                        tokens.insert(index.index(tokens.len() + 1), token);
                    }
                    Mutation::Replace(index, token) if !tokens.is_empty() => {
                        let at = index.index(tokens.len());
                        tokens[at] = token;
                    }
                    _ => {}
                }
            }
            tokens.join(" ")
        },
    )
}

fn devices() -> Vec<JsonDevice> {
    [
        json!({}),
        json!({
            "deviceModel": "Latitude 7440",
            "groupTag": "Sales",
            "accountEnabled": true,
            "enrollmentProfileName": "",
            "extensionAttribute1": "O'Brien",
            "devicePhysicalIds": ["[ZTDId]:x", "[OrderID]:Sales", "[PurchaseOrderId]:7"],
            "systemLabels": ["a`\"b", "\u{212A}"]
        }),
        json!({"accountEnabled": false, "devicePhysicalIds": [""], "groupTag": "é"}),
    ]
    .iter()
    .map(|value| JsonDevice::from_value(value).unwrap())
    .collect()
}

/// Checks, evaluates and explains `rule`; whatever it is, nothing panics, a rule is compiled
/// exactly when there is no error, spans are in bounds, and explain agrees with evaluate.
fn exercise(rule: &str) {
    let checked = check(rule);
    assert_eq!(
        checked.rule.is_some(),
        checked.errors().next().is_none(),
        "{rule:?}: {:?}",
        checked.diagnostics
    );
    for diagnostic in &checked.diagnostics {
        assert!(diagnostic.start <= diagnostic.end && diagnostic.end <= rule.len());
        assert!(rule.is_char_boundary(diagnostic.start) && rule.is_char_boundary(diagnostic.end));
    }
    if let Some(compiled) = &checked.rule {
        for device in devices() {
            let result = compiled.evaluate(&device);
            let explanation = compiled.explain(&device);
            assert_eq!(
                explanation.membership_rule_evaluation_result, result,
                "{rule:?}"
            );
            serde_json::to_string(&explanation).unwrap();
        }
    }
    // What parses prints to text that parses back to the same tree, and checks the same.
    if let Some(tree) = parse(rule).expr {
        let printed = tree.to_string();
        if printed.chars().count() <= MAX_RULE_LENGTH {
            let reparsed = parse(&printed)
                .expr
                .unwrap_or_else(|| panic!("{rule:?} printed as {printed:?}, which does not parse"));
            assert_eq!(
                reparsed.without_spans(),
                tree.without_spans(),
                "{printed:?}"
            );
            assert_eq!(
                check(&printed).is_valid(),
                checked.is_valid(),
                "{printed:?}"
            );
        }
    }
}

/// Simple case folding of a whole string, the reference for comparisons.
fn fold(text: &str) -> String {
    text.chars()
        .map(|c| {
            unicode_case_mapping::case_folded(c)
                .and_then(|folded| char::from_u32(folded.get()))
                .unwrap_or(c)
        })
        .collect()
}

/// Mostly ASCII around the letter boundaries (`@` and `[` surround `A..=Z`), sometimes with
/// characters whose folding is special; long enough to span several eight-byte words.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof!["[aAkKsSzZ@\\[`{:-]{0,20}", "[aAkK]{0,10}", mixed_text(),]
}

fn mixed_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            'a', 'A', 'k', 'K', '\u{212A}', 's', 'S', 'ſ', 'ß', 'ẞ', 'σ', 'Σ', 'ς', 'i', 'İ', 'ı',
            '-', ':', 'é', 'É',
        ]),
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printing_and_parsing_back_gives_the_same_tree(tree in expr()) {
        let printed = tree.to_string();
        prop_assume!(printed.chars().count() <= MAX_RULE_LENGTH);
        let parsed = parse(&printed);
        let reparsed = parsed.expr.unwrap_or_else(|| {
            panic!("{printed:?} does not parse: {:?}", parsed.diagnostics)
        });
        prop_assert_eq!(reparsed.without_spans(), tree.without_spans(), "{}", printed);
    }

    #[test]
    fn nothing_panics_on_arbitrary_text(rule in any::<String>()) {
        exercise(&rule);
    }

    #[test]
    fn nothing_panics_on_token_soup(rule in token_soup()) {
        exercise(&rule);
    }

    #[test]
    fn valid_token_sequences_are_valid(tokens in valid_rule_tokens()) {
        let rule = tokens.join(" ");
        prop_assume!(rule.chars().count() <= MAX_RULE_LENGTH);
        let checked = check(&rule);
        prop_assert!(checked.is_valid(), "{:?}: {:?}", rule, checked.diagnostics);
        exercise(&rule);
    }

    #[test]
    fn nothing_panics_on_mutated_rules(rule in mutated_rule()) {
        exercise(&rule);
    }

    #[test]
    fn nothing_panics_on_printed_trees(tree in expr()) {
        exercise(&tree.to_string());
    }

    #[test]
    fn comparisons_agree_with_folding_whole_strings(value in tricky_text(), constant in tricky_text()) {
        let device = JsonDevice::from_value(&json!({"groupTag": value.clone()})).unwrap();
        let quoted = Value::String(constant.clone()).to_string();
        let (v, c) = (fold(&value), fold(&constant));
        let cases = [
            ("-eq", v == c),
            ("-startsWith", v.starts_with(&c)),
            ("-endsWith", v.ends_with(&c)),
            ("-contains", v.contains(&c)),
            ("-match", v.contains(&c)),
        ];
        for (operator, expected) in cases {
            let pattern = if operator == "-match" {
                Value::String(regex::escape(&constant)).to_string()
            } else {
                quoted.clone()
            };
            let rule = format!("device.groupTag {operator} {pattern}");
            let compiled = check(&rule).rule.unwrap();
            prop_assert_eq!(compiled.evaluate(&device), expected, "{} on {:?}", rule, value);
        }
    }
}
