//! The normalised view of a text that deny words and patterns are matched on, so that the
//! trivial disguises of a word do not hide it: `ＢＯＭＢ`, `𝐛𝐨𝐦𝐛`, `ⓑⓞⓜⓑ`, `bómb`, `bo\u{200b}mb`,
//! `bom\u{ad}b`, Cyrillic `bоmb` and `Bomb` are all `bomb`; `bomb\u{a0} \n recipe` is
//! `bomb recipe`; traditional `炸彈` is `炸弹`.
//!
//! Character by character: compatibility decomposition (what NFKC folds: widths, styled and
//! enclosed letters, ligatures), accents dropped, format and other default-ignorable characters
//! (zero-width space and joiner, soft hyphen, bidi controls…) dropped, whitespace runs made one
//! space, traditional Chinese made simplified, non-ASCII look-alikes replaced by their UTS #39
//! prototype, letters lower-cased. ASCII is never replaced by a look-alike ("burn" is not
//! "bum"). The view is only matched: what reaches the client is always the original text.

mod bmp;
mod confusables;
mod traditional;

use unicode_normalization::char::decompose_compatible;

/// The normalised view of `text`.
pub fn fold(text: &str) -> String {
    let mut out = Folded {
        text: String::with_capacity(text.len()),
        space: false,
    };
    // Most characters fold to themselves (lower-case ASCII, most Chinese): runs of them are
    // copied at once, and only the others go through the tables.
    let mut run = 0;
    for (i, c) in text.char_indices() {
        if folds_to_itself(c) {
            continue;
        }
        out.push_verbatim(&text[run..i]);
        run = i + c.len_utf8();
        if c.is_ascii() {
            out.push_ascii(c);
        } else if is_unified_han(c) {
            // Nothing to decompose, ignore or lower-case.
            out.push_table_folded(c);
        } else if !is_ignorable(c) {
            decompose_compatible(c, |d| out.push_decomposed(d));
        }
    }
    out.push_verbatim(&text[run..]);
    out.text
}

/// `c` is its own normalised form: ASCII that is neither a capital nor white space, and the
/// Chinese characters no table holds.
fn folds_to_itself(c: char) -> bool {
    if c.is_ascii() {
        !(c.is_ascii_uppercase() || c.is_ascii_whitespace() || c == '\u{b}')
    } else {
        is_unified_han(c) && !in_tables(c)
    }
}

/// The end of `text` that holds its last `n` characters as matching sees them (characters
/// [`fold`] drops, and all but one of a whitespace run, do not count): what a stream window
/// repeats so that a word split across two windows is whole in the second.
pub fn tail_chars(text: &str, n: usize) -> &str {
    let mut counted = 0;
    let mut after_space = false;
    for (i, c) in text.char_indices().rev() {
        if is_ignorable(c) || is_accent(c) {
            continue;
        }
        let space = c.is_whitespace();
        if space && after_space {
            continue;
        }
        after_space = space;
        if counted == n {
            return &text[i + c.len_utf8()..];
        }
        counted += 1;
    }
    text
}

struct Folded {
    text: String,
    /// The text ends with the space of a whitespace run.
    space: bool,
}

impl Folded {
    fn push_verbatim(&mut self, run: &str) {
        if !run.is_empty() {
            self.space = false;
            self.text.push_str(run);
        }
    }

    fn push_ascii(&mut self, c: char) {
        if c.is_ascii_whitespace() || c == '\u{b}' {
            self.push_space();
        } else {
            self.space = false;
            self.text.push(c.to_ascii_lowercase());
        }
    }

    fn push_space(&mut self) {
        if !self.space {
            self.text.push(' ');
            self.space = true;
        }
    }

    fn push_decomposed(&mut self, c: char) {
        if c.is_ascii() {
            return self.push_ascii(c);
        }
        if c.is_whitespace() {
            return self.push_space();
        }
        if !(is_accent(c) || is_ignorable(c)) {
            self.push_table_folded(c);
        }
    }

    /// Pushes `c` simplified, then as its look-alike prototype.
    fn push_table_folded(&mut self, c: char) {
        let c = if in_tables(c) { simplified(c) } else { c };
        match in_tables(c).then(|| prototype(c)).flatten() {
            Some(Prototype::One(p)) => self.push_prototype(p),
            Some(Prototype::Many(p)) => p.chars().for_each(|p| self.push_prototype(p)),
            None => self.push_letter(c),
        }
    }

