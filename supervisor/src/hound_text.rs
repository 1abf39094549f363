//! Hound-supplied text (a `Fatal` message, a violation's detail) made safe to keep and log.

/// Longest hound-supplied text (a `Fatal` message) kept and logged, in bytes.
pub(crate) const HOUND_TEXT_MAX: usize = 512;
/// `text` cut to at most [`HOUND_TEXT_MAX`] bytes (on a char boundary) with control
/// characters escaped, so hound-supplied text can neither flood nor forge log lines.
pub(crate) fn hound_text(text: &str) -> String {
    let mut end = text.len().min(HOUND_TEXT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end].chars().flat_map(char::escape_debug).collect();
    if end < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hound_text_is_bounded_and_escaped() {
        let long = "é".repeat(1000);
        let t = hound_text(&long);
        assert!(t.len() <= HOUND_TEXT_MAX + 32, "{}", t.len());
        assert!(t.ends_with("(2000 bytes)"), "{t}");
        let forged = hound_text("ok\n2026-01-01 INFO forged line\r\u{1b}[31m");
        assert!(!forged.contains('\n') && !forged.contains('\r') && !forged.contains('\u{1b}'));
        assert_eq!(hound_text("short"), "short");
    }
}
