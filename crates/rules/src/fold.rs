//! Case-insensitive string tests by Unicode simple case folding, without allocating.
//!
//! Simple folding maps every character to exactly one character, so two strings are equal
//! case-insensitively when their folded characters are equal one by one. Constants are folded
//! once, at compile time; device values are folded a character at a time as they are read,
//! except on the fast path, when the text concerned is ASCII and compares eight bytes at a time.

/// The simple case folding of one character.
#[inline]
pub(crate) fn fold_char(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        unicode_case_mapping::case_folded(c)
            .and_then(|folded| char::from_u32(folded.get()))
            .unwrap_or(c)
    }
}

/// `text` with every character folded.
pub(crate) fn fold_str(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

/// Eight bytes `n`.
const fn lanes(n: u8) -> u64 {
    u64::from_ne_bytes([n; 8])
}

const HIGH_BITS: u64 = lanes(0x80);

/// Lowercases the ASCII letters among eight bytes at once: a byte gets 0x20 added when it is
/// in `A..=Z`. Adding to the low seven bits of a byte never carries into the next byte.
#[inline]
fn ascii_lowercase_word(word: u64) -> u64 {
    let low_bits = word & !HIGH_BITS;
    let at_least_a = low_bits.wrapping_add(lanes(0x80 - b'A'));
    let above_z = low_bits.wrapping_add(lanes(0x80 - b'Z' - 1));
    let upper = at_least_a & !above_z & !word & HIGH_BITS;
    word | (upper >> 2)
}

/// Fewer than eight bytes as one word, from overlapping loads of its first and last halves;
/// fine for comparing two slices of the same length, where the overlap repeats on both sides.
#[inline]
fn short_word(bytes: &[u8]) -> u64 {
    if let (Some(first), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        u64::from(u32::from_le_bytes(*first)) | (u64::from(u32::from_le_bytes(*last)) << 32)
    } else if let (Some(first), Some(last)) = (bytes.first_chunk::<2>(), bytes.last_chunk::<2>()) {
        u64::from(u16::from_le_bytes(*first)) | (u64::from(u16::from_le_bytes(*last)) << 16)
    } else {
        bytes.first().map_or(0, |&byte| u64::from(byte))
    }
}

/// Compares `value` with an ASCII folded constant of the same byte length, eight bytes at a
/// time: `Some(equal)` when `value` is ASCII too, `None` when it is not and only character
/// folding can tell (`K`, the Kelvin sign, folds to `k`).
#[inline]
fn ascii_fold_compare(value: &[u8], folded: &[u8]) -> Option<bool> {
    let mut difference = 0u64;
    let mut high_bits = 0u64;
    let mut compare = |v: u64, f: u64| {
        difference |= ascii_lowercase_word(v) ^ f;
        high_bits |= v;
    };
    if value.len() < 8 {
        compare(short_word(value), short_word(folded));
    } else {
        let (mut v, mut f) = (value, folded);
        while let (Some((v_word, v_rest)), Some((f_word, f_rest))) =
            (v.split_first_chunk::<8>(), f.split_first_chunk::<8>())
        {
            compare(u64::from_le_bytes(*v_word), u64::from_le_bytes(*f_word));
            (v, f) = (v_rest, f_rest);
        }
        // The last eight bytes, overlapping the words before: covers a partial last word.
        if let (Some(v_word), Some(f_word)) = (value.last_chunk::<8>(), folded.last_chunk::<8>()) {
            compare(u64::from_le_bytes(*v_word), u64::from_le_bytes(*f_word));
        }
    }
    if high_bits & HIGH_BITS == 0 {
        Some(difference == 0)
    } else {
        None
    }
}

/// A string constant of a rule, folded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Folded {
    text: Box<str>,
    ascii: bool,
}

impl Folded {
    pub(crate) fn new(text: &str) -> Self {
        let folded = fold_str(text);
        Folded {
            ascii: folded.is_ascii(),
            text: folded.into_boxed_str(),
        }
    }

    /// Whether `value` equals the constant, case-insensitively.
    #[inline]
    pub(crate) fn equals(&self, value: &str) -> bool {
        if self.ascii {
            // Every character has at least one byte and must fold to one ASCII byte here, so a
            // shorter value never matches, and a longer one only through non-ASCII characters.
            let (v, f) = (value.as_bytes(), self.text.as_bytes());
            let settled = match v.len().cmp(&f.len()) {
                std::cmp::Ordering::Less => Some(false),
                std::cmp::Ordering::Equal => ascii_fold_compare(v, f),
                std::cmp::Ordering::Greater => value.is_ascii().then_some(false),
            };
            if let Some(equal) = settled {
                return equal;
            }
        }
        value.chars().map(fold_char).eq(self.text.chars())
    }