    fn push_letter(&mut self, c: char) {
        self.space = false;
        if has_case_mapping(c) {
            self.text.extend(c.to_lowercase());
        } else {
            self.text.push(c);
        }
    }

    fn push_prototype(&mut self, c: char) {
        if c.is_ascii() {
            self.push_ascii(c);
        } else if !is_accent(c) {
            self.push_letter(c);
        }
    }
}

fn simplified(c: char) -> char {
    let bmp = u16::try_from(u32::from(c)).ok().and_then(|key| {
        let to = bmp_lookup(traditional::SIMPLIFIED_BMP, &SIMPLIFIED_BUCKETS, key)?;
        char::from_u32(u32::from(to))
    });
    bmp.or_else(|| {
        let table = traditional::SIMPLIFIED_OTHERS;
        let i = table.binary_search_by_key(&c, |&(t, _)| t).ok()?;
        Some(table[i].1)
    })
    .unwrap_or(c)
}

/// The look-alike prototype of `c`. A capital's prototype may be a capital's look-alike
/// (Cyrillic `І` is `l`, its small letter `і` is `i`): the small letter's prototype wins when
/// it is ASCII.
fn prototype(c: char) -> Option<Prototype> {
    let small = if has_case_mapping(c) {
        let mut lower = c.to_lowercase();
        match (lower.next(), lower.next()) {
            (Some(l), None) if l != c => table_prototype(l),
            _ => None,
        }
    } else {
        None
    };
    match small {
        Some(p) if p.is_ascii() => Some(p),
        _ => table_prototype(c)
            .filter(|p| p.is_ascii() || small.is_none())
            .or(small),
    }
}

/// Where each block of 256 code points starts in a sorted BMP table, so that a look-up
/// searches one block (a few entries) instead of the whole table.
type Buckets = [u16; 257];

const SIMPLIFIED_BUCKETS: Buckets = buckets(traditional::SIMPLIFIED_BMP);
const PROTOTYPE_BUCKETS: Buckets = buckets(confusables::PROTOTYPE_BMP);

const fn buckets(table: &[(u16, u16)]) -> Buckets {
    let mut starts = [0u16; 257];
    let (mut block, mut i) = (0, 0);
    while block <= 256 {
        while i < table.len() && ((table[i].0 >> 8) as usize) < block {
            i += 1;
        }
        starts[block] = i as u16;
        block += 1;
    }
    starts
}

fn bmp_lookup(table: &[(u16, u16)], buckets: &Buckets, key: u16) -> Option<u16> {
    let block = usize::from(key >> 8);
    let entries = &table[usize::from(buckets[block])..usize::from(buckets[block + 1])];
    let i = entries.binary_search_by_key(&key, |&(from, _)| from).ok()?;
    Some(entries[i].1)
}

/// Whether `c` may be in a table: most characters are not, and skip the look-ups.
fn in_tables(c: char) -> bool {
    let c = c as usize;
    c >= 0x10000 || bmp::IN_TABLES[c >> 6] & (1 << (c & 63)) != 0
}

/// The CJK unified ideographs of the BMP: no decomposition, no case.
fn is_unified_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF)
}

/// Whether `c` may have a lower-case form: capitals and the title-case digraphs. Asked before
/// `to_lowercase`, whose table search costs more than the rest of folding a character.
fn has_case_mapping(c: char) -> bool {
    // Chinese characters first: they are most of what reaches here, and have no case.
    !is_unified_han(c) && c.is_uppercase()
        || matches!(c as u32, 0x1C5 | 0x1C8 | 0x1CB | 0x1F2 | 0x1F88..=0x1F8F | 0x1F98..=0x1F9F
            | 0x1FA8..=0x1FAF | 0x1FBC | 0x1FCC | 0x1FFC)
}

