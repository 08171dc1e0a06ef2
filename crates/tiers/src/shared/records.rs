//! Entry records: what an entry name resolves to, shared by every node of a cluster, so a node
//! that has never seen an entry finds its blob in the shared tier instead of asking the source.
//!
//! One object per entry, `entries/<sha256 of the source, first 32 hex digits>/<sha256 of the key>`
//! (short enough for stores that limit names), where the source is
//! its identity (a canonical URL without credentials, chosen by the caller), never a node's own
//! namespace name: nodes naming a namespace differently over one source share records, and two
//! sources never share one. Hashes make any key a safe object name; the record repeats the source
//! and the key, and a reader checks both. Text, so an operator can read it:
//!
//! ```text
//! tiercache-entry 1
//! source <canonical source URL>
//! key <key>
//! blob sha256:<64 hex>
//! size <bytes>
//! md5 <32 hex>
//! validated <ms since the epoch: when the source last confirmed it>
//! content-type <value>          optional lines, each at most once, in this order
//! content-encoding <value>
//! etag <value>
//! last-modified <value>
//! check <64 hex>                SHA-256 of every byte above this line
//! ```
//!
//! Invariant: a record is written only after its blob is readable in the shared tier (the caller
//! writes it after the blob's write-back); a reader still checks that the blob is there.
//! Invariant: reading a record never allocates more than [`MAX_RECORD_BYTES`] (its size is asked first):
//! a larger, torn, unknown-format or otherwise malformed object is a miss, never an error, and is
//! left alone (a newer node may understand it).
//!
//! This module knows a record's fields as strings: no namespaces, index or HTTP.

use tiercache_core::Digest;

use super::{Counter, SharedError, SharedTier, metric};

const MAGIC: &str = "tiercache-entry 1";
/// The largest record read (a hostile or damaged store must not make a node allocate without
/// bound); a longer object is a malformed record.
pub const MAX_RECORD_BYTES: u64 = 16 << 10;

/// What the shared tier knows of one entry of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// The source's identity: its canonical URL, without credentials.
    pub source: String,
    /// The entry's key at that source.
    pub key: String,
    /// The blob it names.
    pub digest: Digest,
    /// The blob's size.
    pub size_bytes: u64,
    /// The blob's MD5 (32 lowercase hex digits).
    pub md5: String,
    /// When the source last confirmed it (ms since the epoch).
    pub validated_at: i64,
    /// The source's content type.
    pub content_type: Option<String>,
    /// The `Content-Encoding` the source sent the bytes with.
    pub content_encoding: Option<String>,
    /// The source's `ETag`.
    pub etag: Option<String>,
    /// The source's `Last-Modified`.
    pub last_modified: Option<String>,
}

/// What reading a record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordLookup {
    /// A well-formed record for this source and key.
    Found(EntryRecord),
    /// No record.
    Missing,
    /// An object that is not a record of this format for this source and key (why).
    Malformed(String),
}

const OPTIONAL: [&str; 4] = ["content-type", "content-encoding", "etag", "last-modified"];

impl EntryRecord {
    /// The record's text; `None` if a field cannot be written on one line.
    pub fn encode(&self) -> Option<String> {
        let optional = [&self.content_type, &self.content_encoding, &self.etag, &self.last_modified];
        let mut lines = vec![
            ("source", self.source.clone()),
            ("key", self.key.clone()),
            ("blob", self.digest.to_string()),
            ("size", self.size_bytes.to_string()),
            ("md5", self.md5.clone()),
            ("validated", self.validated_at.to_string()),
        ];
        for (name, value) in OPTIONAL.iter().zip(optional) {
            if let Some(v) = value {
                lines.push((name, v.clone()));
            }
        }
        seal(MAGIC, &lines)
    }

