//! Text without case, as every comparison of records makes it: each character lower-cased by
//! Unicode's mapping (`char::to_lowercase`), so `'MÜLLER' eq 'müller'` and `contains(name,
//! 'élan')` holds for `Élan` — as Dataverse's case-insensitive SQL Server collation and
//! PostgreSQL's `citext` under a UTF-8 locale compare. The embedded store's SQLite compares
//! through it (its `NOCASE` collation and its `LIKE`, replaced on every connection: SQLite's own
//! fold only ASCII), and so do the comparisons made in Rust (aggregates' groups, a `$filter`
//! comparing two literals), so every path tells text apart the same way.

use std::cmp::Ordering;

/// The characters of `text` lower-cased, one by one (no context: a final sigma is a sigma).
fn folded(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase)
}

/// `text` lower-cased as [`compare`] compares it.
pub fn fold(text: &str) -> String {
    folded(text).collect()
}

/// The order of two texts without case: their lower-cased characters in code point order. A
/// total order, so a collation and its index agree with it.
pub fn compare(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        let (a, b) = (a.bytes(), b.bytes());
        return a
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.map(|c| c.to_ascii_lowercase()));
    }
    folded(a).cmp(folded(b))
}

/// One piece of a `LIKE` pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    /// `%`: any run of characters.
    Any,
    /// `_`: one character.
    One,
    /// A character, lower-cased.
    Char(char),
}

/// Whether two texts are the same without case (sign-in names, a filter's user): [`compare`]'s
/// equality.
pub fn same_without_case(a: &str, b: &str) -> bool {
    compare(a, b) == Ordering::Equal
}

/// An SQL `LIKE` pattern read once and matched against many texts without case: `%` any run of
/// characters, `_` one character, and the escape character (when given) taking the next one as
/// itself.
#[derive(Debug)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
    /// Without `_`, the pattern's text between its `%`s, lower-cased: matched by substring
    /// search, in time linear in the text and the pattern (the `$filter` functions and
    /// FetchXML's `like` make only such patterns).
    runs: Option<Vec<String>>,
}

impl Pattern {
    pub(crate) fn new(pattern: &str, escape: Option<char>) -> Pattern {
        let mut pieces = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                c if Some(c) == escape => {
                    if let Some(next) = chars.next() {
                        pieces.extend(next.to_lowercase().map(Piece::Char));
                    }
                }
                '%' => pieces.push(Piece::Any),
                '_' => pieces.push(Piece::One),
                c => pieces.extend(c.to_lowercase().map(Piece::Char)),
            }
        }
        let runs = (!pieces.contains(&Piece::One)).then(|| {
            pieces
                .split(|piece| *piece == Piece::Any)
                .map(|run| {
                    run.iter()
                        .filter_map(|piece| match piece {
                            Piece::Char(c) => Some(*c),
                            _ => None,
                        })
                        .collect()
                })
                .collect()
        });
        Pattern { pieces, runs }
    }

    /// Whether `text` matches, without case. ASCII text is read in place; other text is
    /// lower-cased first.
    pub(crate) fn matches(&self, text: &str) -> bool {
        if let Some(runs) = &self.runs {
            thread_local! {
                /// The text lower-cased, in a buffer each thread keeps: no allocation a row.
                static FOLDED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            }
            return FOLDED.with_borrow_mut(|folded_text| {
                folded_text.clear();
                if text.is_ascii() {
                    folded_text.push_str(text);
                    folded_text.make_ascii_lowercase();
                } else {
                    folded_text.extend(folded(text));
                }
                matches_runs(runs, folded_text)
            });
        }
        if text.is_ascii() {
            let bytes = text.as_bytes();
            return self.matches_chars(bytes.len(), |i| char::from(bytes[i].to_ascii_lowercase()));
        }
        let chars: Vec<char> = folded(text).collect();
        self.matches_chars(chars.len(), |i| chars[i])
    }

    /// Wildcard matching with one remembered `%`: never exponential, though a `_` among `%`s
    /// can take the text's length times the pattern's.
    fn matches_chars(&self, len: usize, at: impl Fn(usize) -> char) -> bool {
        let pieces = &self.pieces;
        let (mut p, mut t) = (0, 0);
        let mut resume: Option<(usize, usize)> = None;
        while t < len {
            match pieces.get(p) {
                Some(Piece::Any) => {
                    resume = Some((p, t));
                    p += 1;
                }
                Some(Piece::One) => {
                    p += 1;
                    t += 1;
                }
                Some(Piece::Char(c)) if *c == at(t) => {
                    p += 1;
                    t += 1;
                }
                _ => match resume {
                    Some((star, from)) => {
                        p = star + 1;
                        t = from + 1;
                        resume = Some((star, from + 1));
                    }
                    None => return false,
                },
            }
        }
        pieces[p..].iter().all(|piece| *piece == Piece::Any)
    }
}

