//! Cairn's persisted formats. Pure: bytes in, bytes out, no I/O, no async.
//!
//! - [`segment`]: immutable segments — blocks of events ([`block`]), a footer
//!   (block index, stream directory, tag index, filters) and a fixed trailer.
//! - [`index`]: index objects — a segment table and a paged stream table.
//! - [`manifest`]: the JSON commit documents (manifest, root, GC boundary).
//!
//! Guarantees: decoding truncated, corrupted or hostile bytes returns
//! [`Error::Corrupt`] naming the object; it never panics, never allocates
//! from a length it has not checked, and checksums (CRC32C) every block,
//! page and footer, so it never returns wrong events. Byte layouts are in
//! `docs/FORMAT.md`.
//!
//! ```
//! use cairn_format::{block::Event, segment::{encode_segment, decode_footer, EncodeOptions}};
//! let e = Event { stream: "order-1".into(), revision: 0, event_type: "Placed".into(), timestamp: 1,
//!     id: None, tags: vec![], binary: false, data: bytes::Bytes::from_static(b"{}") };
//! let seg = encode_segment(&[e], &EncodeOptions::default()).unwrap();
//! let tail = &seg.bytes[seg.footer_offset as usize..];
//! let footer = decode_footer(tail, Some(seg.footer_offset), "seg").unwrap();
//! assert_eq!(footer.stream("order-1").unwrap().count, 1);
//! ```

pub mod archive;
pub mod block;
pub mod bloom;
mod codec;
pub mod index;
pub mod manifest;
pub mod segment;

/// What decoding or encoding can fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// Persisted bytes that are truncated, corrupted or not ours.
    #[error("corrupt object: {0}")]
    Corrupt(String),
    /// Input that the encoder refuses (a bug in the caller).
    #[error("invalid input to encoder: {0}")]
    Invalid(String),
}
