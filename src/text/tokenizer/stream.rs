//! Streaming decode: token bytes in, complete UTF-8 out.
//!
//! A byte-level token can end in the middle of a character (GPT-2 splits most emoji and CJK
//! characters over two or three tokens), so printing each token's text as it comes would print
//! replacement characters for what the next token completes. [`Utf8Stream`] holds back an
//! incomplete tail until the bytes that finish it arrive.

/// Bytes in, the longest complete UTF-8 text out; an incomplete character waits for the bytes
/// that complete it.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    /// Bytes of a character begun but not finished.
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append `bytes` and return the text they complete. A byte sequence that can never be UTF-8
    /// (not merely unfinished) comes out as `�` (U+FFFD), as `String::from_utf8_lossy` would
    /// write it.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked valid"),
                    );
                    match err.error_len() {
                        // The tail is the start of a character: keep it for the next bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that no continuation can make valid.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still pending, as `�` when anything is (the stream ended mid-character).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_over_pushes_comes_out_once_whole() {
        let text = "a🙂b你";
        let bytes = text.as_bytes();
        let mut stream = Utf8Stream::new();
        let mut out = String::new();
        let mut emitted = Vec::new();
        for byte in bytes {
            let piece = stream.push(std::slice::from_ref(byte));
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "{piece:?}");
            emitted.push(piece.clone());
            out.push_str(&piece);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, text);
        // The emoji's four bytes print nothing until the last one.
        assert_eq!(emitted[1..4], ["", "", ""]);
        assert_eq!(emitted[4], "🙂");
    }

    #[test]
    fn bytes_that_cannot_be_utf8_become_one_replacement_each() {
        let mut stream = Utf8Stream::new();
        assert_eq!(stream.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(stream.push(b"\xe4\xbd"), "");
        assert_eq!(stream.finish(), "\u{FFFD}");
    }
}