/// Whether `text` (lower-cased) is `runs` joined by any runs of characters: the first run at its
/// start, the last at its end, each one between at its first place after the one before —
/// which finds a match whenever there is one.
fn matches_runs(runs: &[String], text: &str) -> bool {
    let (first, last) = (&runs[0], &runs[runs.len() - 1]);
    if runs.len() == 1 {
        return text == first;
    }
    if first.len() + last.len() > text.len()
        || !text.starts_with(first.as_str())
        || !text.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for run in &runs[1..runs.len() - 1] {
        match rest.find(run.as_str()) {
            Some(at) => rest = &rest[at + run.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compares_without_case_beyond_ascii() {
        assert_eq!(compare("MÜLLER", "müller"), Ordering::Equal);
        assert_eq!(compare("Élan", "élan"), Ordering::Equal);
        assert_eq!(compare("ΟΔΟΣ", "οδοσ"), Ordering::Equal);
        assert_eq!(compare("Apple", "apple"), Ordering::Equal);
        assert_eq!(compare("apple", "Banana"), Ordering::Less);
        assert_eq!(compare("Zebra", "ähnlich"), Ordering::Less, "by code point");
        assert_eq!(compare("ab", "abc"), Ordering::Less);
        assert_eq!(compare("", ""), Ordering::Equal);
        assert_eq!(fold("ÄÖÜ Straße"), "äöü straße");
    }

    #[test]
    fn like_matches_without_case_and_honours_its_escape() {
        let like = |pattern: &str, text: &str, escape| Pattern::new(pattern, escape).matches(text);
        let e = Some('\\');
        assert!(like("%ÜLL%", "Müller", e));
        assert!(like("mü%", "MÜLLER", e));
        assert!(like("%ER", "müller", e));
        assert!(like("m_ller", "Müller", e));
        assert!(like("müller", "MÜLLER", e));
        assert!(!like("müller", "müllers", e));
        assert!(!like("%x%", "müller", e));
        assert!(like("%", "", e));
        assert!(!like("_", "", e));
        assert!(like("%a%b%", "xxAyyB", e));
        assert!(!like("%a%b%", "xxByyA", e));
        // Escaped wildcards are themselves.
        assert!(like("100\\%", "100%", e));
        assert!(!like("100\\%", "1000", e));
        assert!(like("a\\_b", "A_B", e));
        assert!(!like("a\\_b", "axb", e));
        assert!(like("a\\\\b", "a\\B", e));
        // Without an escape, a backslash is a character.
        assert!(like("a\\b", "A\\b", None));
        // Backtracking over many stars stays correct, with `_` among them too.
        assert!(like("%a%a%a%a%b", "aaaaaaaaaaaaaaaab", e));
        assert!(!like("%a%a%a%a%b", "aaaaaaaaaaaaaaaaa", e));
        assert!(like("%a_a%b", "xxaYabzzb", e));
        assert!(!like("%a_a%b", "xxaYbzz", e));
        assert!(like("a%", "a", e));
        assert!(like("%a", "a", e));
        assert!(!like("ab%ba", "aba", e), "the two ends may not overlap");
        assert!(like("ab%ba", "abba", e));
        assert!(like("%%", "", e));
        // A long text against a long pattern that almost matches everywhere (substring search
        // answers it in linear time; a match retried from every place would take 4·10⁹ steps).
        let text = "a".repeat(200_000);
        assert!(!like(&format!("%{}b%", "a".repeat(20_000)), &text, e));
        assert!(like(&format!("%{}%", "A".repeat(20_000)), &text, e));
    }
}
