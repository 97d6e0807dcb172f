//! Cells for spreadsheet programs, shared by the audit exports and the records' Export to Excel:
//! the longest text an Excel cell keeps, CSV cells that a spreadsheet cannot take for a formula
//! (OWASP's CSV injection rule), and CSV files as spreadsheet programs read them.

use std::borrow::Cow;

/// A CSV writer as spreadsheet programs expect: rows ended by CRLF (RFC 4180) and, when the
/// text begins a file (`starts_file`), a UTF-8 byte order mark first, by which Excel knows the
/// text is UTF-8.
pub fn csv_writer(starts_file: bool) -> csv::Writer<Vec<u8>> {
    let start = if starts_file {
        UTF8_BOM.as_bytes().to_vec()
    } else {
        Vec::new()
    };
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(start)
}

/// The byte order mark a CSV file begins with (read past on import).
pub const UTF8_BOM: &str = "\u{feff}";

/// Longest text an Excel cell keeps, in characters.
const CELL_CHARS_MAX: usize = 32_767;

/// `text` cut to the longest Excel keeps in a cell.
pub fn xlsx_cell(text: &str) -> &str {
    match text.char_indices().nth(CELL_CHARS_MAX) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Whether `text` is a plain number (`-12`, `+3.5`, `1e-3`), which a spreadsheet reads as a
/// number, never as a formula.
fn plain_number(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.parse::<f64>().is_ok()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
}

/// A CSV cell a spreadsheet cannot run: text beginning with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'` (the value is otherwise intact); plain numbers stay
/// numbers.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !plain_number(text);
    if risky {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_everything_else_is_kept() {
        for (given, written) in [
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "'=HYPERLINK(\"http://evil\",\"x\")",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(1+1)", "'@SUM(1+1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("-12.5", "-12.5"),
            ("+3", "+3"),
            ("1e-3", "1e-3"),
            ("Contoso", "Contoso"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(given), written, "{given:?}");
        }
        assert_eq!(xlsx_cell(&"x".repeat(40_000)).len(), CELL_CHARS_MAX);
    }
}
