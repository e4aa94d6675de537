//! Text folding before matching, so that `ＢＯＭＢ`, `Bomb` and `bomb` are one word to the deny
//! lists: full-width ASCII forms become ASCII, the ideographic space a space, and every letter
//! its lower case.

/// The folded form of `text`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_folded(&mut out, c);
    }
    out
}

fn push_folded(out: &mut String, c: char) {
    let c = match c as u32 {
        // FULLWIDTH EXCLAMATION MARK ..= FULLWIDTH TILDE map onto ASCII `!` ..= `~`.
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else {
        out.extend(c.to_lowercase());
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
        assert_eq!(fold("Ünïcode ΣΑΣ"), "ünïcode σασ");
        assert_eq!(fold("炸弹"), "炸弹");
    }
}
