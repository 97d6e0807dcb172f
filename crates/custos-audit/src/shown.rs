//! Recorded text as a person should see it. An audit record keeps every string as it was sent;
//! a page or a terminal that draws it as it is lets the sender decide what the reader sees — a
//! bidirectional control reverses what follows (`\u{202E}txt.exe` is drawn `exe.txt`), a
//! zero-width space hides inside a name (`ad\u{200B}min`), and a terminal escape can move the
//! cursor and erase the line above it, a whole audit row. The console's audit pages and the
//! command line's tables show such text through [`visible`].

/// `text` with every character that changes how the text around it is drawn, or is not drawn
/// at all, written as its code point (`⟨U+202E⟩`): the bidirectional controls, the word joiner
/// and the byte order mark, and control characters — escape included — other than tab and line
/// breaks. The zero-width space, non-joiner and joiner are written so too, except between two
/// characters beyond ASCII, where they carry meaning — a Persian word's non-joiner, the joiner
/// of an emoji sequence, a Thai word break — and cannot make Latin text pass for other text.
pub fn visible(text: &str) -> String {
    let always = |c: char| {
        matches!(c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}')
            || (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    let joiner = |c: char| matches!(c, '\u{200B}'..='\u{200D}');
    if !text.chars().any(|c| always(c) || joiner(c)) {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let beyond_ascii =
        |at: Option<usize>| at.and_then(|i| chars.get(i)).is_some_and(|c| !c.is_ascii());
    let mut out = String::with_capacity(text.len() + 16);
    for (i, &c) in chars.iter().enumerate() {
        let shown = always(c)
            || (joiner(c) && !(beyond_ascii(i.checked_sub(1)) && beyond_ascii(Some(i + 1))));
        if shown {
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
        // Joiners between letters of other scripts are part of the text: a Persian word's
        // non-joiner, an emoji's joiner, a Thai word break. Between Latin letters, or at an
        // end, they are named.
        for kept in ["می\u{200C}خواهم", "👩\u{200D}💻", "ภาษา\u{200B}ไทย"]
        {
            assert_eq!(visible(kept), kept);
        }
        assert_eq!(visible("a\u{200C}"), "a\u{27E8}U+200C\u{27E9}");
        assert_eq!(visible("\u{200D}b"), "\u{27E8}U+200D\u{27E9}b");
        assert_eq!(visible("é\u{200B}x"), "é\u{27E8}U+200B\u{27E9}x");
        // Marks and controls that reorder are named whatever surrounds them.
        assert_eq!(
            visible("שלום\u{200F}עולם"),
            "שלום\u{27E8}U+200F\u{27E9}עולם"
        );
    }
}