    /// Whether `value` starts with the constant, case-insensitively.
    #[inline]
    pub(crate) fn is_prefix_of(&self, value: &str) -> bool {
        if self.ascii {
            let (v, f) = (value.as_bytes(), self.text.as_bytes());
            let settled = match v.get(..f.len()) {
                Some(head) => ascii_fold_compare(head, f),
                None => Some(false),
            };
            if let Some(prefix) = settled {
                return prefix;
            }
        }
        let mut value_chars = value.chars().map(fold_char);
        self.text.chars().all(|c| value_chars.next() == Some(c))
    }

    /// Whether `value` ends with the constant, case-insensitively.
    #[inline]
    pub(crate) fn is_suffix_of(&self, value: &str) -> bool {
        if self.ascii {
            let (v, f) = (value.as_bytes(), self.text.as_bytes());
            // An ASCII tail is made of whole characters; any other needs character folding.
            let tail = v
                .len()
                .checked_sub(f.len())
                .and_then(|start| v.get(start..));
            let settled = match tail {
                Some(tail) => ascii_fold_compare(tail, f),
                None => Some(false),
            };
            if let Some(suffix) = settled {
                return suffix;
            }
        }
        let mut value_chars = value.chars().rev().map(fold_char);
        self.text
            .chars()
            .rev()
            .all(|c| value_chars.next() == Some(c))
    }

    /// Whether `value` contains the constant, case-insensitively.
    #[inline]
    pub(crate) fn is_substring_of(&self, value: &str) -> bool {
        let needle = self.text.as_bytes();
        let Some(&first) = needle.first() else {
            return true;
        };
        if self.ascii && value.is_ascii() {
            return value.as_bytes().windows(needle.len()).any(|window| {
                window.first().map(u8::to_ascii_lowercase) == Some(first)
                    && ascii_fold_compare(window, needle) == Some(true)
            });
        }
        value.char_indices().any(|(start, _)| {
            value
                .get(start..)
                .is_some_and(|rest| self.is_prefix_of(rest))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_folding() {
        assert_eq!(fold_char('A'), 'a');
        assert_eq!(fold_char('\u{212A}'), 'k'); // Kelvin sign
        assert_eq!(fold_char('ẞ'), 'ß');
        assert_eq!(fold_char('ß'), 'ß'); // full folding would give "ss"
        assert_eq!(fold_char('Σ'), 'σ');
        assert_eq!(fold_char('ς'), 'σ');
        assert_eq!(fold_char('İ'), 'İ'); // no simple folding
    }

    #[test]
    fn word_lowercasing_matches_byte_lowercasing() {
        for byte in 0..=0x7fu8 {
            let word = u64::from_ne_bytes([byte, b'A', b'z', byte, b'@', b'[', b'Z', byte]);
            let expected = u64::from_ne_bytes(
                [byte, b'A', b'z', byte, b'@', b'[', b'Z', byte].map(|b| b.to_ascii_lowercase()),
            );
            assert_eq!(ascii_lowercase_word(word), expected, "{byte:#x}");
        }
    }

    #[test]
    fn comparisons() {
        let sales = Folded::new("[OrderID]:Sales");
        assert!(sales.equals("[orderid]:SALES"));
        assert!(!sales.equals("[orderid]:SALE"));
        assert!(Folded::new("kelvin").equals("\u{212A}ELVIN"));
        assert!(Folded::new("\u{212A}elvin").equals("KELVIN"));
        assert!(Folded::new("[ztdid]").is_prefix_of("[ZTDId]:abc"));
        assert!(Folded::new("ζ").is_prefix_of("Ζeta"));
        assert!(!Folded::new("[ztdid]:abcd").is_prefix_of("[ZTDId]:abc"));
        assert!(Folded::new("-01").is_suffix_of("LAB-01"));
        assert!(Folded::new("σ").is_suffix_of("ΟΔΟΣ"));
        assert!(!Folded::new("LAB-01").is_suffix_of("-01"));
        assert!(Folded::new("ware").is_substring_of("VMWARE20,1"));
        assert!(Folded::new("straße").is_substring_of("Hauptstrasse STRAẞE"));
        assert!(!Folded::new("strasse").is_substring_of("STRAẞE"));
        // Non-ASCII characters that fold to ASCII, wherever the byte fast paths meet them.
        assert!(Folded::new("abck").is_suffix_of("abc\u{212A}"));
        assert!(Folded::new("abck").is_suffix_of("zabc\u{212A}"));
        assert!(Folded::new("ka").is_prefix_of("\u{212A}A"));
        assert!(Folded::new("sk").equals("\u{17F}\u{212A}"));
        assert!(!Folded::new("sk").equals("\u{17F}\u{212A}x"));
        assert!(!Folded::new("abc").equals("ab\u{E9}"));
        assert!(Folded::new("xk").is_substring_of("\u{E9}X\u{212A}"));
        assert!(Folded::new("").is_substring_of(""));
        assert!(Folded::new("").equals(""));
        assert!(!Folded::new("a").is_substring_of(""));
    }
}