/// Combining diacritical marks: what makes `ó` of `o`.
fn is_accent(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Format characters (general category Cf) and the other default-ignorable code points: they
/// show as nothing.
fn is_ignorable(c: char) -> bool {
    matches!(c as u32,
        0xAD | 0x34F | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
        | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0
        | 0xFFF0..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

fn table_prototype(c: char) -> Option<Prototype> {
    let bmp = u16::try_from(u32::from(c)).ok().and_then(|key| {
        let to = bmp_lookup(confusables::PROTOTYPE_BMP, &PROTOTYPE_BUCKETS, key)?;
        char::from_u32(u32::from(to))
    });
    bmp.map(Prototype::One).or_else(|| {
        let table = confusables::PROTOTYPES;
        let i = table.binary_search_by_key(&c, |&(s, _)| s).ok()?;
        Some(Prototype::Many(table[i].1))
    })
}

/// A look-alike prototype: one character (most) or several.
#[derive(Debug, Clone, Copy)]
enum Prototype {
    One(char),
    Many(&'static str),
}

impl Prototype {
    fn is_ascii(self) -> bool {
        match self {
            Prototype::One(c) => c.is_ascii(),
            Prototype::Many(s) => s.is_ascii(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_and_mixed_case_fold_to_ascii_lower_case() {
        assert_eq!(fold("ＢＯＭＢ"), "bomb");
        assert_eq!(fold("BoMb"), "bomb");
        assert_eq!(fold("ｂｏｍｂ\u{3000}Ｍａｋｉｎｇ！"), "bomb making!");
        assert_eq!(fold("炸弹"), "炸弹");
    }

    #[test]
    fn disguises_fold_to_the_plain_word() {
        for disguised in [
            "bo\u{200b}mb",
            "bom\u{200d}b",
            "bo\u{ad}mb",
            "\u{feff}bomb\u{2060}",
            "b\u{43e}mb",
            "\u{412}\u{43e}mb",
            "bo\u{301}mb",
            "b\u{f3}mb",
            "b\u{f6}mb",
            "\u{1d41b}\u{1d428}\u{1d426}\u{1d41b}",
            "\u{24d1}\u{24de}\u{24dc}\u{24d1}",
            "\u{1d553}\u{1d560}\u{1d55e}\u{1d553}",
        ] {
            assert_eq!(fold(disguised), "bomb", "{disguised:?}");
        }
        assert_eq!(fold("K\u{406}LL \u{456}t"), "kill it");
        assert_eq!(fold("\u{fb01}le"), "file");
    }

    #[test]
    fn whitespace_runs_are_one_space() {
        assert_eq!(fold("bomb\u{a0}recipe"), "bomb recipe");
        assert_eq!(fold("bomb \n\t\u{2003} recipe"), "bomb recipe");
        assert_eq!(fold("bomb\r\nrecipe "), "bomb recipe ");
    }

    #[test]
    fn ascii_is_never_replaced_by_a_look_alike() {
        assert_eq!(fold("burn 0l1I|"), "burn 0l1i|");
        assert_ne!(fold("burn"), fold("bum"));
    }

    #[test]
    fn traditional_chinese_folds_to_simplified() {
        assert_eq!(fold("炸彈"), fold("炸弹"));
        assert_eq!(fold("炸\u{200b}弹"), fold("炸弹"));
        assert_eq!(fold("無視規則"), fold("无视规则"));
        for &(traditional, simplified) in traditional::SIMPLIFIED_OTHERS {
            assert_eq!(super::simplified(traditional), simplified);
        }
    }

    #[test]
    fn characters_said_to_have_no_case_mapping_have_none() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if !has_case_mapping(c) {
                let mut lower = c.to_lowercase();
                assert_eq!((lower.next(), lower.next()), (Some(c), None), "{c:?}");
            }
        }
    }

    #[test]
    fn bucketed_look_ups_find_every_entry() {
        for table in [traditional::SIMPLIFIED_BMP, confusables::PROTOTYPE_BMP] {
            let buckets = buckets(table);
            for &(from, to) in table {
                assert_eq!(bmp_lookup(table, &buckets, from), Some(to));
            }
            assert_eq!(bmp_lookup(table, &buckets, 0x41), None);
            assert_eq!(bmp_lookup(table, &buckets, 0xffff), None);
        }
    }

    #[test]
    fn the_tail_counts_characters_as_matching_sees_them() {
        assert_eq!(tail_chars("héllo wörld", 5), "wörld");
        assert_eq!(tail_chars("ab", 5), "ab");
        assert_eq!(tail_chars("ab", 0), "");
        assert_eq!(
            tail_chars("x w\u{200b}o\u{200b}r\u{200b}d", 4),
            "w\u{200b}o\u{200b}r\u{200b}d"
        );
        assert_eq!(tail_chars("x a  \n b", 3), "a  \n b");
        assert_eq!(tail_chars("x a \u{200b} b", 3), "a \u{200b} b");
        assert_eq!(tail_chars("xo\u{301}b", 2), "o\u{301}b");
    }
}
