//! Derivation recipes: what turns an input blob into an output blob (a thumbnail, a decompressed
//! layer, a layer's tar index, a checksum), as pure functions of `(recipe, version, parameters,
//! input bytes)`.
//!
//! A recipe knows nothing of the cache: the engine (`tiercache-engine`'s `derive` module) finds
//! the input blob, queues the job, runs [`Recipe::run`] on a worker thread with [`Limits`], and
//! stores what it wrote. Everything a recipe is asked with comes from outside (an HTTP query, a
//! command line), so [`Recipe::params`] validates and bounds every parameter and returns them in
//! one canonical form ([`Params`]): two requests that mean the same output name the same key.
//!
//! Invariant: a recipe's output depends only on its version, its canonical parameters and the
//! input's bytes. A change to what a recipe outputs bumps [`Recipe::version`], so old outputs are
//! never found again (they are looked up by key, not scanned for).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

mod checksum;
mod decompress;
pub mod image_tree;
pub mod seek;
pub mod tar_index;
mod thumbnail;
mod video;

pub use checksum::Checksum;
pub use decompress::Decompress;
pub use tar_index::TarIndexRecipe;
pub use thumbnail::Thumbnail;
pub use video::VideoThumbnail;

/// Every recipe this build has, by name.
pub fn recipes() -> &'static [&'static dyn Recipe] {
    static ALL: [&dyn Recipe; 6] =
        [&Checksum, &Decompress, &seek::LayerSeek, &TarIndexRecipe, &Thumbnail, &VideoThumbnail];
    &ALL
}

/// The recipe named `name`; [`DeriveError::UnknownRecipe`] if there is none.
pub fn recipe(name: &str) -> Result<&'static dyn Recipe, DeriveError> {
    recipes().iter().copied().find(|r| r.name() == name).ok_or_else(|| DeriveError::UnknownRecipe {
        name: name.chars().take(64).collect(),
        known: recipes().iter().map(|r| r.name()).collect::<Vec<_>>().join(", "),
    })
}

/// A recipe: its name and version, its parameters, and the function itself.
pub trait Recipe: Send + Sync + 'static {
    /// The name requests use (`?derive=NAME`): lowercase ASCII letters, digits and `-`.
    fn name(&self) -> &'static str;

    /// Bumped whenever the output for the same parameters and input changes.
    fn version(&self) -> u32;

    /// The canonical parameters for the raw ones a request gave (`raw`: name and value pairs, the
    /// request's own `derive`, `wait` and the like already removed) and the request's `Accept`
    /// header, for a recipe whose output format follows it. An unknown parameter, a repeated one,
    /// or a value out of its bounds is [`DeriveError::BadParam`].
    fn params(&self, raw: &[(String, String)], accept: Option<&str>) -> Result<Params, DeriveError>;

    /// Whether the recipe can run on this machine (`Err(why)` when a tool it needs is missing).
    fn available(&self) -> Result<(), String> {
        Ok(())
    }

    /// Computes the output of `input` (the input blob's file, `input_len` bytes) for `params` into
    /// `out`, within `limits`; returns the output's media type. On error, whatever was written to
    /// `out` is garbage the caller discards.
    fn run(
        &self,
        input: &Path,
        input_len: u64,
        params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError>;

    /// A stand-in to answer while the output is being made (a thumbnail's: a small neutral image
    /// of the input's aspect ratio when `head`, the input's first bytes, says its dimensions);
    /// `None` if the recipe has none.
    fn placeholder(&self, _head: &[u8], _params: &Params) -> Option<Produced> {
        None
    }
}

/// What a recipe produced: the output's media type, and for [`Recipe::placeholder`] its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The output's media type (`image/webp`, `application/octet-stream`, `text/plain`, …).
    pub content_type: String,
    /// The bytes of a placeholder; empty for an output written to `out`.
    pub bytes: Vec<u8>,
}

impl Produced {
    /// An output written to `out`, of media type `content_type`.
    pub fn written(content_type: &str) -> Produced {
        Produced { content_type: content_type.to_owned(), bytes: Vec::new() }
    }
}

/// A recipe's parameters in canonical form: sorted by name, values as the recipe spells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parameters from `(name, value)` pairs already canonical.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Params {
        Params(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The canonical text: `name=value` pairs sorted by name, joined by `&` (empty for none).
    /// Names and values are the recipe's own canonical spellings: no `&` or `=` in them.
    pub fn canonical(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    }

    /// The canonical text parsed back ([`Params::canonical`]); `None` if it is not one.
    pub fn from_canonical(text: &str) -> Option<Params> {
        if text.is_empty() {
            return Some(Params::default());
        }
        let mut map = BTreeMap::new();
        for pair in text.split('&') {
            let (k, v) = pair.split_once('=')?;
            map.insert(k.to_owned(), v.to_owned());
        }
        Some(Params(map))
    }
}

/// The key of one derivation's parameters: the first 32 hex digits of the SHA-256 of
/// `NAME\nvVERSION\nCANONICAL-PARAMS`. A new version is a new key.
pub fn params_key(recipe: &dyn Recipe, params: &Params) -> String {
    use sha2::Digest as _;
    let text = format!("{}\nv{}\n{}", recipe.name(), recipe.version(), params.canonical());
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
}

/// The bounds a job runs within. A recipe checks them as it goes (the deadline between steps, the
/// sizes before it allocates), so a hostile input is refused rather than allowed to take the
/// machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest input the recipe reads (a thumbnail's input is read whole into memory).
    pub max_input_bytes: u64,
    /// The largest output it may write (a decompression bomb stops here).
    pub max_output_bytes: u64,
    /// The most memory a decoder may allocate for one job.
    pub max_alloc_bytes: u64,
    /// The most pixels a decoded image may have (width × height).
    pub max_pixels: u64,
    /// When the job must have ended.
    pub deadline: Instant,
}

