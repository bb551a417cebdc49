//! Which characters stored text may hold. Names, emails and bios reach
//! other people's terminals and screens (`usersvc list`, a browser), where a
//! control character can rewrite what is shown (`\x1b]52;…` sets the
//! reader's clipboard, `\r\x1b[2K` forges a row) and a format character can
//! hide or reorder it (U+202E turns text around, U+200B makes look-alike
//! "unique" emails).

/// The first character of `value` that stored text of this kind may not
/// hold, described for the caller; `None` when all may be stored.
///
/// Control characters (Unicode's Cc: C0, DEL and C1) are refused except
/// those in `allowed`. Format characters (Cf: bidi controls, zero-width
/// characters) are refused unless `format_ok`; a bio keeps them, since
/// emoji sequences are joined with U+200D.
pub fn refused_char(value: &str, allowed: &[char], format_ok: bool) -> Option<String> {
    // Most text is ASCII, where only the controls can be refused: checked
    // byte by byte, without decoding characters or the format table, which
    // took 8% of a bulk creation's time.
    let ascii_fine = value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) || (b.is_ascii() && allowed.contains(&char::from(b))));
    if ascii_fine {
        return None;
    }
    value.chars().find_map(|c| {
        if c.is_control() && !allowed.contains(&c) {
            Some(format!(
                "must not contain control characters (U+{:04X})",
                c as u32
            ))
        } else if !format_ok && is_format(c) {
            Some(format!(
                "must not contain invisible or direction-changing characters (U+{:04X})",
                c as u32
            ))
        } else {
            None
        }
    })
}

/// Whether `c` is in Unicode's general category Cf (format), as of
/// Unicode 15.1. std has no such test, and the list is short and stable.
pub fn is_format(c: char) -> bool {
    // Nothing below U+00AD is a format character.
    if (c as u32) < 0x00AD {
        return false;
    }
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_hidden_characters_are_named() {
        assert_eq!(
            refused_char("a\u{1b}]52;c;x\u{7}", &[], false).as_deref(),
            Some("must not contain control characters (U+001B)")
        );
        assert_eq!(
            refused_char("\u{85}", &[], true).as_deref(),
            Some("must not contain control characters (U+0085)"),
            "C1 too"
        );
        assert_eq!(
            refused_char("evil\u{202e}gpj.exe", &[], false).as_deref(),
            Some("must not contain invisible or direction-changing characters (U+202E)")
        );
        assert!(refused_char("a\u{200b}b", &[], false).is_some());
    }

    #[test]
    fn ordinary_text_and_a_bios_lines_are_welcome() {
        for text in ["Zoë Ångström", "李小龙", "Ada Lovelace"] {
            assert_eq!(refused_char(text, &[], false), None, "{text}");
        }
        // A family emoji is joined with U+200D, a format character.
        let bio = "line one\n\tline two 👨\u{200d}👩\u{200d}👧";
        assert_eq!(refused_char(bio, &['\n', '\t'], true), None);
        assert!(refused_char("a\rb", &['\n', '\t'], true).is_some());
    }
}
