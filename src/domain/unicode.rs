//! Characters that make two different strings look the same, or one string look different
//! from what it is: what the user fields refuse.
//!
//! Default-ignorable code points (zero-width spaces and joiners, soft hyphens, variation
//! selectors, tags, ...) render as nothing, so `ada\u{200B}@example.com` would be a new
//! account that looks exactly like `ada@example.com`. Bidirectional controls reorder what is
//! shown around them, so a name can display as text it does not contain.
//!
//! Written out by hand: `unicode-normalization` (already used for NFKC) does not carry the
//! `Default_Ignorable_Code_Point` property, and a crate for one table of 17 ranges would cost
//! more to build than it saves. The ranges are Unicode 15's `DerivedCoreProperties.txt`.

/// `Default_Ignorable_Code_Point`.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// The explicit bidirectional formatting characters (embeddings, overrides, isolates and
/// marks), which the "Trojan Source" attacks use to make text display out of order.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c as u32,
        0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_invisible_characters_are_caught_and_ordinary_ones_are_not() {
        for c in [
            '\u{200B}',
            '\u{200D}',
            '\u{00AD}',
            '\u{FEFF}',
            '\u{2060}',
            '\u{E0041}',
        ] {
            assert!(is_default_ignorable(c), "{:X}", c as u32);
        }
        for c in ['\u{202E}', '\u{2066}', '\u{200F}'] {
            assert!(is_bidi_control(c), "{:X}", c as u32);
        }
        for c in ['a', 'é', 'ß', '中', '\u{05D0}', ' ', '@', '😀'] {
            assert!(!is_default_ignorable(c) && !is_bidi_control(c), "{c}");
        }
    }
}
