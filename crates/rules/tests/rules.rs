//! The rule language through the public API: error kinds and spans, escapes, precedence, null
//! and collection semantics, explanations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use unbox_rules::ast::{ExprKind, Operator, Value};
use unbox_rules::{
    CompiledRule, DeviceProperties, ErrorKind, JsonDevice, MAX_NESTING, MAX_RULE_LENGTH, Property,
    Severity, check, parse,
};

fn compile(rule: &str) -> CompiledRule {
    let checked = check(rule);
    checked
        .rule
        .unwrap_or_else(|| panic!("{rule:?} is invalid: {:?}", checked.diagnostics))
}

/// The first diagnostic of an invalid rule, checked to be an error of `kind`.
fn error(rule: &str, kind: ErrorKind) -> (String, usize, usize) {
    let checked = check(rule);
    assert!(checked.rule.is_none(), "{rule:?} is valid");
    let first = &checked.diagnostics[0];
    assert_eq!(first.severity, Severity::Error, "{rule:?}");
    assert!(
        first.message.starts_with(kind.leading_text()),
        "{rule:?}: expected {:?}, got {:?}",
        kind.leading_text(),
        first.message
    );
    assert_eq!(first.error_kind(), Some(kind));
    (first.message.clone(), first.start, first.end)
}

/// The text an error's span points at.
fn pointed(rule: &str, kind: ErrorKind) -> String {
    let (_, start, end) = error(rule, kind);
    rule[start..end].to_owned()
}

fn device(value: serde_json::Value) -> JsonDevice {
    JsonDevice::from_value(&value).unwrap()
}

fn eval(rule: &str, value: serde_json::Value) -> bool {
    let rule = compile(rule);
    let device = device(value);
    let result = rule.evaluate(&device);
    assert_eq!(
        rule.explain(&device).membership_rule_evaluation_result,
        result
    );
    result
}