impl Limits {
    /// [`DeriveError::TimedOut`] once the deadline has passed.
    pub fn check_time(&self) -> Result<(), DeriveError> {
        if Instant::now() >= self.deadline { Err(DeriveError::TimedOut) } else { Ok(()) }
    }
}

/// Why a derivation failed or was refused. Which ones say something about the input (and so go
/// to the negative cache): [`DeriveError::is_about_input`].
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    /// No recipe has this name.
    #[error("no recipe named {name:?} (known: {known})")]
    UnknownRecipe {
        /// The name asked for (at most 64 characters of it).
        name: String,
        /// The recipes there are.
        known: String,
    },
    /// A parameter is unknown, repeated, or out of bounds.
    #[error("{0}")]
    BadParam(String),
    /// The input is not something this recipe takes (a text file asked for a thumbnail).
    #[error("the input is not something this recipe takes: {0}")]
    Unsupported(String),
    /// The input is corrupt or truncated.
    #[error("the input could not be read: {0}")]
    Corrupt(String),
    /// The input, or what decoding it would take, is over a limit (an image bomb).
    #[error("refused: {0}")]
    TooLarge(String),
    /// The job ran past its deadline.
    #[error("the job ran past its time limit")]
    TimedOut,
    /// The recipe cannot run on this machine (a tool it needs is missing).
    #[error("recipe not available here: {0}")]
    NotAvailable(String),
    /// Reading the input or writing the output failed (a local fault, not the input's).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl DeriveError {
    /// Whether the failure says something about the input, so that asking again with the same
    /// input would fail again (it is remembered, with backoff, instead of retried every time).
    pub fn is_about_input(&self) -> bool {
        matches!(
            self,
            DeriveError::Unsupported(_) | DeriveError::Corrupt(_) | DeriveError::TooLarge(_) | DeriveError::TimedOut
        )
    }
}

/// Checks that `raw` names only parameters in `known`, each at most once: the value of each, by
/// name.
pub fn known_params<'a>(
    raw: &'a [(String, String)],
    known: &[&str],
) -> Result<BTreeMap<&'a str, &'a str>, DeriveError> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        if !known.contains(&k.as_str()) {
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(DeriveError::BadParam(format!(
                "unknown parameter {:?} (this recipe takes: {known})",
                k.chars().take(64).collect::<String>()
            )));
        }
        if out.insert(k.as_str(), v.as_str()).is_some() {
            return Err(DeriveError::BadParam(format!("parameter {k:?} is given twice")));
        }
    }
    Ok(out)
}

/// Parameter `name`'s `value`, lowercased, if it is one of `allowed`; else a
/// [`DeriveError::BadParam`] listing them.
pub(crate) fn one_of(name: &str, value: &str, allowed: &[&str]) -> Result<String, DeriveError> {
    let value = value.to_ascii_lowercase();
    if allowed.contains(&value.as_str()) {
        return Ok(value);
    }
    let shown: String = value.chars().take(32).collect();
    Err(DeriveError::BadParam(format!("{name}={shown:?} is not one of {}", allowed.join(", "))))
}

/// A writer that refuses to grow past `max` bytes ([`DeriveError::TooLarge`] through an
/// `io::Error` of kind `FileTooLarge`), counting what it wrote.
pub(crate) struct Capped<'a> {
    pub(crate) inner: &'a mut dyn Write,
    pub(crate) written: u64,
    pub(crate) max: u64,
}

impl<'a> Capped<'a> {
    /// `out`, refusing to grow past `max` bytes.
    pub(crate) fn new(out: &'a mut dyn Write, max: u64) -> Capped<'a> {
        Capped { inner: out, written: 0, max }
    }

    /// Writes all of `bytes`: [`DeriveError::TooLarge`] past the cap, else the write's own error.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), DeriveError> {
        self.write_all(bytes).map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => DeriveError::TooLarge(e.to_string()),
            _ => DeriveError::Io(e),
        })
    }
}

/// The parameters of a recipe that takes none: any given is [`DeriveError::BadParam`].
pub(crate) fn no_params(raw: &[(String, String)]) -> Result<Params, DeriveError> {
    known_params(raw, &[])?;
    Ok(Params::default())
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("the output is larger than the limit of {} bytes", self.max),
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_params_round_trip_and_keys_follow_the_version() {
        let p = Params::new([("size", "300".to_owned()), ("fit", "cover".to_owned())]);
        assert_eq!(p.canonical(), "fit=cover&size=300");
        assert_eq!(Params::from_canonical(&p.canonical()), Some(p.clone()));
        assert_eq!(Params::from_canonical(""), Some(Params::default()));
        let a = params_key(&Checksum, &Params::new([("algo", "sha1".to_owned())]));
        let b = params_key(&Checksum, &Params::new([("algo", "blake3".to_owned())]));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let raw =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert!(known_params(&raw(&[("a", "1")]), &["a"]).is_ok());
        assert!(matches!(known_params(&raw(&[("b", "1")]), &["a"]), Err(DeriveError::BadParam(_))));
        assert!(matches!(known_params(&raw(&[("a", "1"), ("a", "2")]), &["a"]), Err(DeriveError::BadParam(_))));
        assert!(matches!(recipe("nope"), Err(DeriveError::UnknownRecipe { .. })));
        assert_eq!(recipe("checksum").unwrap().name(), "checksum");
    }
}
