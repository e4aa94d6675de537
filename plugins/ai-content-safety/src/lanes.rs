//! The text of a streamed answer waiting to be checked: one window per lane (a choice's text,
//! each of its tool calls), so that choices or calls streamed interleaved never cut each
//! other's phrases apart. Each window repeats the end of the one before it in its lane.

use crate::extract::Lane;
use crate::fold;

/// Most lanes one stream may open (`n` choices times their tool calls).
pub const MAX_LANES: usize = 16;

#[derive(Debug, Default)]
struct Window {
    lane: Lane,
    unchecked: String,
    unchecked_chars: usize,
    /// The end of the last checked text of this lane.
    overlap: String,
}

/// More lanes than [`MAX_LANES`]: the stream cannot be checked within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyLanes;

#[derive(Debug, Default)]
pub struct Lanes {
    windows: Vec<Window>,
}

impl Lanes {
    pub fn push(&mut self, lane: Lane, text: &str) -> Result<(), TooManyLanes> {
        let at = match self.windows.iter().position(|w| w.lane == lane) {
            Some(at) => at,
            None if self.windows.len() < MAX_LANES => {
                self.windows.push(Window {
                    lane,
                    ..Window::default()
                });
                self.windows.len() - 1
            }
            None => return Err(TooManyLanes),
        };
        let window = &mut self.windows[at];
        window.unchecked_chars += text.chars().count();
        window.unchecked.push_str(text);
        Ok(())
    }

    /// No text waits to be checked.
    pub fn is_empty(&self) -> bool {
        self.windows.iter().all(|w| w.unchecked.is_empty())
    }

    /// Characters waiting in the fullest window.
    pub fn fullest_chars(&self) -> usize {
        self.windows
            .iter()
            .map(|w| w.unchecked_chars)
            .max()
            .unwrap_or(0)
    }

    /// The texts to check, one per lane with new text (its overlap first); each lane keeps the
    /// last `overlap_chars` (as matching counts them) for its next window.
    pub fn take(&mut self, overlap_chars: usize) -> Vec<String> {
        let mut texts = Vec::new();
        for window in self.windows.iter_mut().filter(|w| !w.unchecked.is_empty()) {
            let mut text = std::mem::take(&mut window.overlap);
            text.push_str(&window.unchecked);
            window.unchecked.clear();
            window.unchecked_chars = 0;
            window.overlap = fold::tail_chars(&text, overlap_chars).to_string();
            texts.push(text);
        }
        texts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_keep_their_own_text_and_overlap() {
        let mut w = Lanes::default();
        w.push((0, 0), "Here is the bomb").unwrap();
        w.push((1, 0), "I would").unwrap();
        w.push((0, 0), " rec").unwrap();
        assert_eq!(w.fullest_chars(), 20);
        assert_eq!(w.take(4), ["Here is the bomb rec", "I would"]);
        assert!(w.is_empty());
        w.push((0, 0), "ipe").unwrap();
        assert_eq!(w.take(4), [" recipe"]);
    }

    #[test]
    fn lanes_are_bounded() {
        let mut w = Lanes::default();
        for i in 0..MAX_LANES as u32 {
            w.push((i, 0), "x").unwrap();
        }
        assert_eq!(w.push((99, 0), "x"), Err(TooManyLanes));
        assert_eq!(w.push((3, 0), "y"), Ok(()));
    }
}