#[test]
fn attribute_not_supported() {
    assert_eq!(
        pointed(
            r#"(device.invalidProperty -eq "Value")"#,
            ErrorKind::AttributeNotSupported
        ),
        "device.invalidProperty"
    );
    let (message, ..) = error(
        r#"device.extensionAttribute16 -eq "x""#,
        ErrorKind::AttributeNotSupported,
    );
    assert!(message.contains("extensionAttribute16"));
    error(r#"device. -eq "x""#, ErrorKind::AttributeNotSupported);
}

#[test]
fn object_types() {
    assert_eq!(
        pointed(
            r#"(user.department -eq "Sales")"#,
            ErrorKind::InvalidObjectType
        ),
        "user.department"
    );
    error(r#"group.id -eq "x""#, ErrorKind::InvalidObjectType);
    let (message, start, end) = error("(accountEnabled -eq true)", ErrorKind::NoObjectType);
    assert_eq!((start, end), (1, 15));
    assert!(message.contains("device.accountEnabled"), "{message}");
    // The object type is case-insensitive, as are property names.
    assert!(check(r#"DEVICE.DEVICEMODEL -eq "x""#).is_valid());
}

#[test]
fn operator_not_supported() {
    assert_eq!(
        pointed(
            "(device.accountEnabled -contains true)",
            ErrorKind::OperatorNotSupported
        ),
        "-contains"
    );
    assert_eq!(
        pointed(
            r#"device.deviceModel -any (_ -eq "x")"#,
            ErrorKind::OperatorNotSupported
        ),
        "-any"
    );
    error(
        r#"device.accountEnabled -all (_ -eq "x")"#,
        ErrorKind::OperatorNotSupported,
    );
    error(
        r#"device.accountEnabled -in ["true"]"#,
        ErrorKind::OperatorNotSupported,
    );
    // `_` is a string: no quantifier on it.
    error(
        r#"device.devicePhysicalIds -any (_ -any (_ -eq "x"))"#,
        ErrorKind::OperatorNotSupported,
    );
}

#[test]
fn value_not_applicable() {
    assert_eq!(
        pointed(
            r#"device.displayName -match [".*a", ".*b"]"#,
            ErrorKind::ValueNotApplicable
        ),
        r#"[".*a", ".*b"]"#
    );
    error(
        r#"device.accountEnabled -eq "yes""#,
        ErrorKind::ValueNotApplicable,
    );
    error("device.deviceModel -eq true", ErrorKind::ValueNotApplicable);
    error("device.deviceModel -eq 42", ErrorKind::ValueNotApplicable);
    error(
        r#"device.deviceModel -eq ["a"]"#,
        ErrorKind::ValueNotApplicable,
    );
}

#[test]
fn invalid_operands() {
    assert_eq!(
        pointed(
            r#"device.deviceModel -in "Latitude 7440""#,
            ErrorKind::InvalidOperands
        ),
        r#""Latitude 7440""#
    );
    assert_eq!(
        pointed(
            "device.deviceModel -startsWith null",
            ErrorKind::InvalidOperands
        ),
        "null"
    );
    error(
        "device.deviceModel -match $null",
        ErrorKind::InvalidOperands,
    );
    error("device.deviceModel -notIn null", ErrorKind::InvalidOperands);
    error(
        r#"(device.deviceModel -eq) -or device.deviceModel -eq "x""#,
        ErrorKind::InvalidOperands,
    );
    error(
        r#"device.devicePhysicalIds -any "x""#,
        ErrorKind::InvalidOperands,
    );
}

#[test]
fn wrong_property_applied() {
    assert_eq!(
        pointed(
            r#"device.devicePhysicalIds -any (device.deviceModel -eq "x")"#,
            ErrorKind::WrongProperty
        ),
        "device.deviceModel"
    );
    error(
        r#"device.devicePhysicalIds -any (_ -eq "x" -or device.groupTag -eq "y")"#,
        ErrorKind::WrongProperty,
    );
    error(r#"_ -eq "x""#, ErrorKind::WrongProperty);
}

#[test]
fn invalid_characters() {
    assert_eq!(
        pointed(
            r#"device.displayName -match \d"#,
            ErrorKind::InvalidCharacters
        ),
        "\\"
    );
    error(r#"device.deviceModel == "x""#, ErrorKind::InvalidCharacters);
    // U+00A0, a no-break space, is not whitespace here.
    error(
        "device.deviceModel\u{A0}-eq \"x\"",
        ErrorKind::InvalidCharacters,
    );
    // A backslash inside a string is an ordinary character.
    assert!(check(r#"device.displayName -match "^\d+$""#).is_valid());
}

#[test]
fn query_compilation_errors() {
    let cases = [
        (
            r#"(device.deviceModel -eq "a") (device.deviceModel -eq "b")"#,
            "(",
        ),
        (r#"(device.displayName -match "*kiosk")"#, r#""*kiosk""#),
        ("device.deviceModel -eq Latitude", "Latitude"),
        (
            r#"device.deviceModel -eq "unterminated"#,
            r#""unterminated"#,
        ),
        (r#"device.deviceModel -like "x""#, "-like"),
        (r#"(device.deviceModel -eq "x""#, "("),
        (r#"device.deviceModel -eq "x")"#, ")"),
        (r#"device.deviceModel -eq "x" -and"#, "-and"),
        (r#"device.deviceModel -eq "x" -or -not"#, "-not"),
        ("device.deviceModel -eq", "-eq"),
        ("device.deviceModel", "device.deviceModel"),
        ("()", "()"),
        (r#"device.deviceModel -eq “Latitude”"#, "“"),
        (r#"device.deviceModel -in ["a""#, "["),
        (r#"device.deviceModel -in ["a" "b"]"#, r#""b""#),
        (r#"device.displayName -match "(?<=a)b""#, r#""(?<=a)b""#),
        (r#"device.displayName -match "(a)\1""#, r#""(a)\1""#),
        (r#""x" -eq device.deviceModel"#, r#""x""#),
        ("-eq", "-eq"),
    ];
    for (rule, pointed_at) in cases {
        assert_eq!(
            pointed(rule, ErrorKind::QueryCompilation),
            pointed_at,
            "{rule:?}"
        );
    }
    for empty in ["", "   ", "\n\t"] {
        error(empty, ErrorKind::QueryCompilation);
    }
    let (message, ..) = error(
        r#"device.displayName -match "(?=a)""#,
        ErrorKind::QueryCompilation,
    );
    assert!(message.contains("look-around"), "{message}");
    let (message, ..) = error(
        r#"device.displayName -match "(a)\1""#,
        ErrorKind::QueryCompilation,
    );
    assert!(
        message.contains("backreferences are not supported"),
        "{message}"
    );
    let (message, ..) = error("device.deviceModel -eq “x”", ErrorKind::QueryCompilation);
    assert!(message.contains("typographic"), "{message}");
}

#[test]
fn every_error_is_reported_with_its_span() {
    let rule =
        r#"device.foo -eq "a" -and user.bar -eq "b" -or device.accountEnabled -startsWith "c""#;
    let checked = check(rule);
    let errors: Vec<_> = checked
        .errors()
        .map(|d| (d.error_kind(), &rule[d.start..d.end]))
        .collect();
    assert_eq!(
        errors,
        [
            (Some(ErrorKind::AttributeNotSupported), "device.foo"),
            (Some(ErrorKind::InvalidObjectType), "user.bar"),
            (Some(ErrorKind::OperatorNotSupported), "-startsWith"),
        ]
    );
}

#[test]
fn maximum_length_in_unicode_scalar_values() {
    let padding = |n: usize| "é".repeat(n);
    let at_limit = format!(
        "device.deviceModel -eq \"{}\"",
        padding(MAX_RULE_LENGTH - 25)
    );
    assert_eq!(at_limit.chars().count(), MAX_RULE_LENGTH);
    assert!(at_limit.len() > MAX_RULE_LENGTH);
    assert!(check(&at_limit).is_valid());
    let over = format!(
        "device.deviceModel -eq \"{}\"",
        padding(MAX_RULE_LENGTH - 24)
    );
    let (message, start, end) = error(&over, ErrorKind::TooLong);
    assert!(message.starts_with("Rule exceeds maximum allowed length."));
    // The span covers the characters past the limit: here the closing quote.
    assert_eq!(&over[start..end], "\"");
}

#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| {
        format!(
            "{}device.deviceModel -eq \"x\"{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    assert!(check(&nested(MAX_NESTING)).is_valid());
    error(&nested(MAX_NESTING + 1), ErrorKind::QueryCompilation);
    let nots = format!("{}device.deviceModel -eq \"x\"", "-not ".repeat(600));
    error(&nots, ErrorKind::QueryCompilation);
}

#[test]
fn operators_any_case_with_or_without_hyphen() {
    let on = json!({"deviceModel": "Latitude 7440"});
    for rule in [
        r#"device.deviceModel -eq "Latitude 7440""#,
        r#"device.deviceModel eq "Latitude 7440""#,
        r#"device.deviceModel -EQ "Latitude 7440""#,
        r#"device.deviceModel Eq "latitude 7440""#,
        r#"device.deviceModel -STARTSWITH "lat" AND device.deviceModel -endswith "40""#,
        r#"device.deviceModel -startsWith "x" or device.deviceModel notStartsWith "x""#,
        r#"NOT device.deviceModel -eq "x""#,
    ] {
        assert!(eval(rule, on.clone()), "{rule}");
    }
}

#[test]
fn en_dash_warns() {
    let rule = r#"device.deviceModel –eq "x" –and –not device.deviceModel –ne "x""#;
    let checked = check(rule);
    assert!(checked.is_valid());
    let warnings: Vec<_> = checked.warnings().map(|w| &rule[w.start..w.end]).collect();
    assert_eq!(warnings, ["–eq", "–and", "–not", "–ne"]);
}

#[test]
fn string_escapes() {
    let value = |rule: &str| match parse(rule).expr.map(|e| e.kind) {
        Some(ExprKind::Comparison(comparison)) => comparison.value,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        value(r#"device.displayName -eq "O''Brien""#),
        Value::String("O'Brien".into())
    );
    assert_eq!(
        value("device.displayName -eq 'O''Brien'"),
        Value::String("O'Brien".into())
    );
    assert_eq!(
        value(r#"device.displayName -eq "say `"hi`"""#),
        Value::String("say \"hi\"".into())
    );
    assert_eq!(
        value(r#"device.displayName -eq "back``tick""#),
        Value::String("back`tick".into())
    );
    assert_eq!(
        value(r#"device.displayName -eq "C:\path""#),
        Value::String(r"C:\path".into())
    );
    assert_eq!(
        value(r#"device.displayName -eq "null""#),
        Value::String("null".into())
    );
    assert_eq!(value("device.displayName -eq $NULL"), Value::Null);
    assert_eq!(value("device.accountEnabled -eq TRUE"), Value::Bool(true));
    assert!(eval(
        r#"device.displayName -eq "O''Brien""#,
        json!({"displayName": "o'brien"})
    ));
    assert!(eval(
        r#"device.displayName -eq "null""#,
        json!({"displayName": "NULL"})
    ));
    assert!(!eval(r#"device.displayName -eq "null""#, json!({})));
}

#[test]
fn precedence() {
    let shape = |rule: &str| parse(rule).expr.unwrap().to_string();
    assert_eq!(
        shape(r#"device.a -eq "1" -or device.b -eq "2" -and device.c -eq "3""#),
        r#"device.a -eq "1" -or device.b -eq "2" -and device.c -eq "3""#
    );
    let tree = parse(r#"device.a -eq "1" -or device.b -eq "2" -and device.c -eq "3""#)
        .expr
        .unwrap();
    let ExprKind::Or(operands) = &tree.kind else {
        panic!("{tree:?}")
    };
    assert!(matches!(operands[1].kind, ExprKind::And(_)));
    let not = parse(r#"-not device.a -eq "1" -and device.b -eq "2""#)
        .expr
        .unwrap();
    let ExprKind::And(operands) = &not.kind else {
        panic!("{not:?}")
    };
    assert!(matches!(operands[0].kind, ExprKind::Not(_)));
    // Parentheses that change the meaning survive printing.
    assert_eq!(
        shape(
            r#"(device.a -eq "1" -or device.b -eq "2") -and -not (device.c -eq "3" -or device.d -eq "4")"#
        ),
        r#"(device.a -eq "1" -or device.b -eq "2") -and -not (device.c -eq "3" -or device.d -eq "4")"#
    );
    assert_eq!(shape(r#"((device.a -eq "1"))"#), r#"device.a -eq "1""#);

    let company_or_old_and_disabled = r#"device.deviceOwnership -eq "Company" -or device.deviceModel -eq "20XW" -and device.accountEnabled -eq false"#;
    assert!(eval(
        company_or_old_and_disabled,
        json!({"deviceOwnership": "Company", "accountEnabled": true})
    ));
    assert!(!eval(
        company_or_old_and_disabled,
        json!({"deviceModel": "20XW", "accountEnabled": true})
    ));
    assert!(eval(
        r#"-not -not device.deviceModel -eq "x""#,
        json!({"deviceModel": "X"})
    ));
}

#[test]
fn spans_point_at_expressions() {
    let rule = r#"  (device.deviceModel -eq "x") -and -not device.groupTag -startsWith "é" "#;
    let tree = parse(rule).expr.unwrap();
    assert_eq!(
        &rule[tree.span.start..tree.span.end],
        r#"(device.deviceModel -eq "x") -and -not device.groupTag -startsWith "é""#
    );
    let ExprKind::And(operands) = &tree.kind else {
        panic!()
    };
    let span = operands[1].span;
    assert_eq!(
        &rule[span.start..span.end],
        r#"-not device.groupTag -startsWith "é""#
    );
    let ExprKind::Comparison(comparison) = &operands[0].kind else {
        panic!()
    };
    assert_eq!(comparison.operator, Operator::Eq);
    let text = |span: unbox_rules::ast::Span| &rule[span.start..span.end];
    assert_eq!(text(comparison.subject_span), "device.deviceModel");
    assert_eq!(text(comparison.operator_span), "-eq");
    assert_eq!(text(comparison.value_span), r#""x""#);
}

#[test]
fn null_semantics() {
    let absent = json!({});
    let empty = json!({"groupTag": ""});
    let positive = [
        r#"device.groupTag -eq "x""#,
        r#"device.groupTag -startsWith """#,
        r#"device.groupTag -endsWith "x""#,
        r#"device.groupTag -contains """#,
        r#"device.groupTag -match ".*""#,
        r#"device.groupTag -in ["", "x"]"#,
        "device.groupTag -ne null",
    ];
    let negative = [
        r#"device.groupTag -ne "x""#,
        r#"device.groupTag -notStartsWith """#,
        r#"device.groupTag -notEndsWith "x""#,
        r#"device.groupTag -notContains """#,
        r#"device.groupTag -notMatch ".*""#,
        r#"device.groupTag -notIn ["", "x"]"#,
        "device.groupTag -eq null",
    ];
    for rule in positive {
        assert!(!eval(rule, absent.clone()), "{rule} on null");
    }
    for rule in negative {
        assert!(eval(rule, absent.clone()), "{rule} on null");
    }
    // An empty string is not absent.
    assert!(!eval("device.groupTag -eq null", empty.clone()));
    assert!(eval("device.groupTag -ne null", empty.clone()));
    assert!(eval(r#"device.groupTag -eq """#, empty.clone()));
    assert!(!eval(r#"device.groupTag -eq """#, absent.clone()));
    // Booleans.
    assert!(eval("device.accountEnabled -eq null", absent.clone()));
    assert!(!eval("device.accountEnabled -eq false", absent.clone()));
    assert!(eval("device.accountEnabled -ne true", absent.clone()));
    assert!(eval(
        r#"device.accountEnabled -eq "False""#,
        json!({"accountEnabled": false})
    ));
    assert!(!eval(
        "device.accountEnabled -ne false",
        json!({"accountEnabled": false})
    ));
}

#[test]
fn collections() {
    let ids = json!({"devicePhysicalIds": ["[ZTDId]:abc", "[OrderID]:Sales"], "systemLabels": []});
    assert!(eval(
        r#"device.devicePhysicalIds -any (_ -startsWith "[orderid]")"#,
        ids.clone()
    ));
    assert!(!eval(
        r#"device.devicePhysicalIds -all (_ -startsWith "[orderid]")"#,
        ids.clone()
    ));
    assert!(eval(
        r#"device.devicePhysicalIds -all (_ -startsWith "[")"#,
        ids.clone()
    ));
    assert!(eval(r#"device.systemLabels -all (_ -eq "x")"#, ids.clone()));
    assert!(!eval(
        r#"device.systemLabels -any (_ -ne "x")"#,
        ids.clone()
    ));
    assert!(!eval(
        r#"device.devicePhysicalIds -any (_ -eq null)"#,
        ids.clone()
    ));
    assert!(eval(
        r#"device.devicePhysicalIds -any (_ -contains "sales" -and -not _ -match "^\[ztdid\]")"#,
        ids.clone()
    ));
    assert!(eval(
        r#"device.devicePhysicalIds -any (_ -in ["[OrderID]:SALES", "z"])"#,
        ids.clone()
    ));

    // Straight on a collection: some element satisfies it, with -contains meaning equality.
    let direct = |rule: &str| {
        let checked = check(rule);
        assert_eq!(
            checked.warnings().count(),
            1,
            "{rule}: {:?}",
            checked.diagnostics
        );
        let device = device(ids.clone());
        checked.rule.unwrap().evaluate(&device)
    };
    assert!(direct(
        r#"device.devicePhysicalIds -contains "[orderid]:sales""#
    ));
    assert!(!direct(r#"device.devicePhysicalIds -contains "Sales""#));
    assert!(direct(r#"device.devicePhysicalIds -notContains "Sales""#));
    assert!(direct(r#"device.devicePhysicalIds -startsWith "[ZTD""#));
    assert!(!direct(r#"device.devicePhysicalIds -notStartsWith "[ZTD""#));
    assert!(direct(r#"device.devicePhysicalIds -eq "[ztdid]:ABC""#));
    assert!(direct(r#"device.devicePhysicalIds -match "sales$""#));
    assert!(direct(
        r#"device.devicePhysicalIds -in ["[OrderID]:Sales"]"#
    ));
    // A collection is never null.
    assert!(!direct("device.systemLabels -eq null"));
    assert!(direct("device.systemLabels -ne null"));

    // The bare quantifier form is accepted with a warning.
    let bare = check(
        r#"device.devicePhysicalIds -any _ -startsWith "[OrderID]" -and device.groupTag -eq null"#,
    );
    assert_eq!(bare.warnings().count(), 1);
    let device = device(ids.clone());
    assert!(bare.rule.unwrap().evaluate(&device));
}

#[test]
fn match_is_unanchored_and_case_insensitive() {
    let on = json!({"displayName": "KIOSK-factorykiosk"});
    assert!(eval(r#"device.displayName -match "factory""#, on.clone()));
    assert!(eval(r#"device.displayName -match "^kiosk-""#, on.clone()));
    assert!(!eval(r#"device.displayName -match "^factory""#, on.clone()));
    assert!(eval(
        r#"device.displayName -notMatch "^factory""#,
        on.clone()
    ));
}

#[test]
fn case_folding_is_unicode_simple_folding() {
    assert!(eval(
        r#"device.displayName -eq "ΟΔΥΣΣΕΥΣ""#,
        json!({"displayName": "οδυσσευς"})
    ));
    assert!(eval(
        r#"device.displayName -eq "Straße""#,
        json!({"displayName": "STRAẞE"})
    ));
    // Full folding would make ß equal to ss; simple folding does not.
    assert!(!eval(
        r#"device.displayName -eq "Strasse""#,
        json!({"displayName": "Straße"})
    ));
}

#[test]
fn numbers_in_arrays_compare_as_text() {
    assert!(eval(
        "device.extensionAttribute2 -in [1, 42, -3]",
        json!({"extensionAttribute2": "42"})
    ));
    assert!(eval(
        "device.extensionAttribute2 -notIn []",
        json!({"extensionAttribute2": "42"})
    ));
}

#[test]
fn reads_reports_the_properties_read() {
    let rule = compile(
        r#"device.enrollmentProfileName -eq "x" -or device.devicePhysicalIds -any (_ -eq "y") -or device.extensionAttribute7 -eq null"#,
    );
    assert!(rule.reads(Property::EnrollmentProfileName));
    assert!(rule.reads(Property::DevicePhysicalIds));
    assert!(rule.reads(Property::ExtensionAttribute(7)));
    assert!(!rule.reads(Property::ExtensionAttribute(6)));
    assert!(!rule.reads(Property::GroupTag));
    assert_eq!(rule.read_properties().count(), 3);
    assert_eq!(rule.source(), rule.source().to_owned());
}

#[test]
fn explanation_has_graphs_shape() {
    let rule = compile(
        r#"(device.deviceModel -eq "20XW") -and (device.devicePhysicalIds -any (_ -startsWith "[OrderID]")) -and device.accountEnabled -eq true"#,
    );
    let device = device(json!({
        "deviceModel": "20xw",
        "devicePhysicalIds": ["[ZTDId]:a", "[OrderID]:b"],
        "accountEnabled": true
    }));
    let explanation = serde_json::to_value(rule.explain(&device)).unwrap();
    assert_eq!(
        explanation,
        json!({
            "membershipRuleEvaluationResult": true,
            "membershipRuleEvaluationDetails": {
                "expression": r#"(device.deviceModel -eq "20XW") -and (device.devicePhysicalIds -any (_ -startsWith "[OrderID]")) -and device.accountEnabled -eq true"#,
                "expressionResult": true,
                "propertyToEvaluate": null,
                "expressionEvaluationDetails": [
                    {
                        "expression": r#"device.deviceModel -eq "20XW""#,
                        "expressionResult": true,
                        "propertyToEvaluate": {"propertyName": "deviceModel", "propertyValue": "20xw"},
                        "expressionEvaluationDetails": []
                    },
                    {
                        "expression": r#"device.devicePhysicalIds -any (_ -startsWith "[OrderID]")"#,
                        "expressionResult": true,
                        "propertyToEvaluate": {"propertyName": "devicePhysicalIds", "propertyValue": ["[ZTDId]:a", "[OrderID]:b"]},
                        "expressionEvaluationDetails": [
                            {
                                "expression": r#"_ -startsWith "[OrderID]""#,
                                "expressionResult": false,
                                "propertyToEvaluate": {"propertyName": "devicePhysicalIds", "propertyValue": "[ZTDId]:a"},
                                "expressionEvaluationDetails": []
                            },
                            {
                                "expression": r#"_ -startsWith "[OrderID]""#,
                                "expressionResult": true,
                                "propertyToEvaluate": {"propertyName": "devicePhysicalIds", "propertyValue": "[OrderID]:b"},
                                "expressionEvaluationDetails": []
                            }
                        ]
                    },
                    {
                        "expression": "device.accountEnabled -eq true",
                        "expressionResult": true,
                        "propertyToEvaluate": {"propertyName": "accountEnabled", "propertyValue": "true"},
                        "expressionEvaluationDetails": []
                    }
                ]
            }
        })
    );
    let absent =
        serde_json::to_value(compile("-not device.groupTag -eq null").explain(&device)).unwrap();
    assert_eq!(absent["membershipRuleEvaluationResult"], json!(false));
    assert_eq!(
        absent["membershipRuleEvaluationDetails"]["expressionEvaluationDetails"][0]["propertyToEvaluate"],
        json!({"propertyName": "groupTag", "propertyValue": null})
    );
}

#[test]
fn diagnostics_serialize_as_specified() {
    let checked = check(r#"device.systemLabels -contains "x" -and device.foo -eq "y""#);
    let value = serde_json::to_value(&checked.diagnostics).unwrap();
    assert_eq!(value[0]["severity"], "error");
    assert_eq!(value[1]["severity"], "warning");
    let keys: Vec<_> = value[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 4);
    for key in ["severity", "message", "start", "end"] {
        assert!(keys.iter().any(|k| k == key));
    }
}

/// A device type of one's own, read through the trait.
struct Bare {
    ids: Vec<String>,
}

impl DeviceProperties for Bare {
    fn string(&self, property: Property) -> Option<&str> {
        (property == Property::GroupTag).then_some("Sales")
    }
    fn boolean(&self, _: Property) -> Option<bool> {
        None
    }
    fn collection(&self, property: Property) -> &[String] {
        match property {
            Property::DevicePhysicalIds => &self.ids,
            _ => &[],
        }
    }
}

#[test]
fn compiled_rules_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<CompiledRule>();
    let rule = compile(
        r#"device.groupTag -eq "sales" -and device.devicePhysicalIds -any (_ -match "^\[orderid\]")"#,
    );
    let device = Bare {
        ids: vec!["[OrderID]:Sales".to_owned()],
    };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let rule = rule.clone();
            let device = &device;
            scope.spawn(move || assert!(rule.evaluate(device)));
        }
    });
    let dynamic: &dyn DeviceProperties = &device;
    assert!(rule.evaluate(dynamic));
}