    /// Parses a record, which must be for `source` and `key`.
    pub fn decode(source: &str, key: &str, bytes: &[u8]) -> Result<EntryRecord, String> {
        let mut lines = unseal(MAGIC, bytes)?;
        let mut field = |name: &str| field(&mut lines, name);
        let found_source = field("source")?;
        let found_key = field("key")?;
        if found_source != source || found_key != key {
            return Err(format!("record is for {found_source} {found_key:?}, not {source} {key:?}"));
        }
        let digest: Digest = field("blob")?.parse().map_err(|e| format!("record: {e}"))?;
        let size_bytes: u64 = field("size")?.parse().map_err(|_| "record: bad size")?;
        let md5 = field("md5")?;
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("record: bad md5".into());
        }
        let validated_at: i64 = field("validated")?.parse().map_err(|_| "record: bad validated time")?;
        let mut optional: [Option<String>; 4] = Default::default();
        let mut next = 0;
        for line in lines {
            let (name, value) = line.split_once(' ').ok_or("record: bad line")?;
            let at = OPTIONAL[next..]
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| format!("record: unexpected `{name}`"))?;
            optional[next + at] = Some(value.to_owned());
            next += at + 1;
        }
        let [content_type, content_encoding, etag, last_modified] = optional;
        Ok(EntryRecord {
            source: found_source,
            key: found_key,
            digest,
            size_bytes,
            md5,
            validated_at,
            content_type,
            content_encoding,
            etag,
            last_modified,
        })
    }
}

/// A record's text: `magic`, then a `name value` line per field, then a `check` line (the SHA-256
/// of every byte above it); `None` if a value is empty or cannot be written on one line.
pub(super) fn seal(magic: &str, lines: &[(&str, String)]) -> Option<String> {
    let mut s = format!("{magic}\n");
    for (name, value) in lines {
        if value.is_empty() || value.chars().any(|c| c.is_control()) {
            return None;
        }
        s.push_str(&format!("{name} {value}\n"));
    }
    let check = Digest::of(s.as_bytes());
    s.push_str(&format!("check {}\n", check.hex()));
    Some(s)
}

