//! Small text helpers shared by the rules and the native checks: line numbers from byte
//! offsets, and bounded, escaped excerpts safe to print in a terminal or embed in JSON.

use super::EXCERPT_CHARS;

/// 1-based line of byte `offset` in `bytes`.
pub fn line_of(bytes: &[u8], offset: usize) -> u64 {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

/// An excerpt of `bytes[start..end]`, widened to at most [`EXCERPT_CHARS`] characters,
/// escaped by [`escape`].
pub fn excerpt(bytes: &[u8], start: usize, end: usize) -> String {
    let start = start.min(bytes.len());
    let end = end.clamp(start, bytes.len()).min(start + EXCERPT_CHARS * 4);
    escape(&String::from_utf8_lossy(&bytes[start..end]))
}

/// Escapes control characters, invisible and bidi characters (as `\u{..}`), and cuts at
/// [`EXCERPT_CHARS`] characters with a trailing `…`. What an excerpt shows is then exactly
/// what is there, and it cannot drive a terminal or reorder text around it.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in s.chars() {
        let piece = match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "\\t".to_string(),
            '\\' => "\\\\".to_string(),
            c if c.is_control() || is_invisible(c) => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        };
        // The bound is on what is shown, escapes included.
        let n = piece.chars().count();
        if count + n > EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push_str(&piece);
        count += n;
    }
    out
}

/// Characters that render as nothing or reorder text: zero-width, bidi controls, tag
/// characters, variation selectors, BOM.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB
        | 0x1D173..=0x1D17A | 0xE0000..=0xE007F | 0xE0100..=0xE01EF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of(b"a\nb\nc", 0), 1);
        assert_eq!(line_of(b"a\nb\nc", 2), 2);
        assert_eq!(line_of(b"a\nb\nc", 99), 3);
    }

    #[test]
    fn excerpts_escape_controls_and_invisibles_and_are_bounded() {
        let e = escape("a\x1b[31mb\u{202e}c\u{e0041}\n");
        assert_eq!(e, "a\\u{1b}[31mb\\u{202e}c\\u{e0041}\\n");
        let long = "x".repeat(10_000);
        let e = excerpt(long.as_bytes(), 0, long.len());
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }
}
