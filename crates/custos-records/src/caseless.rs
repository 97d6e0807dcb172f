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
pub(crate) fn fold(text: &str) -> String {
    folded(text).collect()
}

/// The order of two texts without case: their lower-cased characters in code point order. A
/// total order, so a collation and its index agree with it.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
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

/// An SQL `LIKE` pattern read once and matched against many texts without case: `%` any run of
/// characters, `_` one character, and the escape character (when given) taking the next one as
/// itself.
#[derive(Debug)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
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
        Pattern { pieces }
    }

    /// Whether `text` matches, without case. ASCII text is read in place; other text is
    /// lower-cased first.
    pub(crate) fn matches(&self, text: &str) -> bool {
        if text.is_ascii() {
            let bytes = text.as_bytes();
            return self.matches_chars(bytes.len(), |i| char::from(bytes[i].to_ascii_lowercase()));
        }
        let chars: Vec<char> = folded(text).collect();
        self.matches_chars(chars.len(), |i| chars[i])
    }

    /// Wildcard matching with one remembered `%`: linear in practice, never exponential.
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
        // Backtracking over many stars stays correct.
        assert!(like("%a%a%a%a%b", "aaaaaaaaaaaaaaaab", e));
        assert!(!like("%a%a%a%a%b", "aaaaaaaaaaaaaaaaa", e));
    }
}
