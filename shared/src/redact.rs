//! Secrets out of everything a provider says back. Providers echo keys in error messages
//! ("Incorrect API key provided: sk-…"), inside 200 streams and JSON bodies, even in headers;
//! every byte a client receives from the provider edge passes a [`Redactor`] first.
//!
//! A secret is replaced by a mask of the same length (`[redacted]` padded with `*`), so a body
//! keeps its `content-length` and passes through untouched otherwise.

/// Secrets shorter than this are not searched for: they would match ordinary text.
pub const MIN_SECRET_LEN: usize = 8;

const MASK: &[u8] = b"[redacted]";

/// The secrets one provider is configured with, as they can appear in a response: verbatim,
/// and with `/` escaped as JSON allows (AWS secret keys contain `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    forms: Vec<Vec<u8>>,
}

impl Secrets {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Secrets {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.into_iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
            for form in [secret.to_string(), secret.replace('/', "\\/")] {
                if !forms.iter().any(|f| f == form.as_bytes()) {
                    forms.push(form.into_bytes());
                }
            }
        }
        Secrets { forms }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Also looks for `secret` (a credential obtained at run time, such as an access token).
    pub fn add(&mut self, secret: &str) {
        let more = Secrets::new([secret]);
        for form in more.forms {
            if !self.forms.contains(&form) {
                self.forms.push(form);
            }
        }
    }

    fn longest(&self) -> usize {
        self.forms.iter().map(Vec::len).max().unwrap_or(0)
    }

    fn found_in(&self, bytes: &[u8]) -> bool {
        self.forms.iter().any(|form| find(bytes, form).is_some())
    }

    /// Masks every secret in `bytes`; returns whether any was found.
    pub fn mask(&self, bytes: &mut [u8]) -> bool {
        let mut found = false;
        for form in &self.forms {
            let mut at = 0;
            while let Some(i) = find(&bytes[at..], form) {
                let start = at + i;
                fill_mask(&mut bytes[start..start + form.len()]);
                at = start + form.len();
                found = true;
            }
        }
        found
    }

    /// `text` with every secret masked.
    pub fn masked(&self, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        if !self.mask(&mut bytes) {
            return text.to_string();
        }
        // Masks are ASCII and replace whole secrets (valid UTF-8 runs): still UTF-8.
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// Length of the longest end of `bytes` that could be the start of a secret.
    fn partial_tail(&self, bytes: &[u8]) -> usize {
        let max = self.longest().saturating_sub(1).min(bytes.len());
        (1..=max)
            .rev()
            .find(|&n| {
                let tail = &bytes[bytes.len() - n..];
                self.forms.iter().any(|f| f.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        let i = haystack[at..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        if haystack[at + i..].starts_with(needle) {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

fn fill_mask(span: &mut [u8]) {
    for (i, b) in span.iter_mut().enumerate() {
        *b = *MASK.get(i).unwrap_or(&b'*');
    }
}

/// Masks secrets in a body that arrives in pieces. A piece that ends with what could be the
/// start of a secret keeps that end back until the next piece shows whether it is one, so a
/// secret split across pieces is masked too. What it holds is shorter than the longest secret.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Secrets,
    held: Vec<u8>,
}

impl Redactor {
    pub fn new(secrets: Secrets) -> Redactor {
        Redactor {
            secrets,
            held: Vec::new(),
        }
    }

    /// Also masks `secret` from now on.
    pub fn add_secret(&mut self, secret: &str) {
        self.secrets.add(secret);
    }

    /// Nothing to look for: the body can pass without being read.
    pub fn is_idle(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The next piece to release: what was held, then `input`, secrets masked. `None` when
    /// the piece passes exactly as it came.
    pub fn push(&mut self, input: &[u8], end: bool) -> Option<Vec<u8>> {
        if self.held.is_empty() && !self.secrets.found_in(input) {
            let hold = if end {
                0
            } else {
                self.secrets.partial_tail(input)
            };
            if hold == 0 {
                return None;
            }
            self.held = input[input.len() - hold..].to_vec();
            return Some(input[..input.len() - hold].to_vec());
        }
        let mut piece = std::mem::take(&mut self.held);
        piece.extend_from_slice(input);
        self.secrets.mask(&mut piece);
        let hold = if end {
            0
        } else {
            self.secrets.partial_tail(&piece)
        };
        self.held = piece.split_off(piece.len() - hold);
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &str = "sk-provider-0123456789";

    #[test]
    fn secrets_become_masks_of_their_length() {
        let secrets = Secrets::new([KEY, "short", "aws/secret+key/0123"]);
        let text = format!("Incorrect API key provided: Bearer {KEY}. and aws\\/secret+key\\/0123");
        let masked = secrets.masked(&text);
        assert_eq!(masked.len(), text.len());
        assert!(
            !masked.contains(KEY) && !masked.contains("secret+key"),
            "{masked}"
        );
        assert!(masked.contains("[redacted]************"), "{masked}");
        assert_eq!(secrets.masked("short and sweet"), "short and sweet");
    }

    #[test]
    fn a_secret_added_later_is_masked_too() {
        let mut redactor = Redactor::new(Secrets::new([KEY]));
        redactor.add_secret("ya29.access-token-42");
        let out = redactor
            .push(b"bad credentials: Bearer ya29.access-token-42", true)
            .expect("masked");
        assert_eq!(out, b"bad credentials: Bearer [redacted]**********");
    }

    #[test]
    fn a_secret_split_anywhere_is_masked() {
        let body = format!("data: {{\"error\":{{\"message\":\"bad key {KEY} {KEY}\"}}}}\n\n");
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut redactor = Redactor::new(Secrets::new([KEY]));
                let mut out = Vec::new();
                let pieces = [&body[..cut], &body[cut..second], &body[second..]];
                for (i, piece) in pieces.iter().enumerate() {
                    let released = redactor.push(piece.as_bytes(), i == 2);
                    out.extend(released.unwrap_or_else(|| piece.as_bytes().to_vec()));
                }
                let out = String::from_utf8(out).unwrap();
                assert_eq!(out.len(), body.len());
                assert!(!out.contains(KEY), "cuts {cut} {second}: {out}");
                assert_eq!(out, Secrets::new([KEY]).masked(&body));
            }
        }
    }

    #[test]
    fn ordinary_pieces_pass_as_they_are() {
        let mut redactor = Redactor::new(Secrets::new([KEY]));
        assert_eq!(
            redactor.push(b"data: {\"content\":\"hello\"}\n\n", false),
            None
        );
        // An end that could start the key is held, then released when it is not the key.
        assert_eq!(redactor.push(b"abc sk-pro", false), Some(b"abc ".to_vec()));
        assert_eq!(redactor.push(b"se", false), Some(b"sk-prose".to_vec()));
        assert!(Redactor::new(Secrets::new(["tiny"])).is_idle());
    }
}
