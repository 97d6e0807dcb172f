//! Recorded text as a person should see it. An audit record keeps every string as it was sent;
//! a page or a terminal that draws it as it is lets the sender decide what the reader sees — a
//! bidirectional control reverses what follows (`\u{202E}txt.exe` is drawn `exe.txt`), a
//! zero-width space hides inside a name (`ad\u{200B}min`), and a terminal escape can move the
//! cursor and erase the line above it, a whole audit row. The console's audit pages and the
//! command line's tables show such text through [`visible`].

/// `text` with every character that changes how the text around it is drawn, or is not drawn
/// at all, written as its code point (`⟨U+202E⟩`): the bidirectional controls, zero-width
/// characters and the byte order mark, and control characters — escape included — other than
/// tab and line breaks.
pub fn visible(text: &str) -> String {
    let hidden = |c: char| {
        matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}')
            || (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    if !text.chars().any(hidden) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\u{27E8}U+{:04X}\u{27E9}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn what_would_change_the_drawing_is_named_and_the_rest_kept() {
        assert_eq!(visible("plain name, é and 名前"), "plain name, é and 名前");
        assert_eq!(visible("\u{202E}txt.exe"), "\u{27E8}U+202E\u{27E9}txt.exe");
        assert_eq!(visible("ad\u{200B}min"), "ad\u{27E8}U+200B\u{27E9}min");
        assert_eq!(
            visible("row\u{1b}[1A\u{1b}[2K"),
            "row\u{27E8}U+001B\u{27E9}[1A\u{27E8}U+001B\u{27E9}[2K"
        );
        assert_eq!(
            visible("a\u{85}b\u{FEFF}"),
            "a\u{27E8}U+0085\u{27E9}b\u{27E8}U+FEFF\u{27E9}"
        );
        assert_eq!(
            visible("two\tcolumns\nand lines\r\n"),
            "two\tcolumns\nand lines\r\n"
        );
    }
}
