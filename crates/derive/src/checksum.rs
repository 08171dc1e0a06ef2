//! `checksum`: a digest of the input in another algorithm than the cache's own SHA-256 (SHA-1,
//! SHA-512, CRC32C, BLAKE3), as lowercase hex text. Cheap; it proves the framework on a recipe
//! that is not about images.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::{DeriveError, Limits, Params, Produced, Recipe, known_params, one_of};

/// The `checksum` recipe. Parameter: `algo` = `sha1` | `sha512` | `crc32c` | `blake3` (required).
#[derive(Debug, Clone, Copy)]
pub struct Checksum;

const ALGOS: [&str; 4] = ["sha1", "sha512", "crc32c", "blake3"];

impl Recipe for Checksum {
    fn name(&self) -> &'static str {
        "checksum"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self, raw: &[(String, String)], _accept: Option<&str>) -> Result<Params, DeriveError> {
        let given = known_params(raw, &["algo"])?;
        let algo = given
            .get("algo")
            .ok_or_else(|| DeriveError::BadParam(format!("checksum needs algo= (one of {})", ALGOS.join(", "))))?;
        Ok(Params::new([("algo", one_of("algo", algo, &ALGOS)?)]))
    }

    fn run(
        &self,
        input: &Path,
        _input_len: u64,
        params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError> {
        let mut file = File::open(input)?;
        let mut hasher: Box<dyn Hasher> = match params.get("algo") {
            Some("sha1") => Box::new(Rust(<sha1::Sha1 as sha1::Digest>::new())),
            Some("sha512") => Box::new(Rust(<sha2::Sha512 as sha2::Digest>::new())),
            Some("crc32c") => Box::new(Crc(0)),
            Some("blake3") => Box::new(Blake(Box::new(blake3::Hasher::new()))),
            other => return Err(DeriveError::BadParam(format!("checksum: algo {other:?} is not canonical"))),
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            limits.check_time()?;
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        out.write_all(hasher.hex().as_bytes())?;
        Ok(Produced::written("text/plain; charset=utf-8"))
    }
}

trait Hasher {
    fn update(&mut self, bytes: &[u8]);
    fn hex(self: Box<Self>) -> String;
}

struct Rust<D>(D);

impl<D: sha2::Digest> Hasher for Rust<D> {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
    fn hex(self: Box<Self>) -> String {
        hex::encode(self.0.finalize())
    }
}

struct Crc(u32);

impl Hasher for Crc {
    fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }
    fn hex(self: Box<Self>) -> String {
        format!("{:08x}", self.0)
    }
}

struct Blake(Box<blake3::Hasher>);

impl Hasher for Blake {
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn hex(self: Box<Self>) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_input_bytes: 1 << 30,
            max_output_bytes: 1 << 30,
            max_alloc_bytes: 1 << 30,
            max_pixels: 1 << 30,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    fn run(algo: &str, bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, bytes).unwrap();
        let params = Checksum.params(&[("algo".into(), algo.into())], None).unwrap();
        let mut out = Vec::new();
        let produced = Checksum.run(&path, bytes.len() as u64, &params, &limits(), &mut out).unwrap();
        assert!(produced.content_type.starts_with("text/plain"));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_answers() {
        // Published test vectors for "abc".
        assert_eq!(run("sha1", b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(run("SHA512", b"abc").starts_with("ddaf35a193617aba"));
        assert_eq!(run("crc32c", b"123456789"), "e3069283");
        assert_eq!(run("blake3", b""), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for raw in [vec![], vec![("algo", "md4")], vec![("algo", "sha1"), ("x", "1")]] {
            let raw: Vec<(String, String)> = raw.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
            assert!(matches!(Checksum.params(&raw, None), Err(DeriveError::BadParam(_))), "{raw:?}");
        }
    }
}
