//! ETags of stored objects as S3 defines them — the hex MD5 of the bytes, or for a multipart
//! object the hex MD5 of its parts' MD5s followed by `-N` — and a check of a byte stream
//! against one as it arrives (a copy pushed between targets is verified this way before it is
//! published).
//!
//! ```
//! use aisle_cluster::etag::{EtagCheck, composite};
//! use md5::Digest;
//! let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
//! let etag = composite([md5::Md5::digest(a).to_vec(), md5::Md5::digest(b).to_vec()]);
//! let mut check = EtagCheck::new(&etag, &[6, 5]);
//! check.update(b"hello wor");
//! check.update(b"ld");
//! assert!(check.matches());
//! let mut bad = EtagCheck::new(&etag, &[6, 5]);
//! bad.update(b"hello word!");
//! assert!(!bad.matches());
//! ```

use md5::{Digest, Md5};

/// The ETag of a multipart object from its parts' MD5s (raw bytes), in order.
pub fn composite<P: AsRef<[u8]>>(part_md5s: impl IntoIterator<Item = P>) -> String {
    let mut h = Md5::new();
    let mut n = 0;
    for p in part_md5s {
        h.update(p.as_ref());
        n += 1;
    }
    format!("{}-{n}", hex::encode(h.finalize()))
}

/// Checks a stream of bytes against an ETag. An ETag that is neither an MD5 nor a composite
/// of as many parts as the object has (an appended shard's, say) checks the length only.
pub struct EtagCheck {
    etag: String,
    kind: Kind,
    /// Bytes seen.
    seen: u64,
}

enum Kind {
    Md5(Md5),
    Composite(Parts),
    Opaque,
}

/// A composite ETag's state: the MD5 of each part as its bytes go by.
struct Parts {
    sizes: Vec<u64>,
    /// Bytes of the current part still to come.
    left: u64,
    current: Md5,
    md5s: Vec<[u8; 16]>,
}

impl Parts {
    fn new(sizes: &[u64]) -> Self {
        let mut p = Parts {
            sizes: sizes.to_vec(),
            left: sizes[0],
            current: Md5::new(),
            md5s: Vec::with_capacity(sizes.len()),
        };
        p.close_finished();
        p
    }

    /// Close every part whose bytes are all in (empty parts included), moving to the next.
    fn close_finished(&mut self) {
        while self.left == 0 && self.md5s.len() < self.sizes.len() {
            self.md5s
                .push(std::mem::take(&mut self.current).finalize().into());
            self.left = self.sizes.get(self.md5s.len()).copied().unwrap_or(0);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        // Bytes beyond the parts' sizes are not hashed; the caller's length check fails.
        while !data.is_empty() && self.md5s.len() < self.sizes.len() {
            let n = self.left.min(data.len() as u64) as usize;
            self.current.update(&data[..n]);
            data = &data[n..];
            self.left -= n as u64;
            self.close_finished();
        }
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl EtagCheck {
    /// A check against `etag` of an object whose parts have the sizes `parts` (empty for a
    /// single-part object).
    pub fn new(etag: &str, parts: &[u64]) -> Self {
        let kind = if parts.is_empty() {
            if is_hex32(etag) {
                Kind::Md5(Md5::new())
            } else {
                Kind::Opaque
            }
        } else {
            match etag.split_once('-') {
                Some((h, n)) if is_hex32(h) && n.parse() == Ok(parts.len()) => {
                    Kind::Composite(Parts::new(parts))
                }
                _ => Kind::Opaque,
            }
        };
        EtagCheck {
            etag: etag.to_string(),
            kind,
            seen: 0,
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.seen
    }

    /// Nothing seen yet.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// The next bytes of the object.
    pub fn update(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        match &mut self.kind {
            Kind::Md5(h) => h.update(data),
            Kind::Composite(p) => p.update(data),
            Kind::Opaque => {}
        }
    }

    /// Whether the bytes seen match the ETag (an opaque ETag: always; the caller checks the
    /// length).
    pub fn matches(self) -> bool {
        match self.kind {
            Kind::Md5(h) => hex::encode(h.finalize()) == self.etag,
            Kind::Composite(p) => p.md5s.len() == p.sizes.len() && composite(&p.md5s) == self.etag,
            Kind::Opaque => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(b: &[u8]) -> Vec<u8> {
        Md5::digest(b).to_vec()
    }

    #[test]
    fn checks_single_composite_and_opaque_etags_across_any_framing() {
        let body = b"0123456789abcdef";
        let single = hex::encode(Md5::digest(body));
        let parts = [5u64, 0, 11];
        let multi = composite([md5(&body[..5]), md5(b""), md5(&body[5..])]);
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            for (etag, sizes) in [(&single, &[][..]), (&multi, &parts[..])] {
                let mut c = EtagCheck::new(etag, sizes);
                c.update(a);
                c.update(b);
                assert_eq!(c.len(), 16);
                assert!(c.matches(), "{etag} cut at {cut}");
            }
        }
        let mut flipped = body.to_vec();
        flipped[7] ^= 1;
        for (etag, sizes) in [(&single, &[][..]), (&multi, &parts[..])] {
            let mut c = EtagCheck::new(etag, sizes);
            c.update(&flipped);
            assert!(!c.matches());
        }
        let mut short = EtagCheck::new(&multi, &parts);
        short.update(&body[..10]);
        assert!(!short.matches(), "a missing part fails");
        let mut opaque = EtagCheck::new("abc-3", &[]);
        opaque.update(body);
        assert!(
            opaque.matches(),
            "an opaque ETag leaves the check to the length"
        );
    }
}