/// The field lines of a record sealed by [`seal`] with `magic`, once its check holds.
pub(super) fn unseal<'a>(magic: &str, bytes: &'a [u8]) -> Result<std::str::Lines<'a>, String> {
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!("record is larger than {MAX_RECORD_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "record is not UTF-8".to_owned())?;
    let body_end = text.rfind("check ").ok_or("record has no check line")?;
    let (body, check) = text.split_at(body_end);
    let check = check.strip_prefix("check ").and_then(|c| c.strip_suffix('\n')).ok_or("bad check line")?;
    if Digest::of(body.as_bytes()).hex() != check {
        return Err("record fails its check (torn or corrupted)".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(magic) {
        return Err("record: unknown format".into());
    }
    Ok(lines)
}

/// The value of the next line of `lines`, which must be field `name`.
pub(super) fn field(lines: &mut std::str::Lines<'_>, name: &str) -> Result<String, String> {
    let line = lines.next().unwrap_or_default();
    line.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(' '))
        .map(str::to_owned)
        .ok_or_else(|| format!("record: expected `{name} …`"))
}

impl SharedTier {
    /// The store's key of the record of `key` at source `source`.
    pub fn record_key(source: &str, key: &str) -> String {
        let source = Digest::of(source.as_bytes()).hex();
        format!("entries/{}/{}", &source[..32], Digest::of(key.as_bytes()).hex())
    }

    /// Reads the record of `key` at `source`, through the breaker and the store's timeouts like
    /// every blob read. An error (store down, breaker open) is a miss for the caller; it has been
    /// counted and logged. Counting the lookup's outcome is the caller's ([`Self::count_record`]),
    /// which alone knows whether a record is still fresh.
    pub async fn read_record(&self, source: &str, key: &str) -> Result<RecordLookup, SharedError> {
        let object = Self::record_key(source, key);
        let bytes = match self.read_small(&object).await? {
            None => return Ok(RecordLookup::Missing),
            Some(Err(why)) => {
                tracing::warn!(store = %self.display, object, why, "shared tier entry record is malformed; treated as a miss");
                return Ok(RecordLookup::Malformed(why));
            }
            Some(Ok(bytes)) => bytes,
        };
        Ok(match EntryRecord::decode(source, key, &bytes) {
            Ok(record) => RecordLookup::Found(record),
            Err(why) => {
                tracing::warn!(store = %self.display, object, why, "shared tier entry record is malformed; treated as a miss");
                RecordLookup::Malformed(why)
            }
        })
    }

    /// Object `object`, at most [`MAX_RECORD_BYTES`] of it: `None` if there is none, `Err(why)`
    /// for an empty or larger one (never read).
    pub(super) async fn read_small(&self, object: &str) -> Result<Option<Result<bytes::Bytes, String>>, SharedError> {
        // Its size first, so an oversized object is never read.
        let Some(meta) = self.lookup_call("record", self.op.stat(object)).await? else {
            return Ok(None);
        };
        let len = meta.content_length();
        if len == 0 || len > MAX_RECORD_BYTES {
            return Ok(Some(Err(format!("record object has {len} bytes"))));
        }
        // Replaced meanwhile by a shorter object: "not found"; by a longer one: `len` bytes of it,
        // which fail the check.
        let found = self.lookup_call("record", self.op.read_with(object).range(0..len)).await?;
        Ok(found.map(|buf| Ok(buf.to_bytes())))
    }

    /// Writes `record` (replacing any record of its source and key). The caller makes sure its
    /// blob is in the shared tier first.
    pub async fn write_record(&self, record: &EntryRecord) -> Result<(), SharedError> {
        let Some(text) = record.encode() else {
            return Err(SharedError::Local(format!("entry {:?} has a field a record cannot hold", record.key)));
        };
        let object = Self::record_key(&record.source, &record.key);
        self.call("record_write", self.op.write(&object, text)).await?;
        self.bump(Counter::RecordsWritten, 1);
        metrics::counter!(metric::RECORD_WRITES).increment(1);
        Ok(())
    }

    /// Counts a record lookup by `outcome`: `hit` (fresh), `stale` (past the freshness window),
    /// `miss` (no record, or one naming a blob the tier does not have), `malformed`, `error`.
    pub fn count_record(&self, outcome: &'static str) {
        metrics::counter!(metric::RECORD_LOOKUPS, "outcome" => outcome).increment(1);
        let c = match outcome {
            "hit" => Counter::RecordHits,
            "stale" => Counter::RecordStale,
            "miss" | "malformed" => Counter::RecordMisses,
            _ => Counter::RecordErrors,
        };
        self.bump(c, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EntryRecord {
        EntryRecord {
            source: "http://origin.example/base/".into(),
            key: "img/layer.tar".into(),
            digest: Digest::of(b"layer"),
            size_bytes: 5,
            md5: "0123456789abcdef0123456789abcdef".into(),
            validated_at: 1_700_000_000_000,
            content_type: Some("application/x-tar".into()),
            content_encoding: None,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Wed, 02 Dec 2026 16:00:00 GMT".into()),
        }
    }

    #[test]
    fn round_trips_with_and_without_optional_fields() {
        let r = record();
        let text = r.encode().unwrap();
        assert_eq!(EntryRecord::decode(&r.source, &r.key, text.as_bytes()).unwrap(), r);
        let bare = EntryRecord { content_type: None, etag: None, last_modified: None, ..record() };
        let text = bare.encode().unwrap();
        assert_eq!(EntryRecord::decode(&r.source, &r.key, text.as_bytes()).unwrap(), bare);
    }

    #[test]
    fn refuses_damage_other_entries_and_oversized_objects() {
        let r = record();
        let text = r.encode().unwrap();
        for i in 0..text.len() {
            let mut bad = text.clone().into_bytes();
            bad[i] ^= 0x01;
            assert!(EntryRecord::decode(&r.source, &r.key, &bad).is_err(), "flip at {i} accepted");
        }
        assert!(EntryRecord::decode(&r.source, &r.key, &text.as_bytes()[..text.len() - 5]).is_err());
        assert!(EntryRecord::decode("http://other.example/", &r.key, text.as_bytes()).is_err());
        assert!(EntryRecord::decode(&r.source, "img/other.tar", text.as_bytes()).is_err());
        let huge = vec![b'a'; MAX_RECORD_BYTES as usize + 1];
        assert!(EntryRecord::decode(&r.source, &r.key, &huge).is_err());
        // A well-checked record of an unknown format is refused too.
        let mut other = text.replace(MAGIC, "tiercache-entry 2");
        other.truncate(other.rfind("check ").unwrap());
        let check = Digest::of(other.as_bytes()).hex();
        other.push_str(&format!("check {check}\n"));
        assert!(EntryRecord::decode(&r.source, &r.key, other.as_bytes()).unwrap_err().contains("unknown format"));
    }

    #[test]
    fn a_field_with_a_line_break_is_not_written() {
        let r = EntryRecord { etag: Some("\"a\"\nsize 1".into()), ..record() };
        assert!(r.encode().is_none());
    }

    #[test]
    fn object_names_depend_on_source_and_key_only() {
        let a = SharedTier::record_key("http://a.example/", "k");
        assert_eq!(a, SharedTier::record_key("http://a.example/", "k"));
        assert_ne!(a, SharedTier::record_key("http://b.example/", "k"));
        assert_ne!(a, SharedTier::record_key("http://a.example/", "k2"));
        assert!(a.starts_with("entries/") && a.len() == "entries/".len() + 32 + 1 + 64);
    }
}
