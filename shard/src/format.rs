/// An archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// POSIX tar (ustar, pax, gnu).
    Tar,
    /// gzip-compressed tar (`.tgz`, `.tar.gz`).
    TarGz,
    /// lz4-frame-compressed tar (`.tar.lz4`).
    TarLz4,
    /// zip.
    Zip,
}

impl Format {
    /// By file extension.
    ///
    /// ```
    /// use aisle_shard::Format;
    /// assert_eq!(Format::from_name("a/b.tar.gz"), Some(Format::TarGz));
    /// assert_eq!(Format::from_name("x.TGZ"), Some(Format::TarGz));
    /// assert_eq!(Format::from_name("x.jpg"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Format> {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".tar") {
            Some(Format::Tar)
        } else if n.ends_with(".tgz") || n.ends_with(".tar.gz") {
            Some(Format::TarGz)
        } else if n.ends_with(".tar.lz4") {
            Some(Format::TarLz4)
        } else if n.ends_with(".zip") {
            Some(Format::Zip)
        } else {
            None
        }
    }

    /// By magic bytes (give at least the first 512 bytes).
    pub fn from_magic(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Format::TarGz)
        } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            Some(Format::TarLz4)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(Format::Zip)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Some(Format::Tar)
        } else {
            None
        }
    }

    /// By extension, else by magic bytes.
    pub fn detect(name: &str, head: &[u8]) -> Option<Format> {
        Format::from_name(name).or_else(|| Format::from_magic(head))
    }

    /// The format can be read by seeking (no decompression of what is skipped).
    pub fn seekable(self) -> bool {
        matches!(self, Format::Tar | Format::Zip)
    }
}
