//! Lock names as the table shares them between a command, the stored lock and every output
//! about it. A name of up to `INLINE` bytes (most names: `job:1234`, `bench:0000000001`) is kept
//! inline, so building one from the read buffer, storing it and naming it in outputs never
//! allocates; a longer one is an `Arc<str>` allocated once and then shared by refcount.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest name kept inline: with the length byte and the enum's tag, a `Name` is 24 bytes,
/// the size of the `Arc<str>` variant with its tag.
pub const INLINE: usize = 22;

/// A lock name: an immutable string, cheap to clone. Compares, hashes and orders as its `str`.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is a whole `&str` copied in, so it is valid UTF-8 (see `Name::as_str`).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Arc<str>),
}

impl Name {
    pub fn new(name: &str) -> Name {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                Name(Repr::Inline { len, bytes })
            }
            _ => Name::shared(name),
        }
    }

    /// A long name, out of line: with the allocation in `new`, building every short name
    /// (each command carries one) paid the saving and restoring of six registers it never used.
    #[cold]
    #[inline(never)]
    fn shared(name: &str) -> Name {
        Name(Repr::Shared(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len).min(INLINE)];
                // SAFETY: `Repr::Inline` is only built by `Name::new`, which copies all the bytes
                // of a `&str` (valid UTF-8, cut nowhere) and records their count in `len`; the
                // fields are private and never mutated, so `bytes[..len]` is that same `str`.
                // Checked conversion would cost a UTF-8 scan on every hash and comparison of a
                // stored name (every lookup, every listing sort).
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Shared(name) => name,
        }
    }

    /// Whether the name lives out of line (it is longer than `INLINE` bytes).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        Name::new(name)
    }
}

impl PartialEq for Name {
    /// Two inline names compare as their whole inline arrays, a fixed-size compare with no
    /// call: `Name::new` zeroes the bytes past `len`, and nothing mutates them.
    #[inline]
    fn eq(&self, other: &Name) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline { len, bytes }, Repr::Inline { len: other_len, bytes: other_bytes }) => {
                len == other_len && bytes == other_bytes
            }
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_text_inline_or_shared() {
        let long = "x".repeat(INLINE + 1);
        let edge = "y".repeat(INLINE);
        // Multi-byte characters up to the edge, and across it.
        let accents = "é".repeat(INLINE / 2);
        let across = format!("{}é", "z".repeat(INLINE - 1));
        for text in ["", "a", "job:1234", &edge, &long, &accents, &across, &"€".repeat(1000)] {
            let name = Name::new(text);
            assert_eq!(name.as_str(), text);
            assert_eq!(&*name.clone(), text);
            assert_eq!(name.is_shared(), text.len() > INLINE, "{text:?}");
            assert_eq!(format!("{name:?}"), format!("{text:?}"));
        }
    }

    /// Every length around the inline limit, each byte distinct, so a byte copied to the wrong
    /// place shows; the padding past the text stays zero (`PartialEq` compares whole arrays).
    #[test]
    fn every_inline_length_keeps_its_bytes_and_zero_padding() {
        let text: String = ('a'..='z').chain('A'..='Z').take(INLINE + 3).collect();
        for n in 0..=INLINE + 2 {
            let cut = &text[..n];
            let name = Name::new(cut);
            assert_eq!((name.as_str(), name.is_shared()), (cut, n > INLINE), "{n}");
            // Cut from a buffer with more bytes after it: none of them comes along.
            let longer = format!("{cut}####");
            assert_eq!(name, Name::new(&longer[..n]), "{n}");
            if let Repr::Inline { bytes, .. } = &name.0 {
                assert!(bytes[n..].iter().all(|&b| b == 0), "{n}: {bytes:?}");
            }
            if n > 0 {
                assert_ne!(name, Name::new(&text[..n - 1]), "{n}");
                assert_ne!(name, Name::new(&text[1..=n]), "{n}");
            }
        }
    }

    #[test]
    fn names_compare_and_hash_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |h: &dyn Fn(&mut DefaultHasher)| {
            let mut hasher = DefaultHasher::new();
            h(&mut hasher);
            hasher.finish()
        };
        let long = "b".repeat(40);
        let (short, shared) = (Name::new("a"), Name::new(&long));
        assert!(short < shared && Name::new("a") == short && shared == Name::new(&long));
        // Inline names of different lengths differ, even where one is the other's prefix or
        // padding would match; inline and shared never hold the same text.
        let edge = "e".repeat(INLINE);
        for (a, b) in [("a", "a\0"), ("", "\0"), ("ab", "a"), ("job:1", "job:2"), (&edge[..], &edge[1..])] {
            assert_ne!(Name::new(a), Name::new(b), "{a:?} {b:?}");
            assert_eq!(Name::new(a), Name::new(a));
        }
        assert_ne!(Name::new(&edge), Name::new(&format!("{edge}e")));
        assert_eq!(hash(&|h| short.hash(h)), hash(&|h| "a".hash(h)));
        assert_eq!(hash(&|h| shared.hash(h)), hash(&|h| long.as_str().hash(h)));
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }
}
