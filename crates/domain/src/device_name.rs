//! Device-name templates: `%SERIAL%` and `%RAND:n%`, expanded by Unbox itself so that a name
//! is stable for a device and unique within its tenant (design.md, "Device names").

use rand::Rng;

/// NetBIOS limit that Windows applies to computer names.
pub const MAX_NAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Serial,
    Random(usize),
}

fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('%') {
            let Some(end) = after.find('%') else {
                return Err("has a `%` that opens no macro; use %SERIAL% or %RAND:n%".into());
            };
            let name = &after[..end];
            let upper = name.to_ascii_uppercase();
            if upper == "SERIAL" {
                if parts.contains(&Part::Serial) {
                    return Err("uses %SERIAL% more than once".into());
                }
                parts.push(Part::Serial);
            } else if let Some(count) = upper.strip_prefix("RAND:") {
                let count: usize = count
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_NAME_LEN).contains(n))
                    .ok_or_else(|| format!("`%{name}%`: n in %RAND:n% must be 1 to 15"))?;
                parts.push(Part::Random(count));
            } else {
                return Err(format!(
                    "`%{name}%` is not a macro; use %SERIAL% or %RAND:n%"
                ));
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('%').unwrap_or(rest.len());
            let literal = &rest[..end];
            if let Some(bad) = literal
                .chars()
                .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
            {
                return Err(format!(
                    "contains `{bad}`: names may hold only letters, digits and hyphens"
                ));
            }
            parts.push(Part::Literal(literal.to_owned()));
            rest = &rest[end..];
        }
    }
    Ok(parts)
}

fn fixed_len(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|p| match p {
            Part::Literal(s) => s.len(),
            Part::Random(n) => *n,
            Part::Serial => 0,
        })
        .sum()
}

/// Checks a template: letters, digits, hyphens and the two macros; at most 15 characters once
/// expanded (`%SERIAL%` shrinks to fit); and it cannot only ever produce digits.
pub fn validate_template(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Err("is empty".into());
    }
    let parts = parse(template)?;
    let fixed = fixed_len(&parts);
    if fixed > MAX_NAME_LEN {
        return Err(format!(
            "expands to {fixed} characters before %SERIAL%; computer names hold at most {MAX_NAME_LEN}"
        ));
    }
    let has_serial = parts.contains(&Part::Serial);
    if has_serial && fixed == MAX_NAME_LEN {
        return Err("leaves no room for %SERIAL% within 15 characters".into());
    }
    let only_digits = parts.iter().all(|p| match p {
        Part::Literal(s) => s.chars().all(|c| c.is_ascii_digit()),
        Part::Random(_) => true,
        Part::Serial => false,
    });
    if only_digits {
        return Err("would produce a name of digits only, which Windows refuses".into());
    }
    Ok(())
}

/// The serial as it may appear in a name: letters, digits and hyphens only.
fn clean_serial(serial: &str) -> String {
    serial
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Expands a template once. `%SERIAL%` is truncated from the left to fit, as Autopilot does
/// (`Test-Device-%SERIAL%` with serial `…456` gives `Test-Device-456`).
pub fn expand(template: &str, serial: &str, rng: &mut impl Rng) -> Result<String, String> {
    let parts = parse(template)?;
    let room = MAX_NAME_LEN.saturating_sub(fixed_len(&parts));
    let serial = clean_serial(serial);
    let serial = &serial[serial.len().saturating_sub(room)..];
    let mut name = String::with_capacity(MAX_NAME_LEN);
    for part in &parts {
        match part {
            Part::Literal(s) => name.push_str(s),
            Part::Serial => name.push_str(serial),
            Part::Random(n) => {
                for _ in 0..*n {
                    name.push(char::from(b'0' + rng.gen_range(0..10u8)));
                }
            }
        }
    }
    Ok(name)
}

/// Names to try in order until one is free in the tenant: the expansion; re-draws when the
/// template has `%RAND%`; then the first expansion with its end replaced by `-2`, `-3`, ….
/// A name of digits only (a serial like `0012345` in a bare `%SERIAL%` template) is never
/// offered as is: it goes straight to the suffixed forms.
pub fn candidates(template: &str, serial: &str, rng: &mut impl Rng) -> Result<Vec<String>, String> {
    const REDRAWS: usize = 20;
    const SUFFIXES: usize = 200;
    let first = expand(template, serial, rng)?;
    let mut names = Vec::with_capacity(REDRAWS + SUFFIXES);
    let acceptable = |name: &str| !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit());
    if acceptable(&first) {
        names.push(first.clone());
    }
    if template.to_ascii_uppercase().contains("%RAND:") {
        for _ in 0..REDRAWS {
            let name = expand(template, serial, rng)?;
            if acceptable(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let base = if first.is_empty() {
        "DEVICE".to_owned()
    } else {
        first
    };
    for n in 2..(SUFFIXES + 2) {
        let suffix = format!("-{n}");
        let keep = MAX_NAME_LEN.saturating_sub(suffix.len()).min(base.len());
        names.push(format!("{}{suffix}", &base[..keep]));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn serial_is_truncated_from_the_left() {
        let name = expand("Test-Device-%SERIAL%", "ABC123456", &mut rng()).unwrap();
        assert_eq!(name, "Test-Device-456");
    }

    #[test]
    fn serial_loses_characters_that_names_cannot_hold() {
        let name = expand("LAB-%SERIAL%", "VMware-56 4d 9a", &mut rng()).unwrap();
        assert_eq!(name, "LAB-ware-564d9a");
        assert!(name.len() <= MAX_NAME_LEN);
    }

    #[test]
    fn random_digits_have_the_asked_count() {
        let name = expand("KIOSK-%RAND:5%", "x", &mut rng()).unwrap();
        assert_eq!(name.len(), 11);
        assert!(name[6..].chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn macros_are_case_insensitive() {
        assert_eq!(expand("A-%serial%", "Z9", &mut rng()).unwrap(), "A-Z9");
    }

    #[test]
    fn invalid_templates_say_why() {
        for (template, needle) in [
            ("", "empty"),
            ("SALES_%SERIAL%", "`_`"),
            ("%FOO%", "not a macro"),
            ("A%", "opens no macro"),
            ("%RAND:0%", "1 to 15"),
            ("ABCDEFGHIJKLMNOP", "at most 15"),
            ("ABCDEFGHIJKLMNO%SERIAL%", "no room"),
            ("%RAND:8%", "digits only"),
            ("123", "digits only"),
            ("%SERIAL%-%SERIAL%", "more than once"),
        ] {
            let err = validate_template(template).unwrap_err();
            assert!(err.contains(needle), "{template}: {err}");
        }
        assert!(validate_template("%SERIAL%").is_ok());
        assert!(validate_template("WIN-%RAND:4%").is_ok());
    }

    #[test]
    fn candidates_redraw_then_suffix_and_stay_short() {
        let names = candidates("PC-%RAND:2%", "x", &mut rng()).unwrap();
        assert!(names[0].starts_with("PC-"));
        assert!(names.iter().all(|n| n.len() <= MAX_NAME_LEN));
        let fixed = candidates("Test-Device-%SERIAL%", "ABC123456", &mut rng()).unwrap();
        assert_eq!(
            &fixed[..3],
            ["Test-Device-456", "Test-Device-4-2", "Test-Device-4-3"]
        );
    }

    #[test]
    fn all_digit_names_are_never_offered() {
        let names = candidates("%SERIAL%", "0012345", &mut rng()).unwrap();
        assert_eq!(names[0], "0012345-2");
        assert!(names.iter().all(|n| !n.chars().all(|c| c.is_ascii_digit())));
    }
}
