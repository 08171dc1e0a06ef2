//! Derivation records: which output blob a recipe made from an input blob, shared by every node
//! of a cluster, so a node that has never made an output finds it instead of making it again.
//!
//! One object per derivation, `derived/<recipe>/<params key>/sha256/<input hex>`, where the
//! params key names the recipe's version and canonical parameters (the caller's hash of them):
//! a new version is a new object name, and old ones are never looked at. The output's bytes are
//! an ordinary blob of the shared tier (`blobs/sha256/…`), written back before its record. Text,
//! sealed like entry records (`records.rs`):
//!
//! ```text
//! tiercache-derived 1
//! recipe <name>
//! version <n>
//! params <canonical parameters, or -  for none>
//! input sha256:<64 hex>
//! output sha256:<64 hex>
//! size <bytes>
//! content-type <value>
//! check <64 hex>
//! ```
//!
//! Invariant: a record is written only after its output blob is readable in the shared tier; a
//! reader still checks that the blob is there. A malformed or foreign object is a miss.

use tiercache_core::Digest;

use super::records::{field, seal, unseal};
use super::{SharedError, SharedTier};

const MAGIC: &str = "tiercache-derived 1";

/// What the shared tier knows of one derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedRecord {
    /// The recipe's name.
    pub recipe: String,
    /// Its version.
    pub version: u32,
    /// Its canonical parameters (empty for none).
    pub params: String,
    /// The input blob.
    pub input: Digest,
    /// The output blob.
    pub output: Digest,
    /// The output's size.
    pub size_bytes: u64,
    /// The output's media type.
    pub content_type: String,
}

impl DerivedRecord {
    /// The record's text; `None` if a field cannot be written on one line.
    pub fn encode(&self) -> Option<String> {
        let params = if self.params.is_empty() { "-".to_owned() } else { self.params.clone() };
        let lines = [
            ("recipe", self.recipe.clone()),
            ("version", self.version.to_string()),
            ("params", params),
            ("input", self.input.to_string()),
            ("output", self.output.to_string()),
            ("size", self.size_bytes.to_string()),
            ("content-type", self.content_type.clone()),
        ];
        seal(MAGIC, &lines)
    }

    /// Parses a record, which must be for `recipe`, `version`, `params` and `input`.
    pub fn decode(recipe: &str, version: u32, params: &str, input: &Digest, bytes: &[u8]) -> Result<Self, String> {
        let mut lines = unseal(MAGIC, bytes)?;
        let mut field = |name: &str| field(&mut lines, name);
        let found = (field("recipe")?, field("version")?, field("params")?, field("input")?);
        let wanted_params = if params.is_empty() { "-" } else { params };
        if found != (recipe.to_owned(), version.to_string(), wanted_params.to_owned(), input.to_string()) {
            return Err(format!("record is for {found:?}, not for this derivation"));
        }
        let output: Digest = field("output")?.parse().map_err(|e| format!("record: {e}"))?;
        let size_bytes: u64 = field("size")?.parse().map_err(|_| "record: bad size")?;
        let content_type = field("content-type")?;
        Ok(DerivedRecord {
            recipe: recipe.to_owned(),
            version,
            params: params.to_owned(),
            input: *input,
            output,
            size_bytes,
            content_type,
        })
    }
}

impl SharedTier {
    /// The store's key of derivation `(recipe, params_key, input)`.
    pub fn derived_key(recipe: &str, params_key: &str, input: &Digest) -> String {
        format!("derived/{recipe}/{params_key}/sha256/{}", input.hex())
    }

    /// Reads the record of a derivation (`params_key` names its version and parameters); a miss
    /// (`Ok(None)`) for none, or a malformed or foreign one (logged). Errors are the store's.
    pub async fn read_derived(
        &self,
        (recipe, version, params): (&str, u32, &str),
        params_key: &str,
        input: &Digest,
    ) -> Result<Option<DerivedRecord>, SharedError> {
        let object = Self::derived_key(recipe, params_key, input);
        let bytes = match self.read_small(&object).await? {
            None => return Ok(None),
            Some(Ok(bytes)) => bytes,
            Some(Err(why)) => {
                tracing::warn!(store = %self.display, object, why, "shared tier derivation record is malformed; a miss");
                return Ok(None);
            }
        };
        match DerivedRecord::decode(recipe, version, params, input, &bytes) {
            Ok(record) => Ok(Some(record)),
            Err(why) => {
                tracing::warn!(store = %self.display, object, why, "shared tier derivation record is malformed; a miss");
                Ok(None)
            }
        }
    }

    /// Writes `record` under `params_key`. The caller makes sure its output blob is in the shared
    /// tier first.
    pub async fn write_derived(&self, record: &DerivedRecord, params_key: &str) -> Result<(), SharedError> {
        let Some(text) = record.encode() else {
            return Err(SharedError::Local(format!("derivation {:?} has a field a record cannot hold", record.recipe)));
        };
        let object = Self::derived_key(&record.recipe, params_key, &record.input);
        self.call("derived_write", self.op.write(&object, text)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_only_read_for_its_own_key() {
        let r = DerivedRecord {
            recipe: "thumbnail".into(),
            version: 2,
            params: "fit=contain&format=webp&size=300".into(),
            input: Digest::of(b"in"),
            output: Digest::of(b"out"),
            size_bytes: 1234,
            content_type: "image/webp".into(),
        };
        let text = r.encode().unwrap();
        assert_eq!(DerivedRecord::decode("thumbnail", 2, &r.params, &r.input, text.as_bytes()).unwrap(), r);
        assert!(DerivedRecord::decode("thumbnail", 3, &r.params, &r.input, text.as_bytes()).is_err());
        assert!(DerivedRecord::decode("thumbnail", 2, "size=1", &r.input, text.as_bytes()).is_err());
        let torn = &text.as_bytes()[..text.len() - 3];
        assert!(DerivedRecord::decode("thumbnail", 2, &r.params, &r.input, torn).is_err());
        let none = DerivedRecord { params: String::new(), ..r.clone() };
        let text = none.encode().unwrap();
        assert_eq!(DerivedRecord::decode("thumbnail", 2, "", &r.input, text.as_bytes()).unwrap(), none);
        assert!(DerivedRecord { content_type: "a\nb".into(), ..r }.encode().is_none());
        let key = SharedTier::derived_key("thumbnail", "ab12", &Digest::of(b"in"));
        assert!(key.starts_with("derived/thumbnail/ab12/sha256/"));
    }
}
