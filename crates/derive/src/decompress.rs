//! `decompress`: a gzip or zstd stream (a container image layer, say) to its raw bytes, streamed
//! from the input file to the output, never whole in memory. Multi-member gzip and multi-frame
//! zstd are read to their end; the output is bounded ([`Limits::max_output_bytes`]), so a
//! decompression bomb ends as [`DeriveError::TooLarge`].

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::{Capped, DeriveError, Limits, Params, Produced, Recipe, known_params, one_of};

/// The `decompress` recipe. Parameter: `format` = `auto` (default: by the input's magic bytes) |
/// `gzip` | `zstd`.
#[derive(Debug, Clone, Copy)]
pub struct Decompress;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Recipe for Decompress {
    fn name(&self) -> &'static str {
        "decompress"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self, raw: &[(String, String)], _accept: Option<&str>) -> Result<Params, DeriveError> {
        let given = known_params(raw, &["format"])?;
        let format = one_of("format", given.get("format").copied().unwrap_or("auto"), &["auto", "gzip", "zstd"])?;
        Ok(Params::new([("format", format)]))
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
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic)?;
        let found = if magic[..n].starts_with(&GZIP_MAGIC) {
            Some("gzip")
        } else if magic[..n] == ZSTD_MAGIC {
            Some("zstd")
        } else {
            None
        };
        let format = match (params.get("format"), found) {
            (Some("auto") | None, Some(f)) => f,
            (Some("auto") | None, None) => {
                return Err(DeriveError::Unsupported("neither gzip nor zstd (by its first bytes)".into()));
            }
            (Some(asked), Some(f)) if asked == f => f,
            (Some(asked), _) => {
                return Err(DeriveError::Unsupported(format!("not a {asked} stream (by its first bytes)")));
            }
        };
        drop(file);
        let file = BufReader::with_capacity(1 << 20, File::open(input)?);
        let mut reader: Box<dyn Read> = match format {
            "gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
            _ => Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(DeriveError::Io)?),
        };
        let mut capped = Capped::new(out, limits.max_output_bytes);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            limits.check_time()?;
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DeriveError::Corrupt(format!("{format}: {e}"))),
            };
            capped.put(&buf[..n])?;
        }
        Ok(Produced::written("application/octet-stream"))
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn limits(max_output_bytes: u64) -> Limits {
        Limits {
            max_input_bytes: 1 << 30,
            max_output_bytes,
            max_alloc_bytes: 1 << 30,
            max_pixels: 1 << 30,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    fn run(bytes: &[u8], format: &str, max: u64) -> Result<Vec<u8>, DeriveError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, bytes).unwrap();
        let params = Decompress.params(&[("format".into(), format.into())], None).unwrap();
        let mut out = Vec::new();
        Decompress.run(&path, bytes.len() as u64, &params, &limits(max), &mut out)?;
        Ok(out)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_zstd_come_back_whole_members_and_frames_included() {
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut two = gzip(&data[..1000]);
        two.extend(gzip(&data[1000..]));
        assert_eq!(run(&two, "auto", u64::MAX).unwrap(), data);
        assert_eq!(run(&gzip(&data), "gzip", u64::MAX).unwrap(), data);
        let mut z = zstd::encode_all(&data[..5000], 3).unwrap();
        z.extend(zstd::encode_all(&data[5000..], 3).unwrap());
        assert_eq!(run(&z, "auto", u64::MAX).unwrap(), data);
    }

    #[test]
    fn bombs_truncations_and_other_formats_are_refused() {
        let zeros = gzip(&vec![0u8; 10 << 20]);
        assert!(matches!(run(&zeros, "auto", 1 << 20), Err(DeriveError::TooLarge(_))));
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let g = gzip(&data);
        assert!(matches!(run(&g[..g.len() / 2], "auto", u64::MAX), Err(DeriveError::Corrupt(_))));
        assert!(matches!(run(b"plain text", "auto", u64::MAX), Err(DeriveError::Unsupported(_))));
        assert!(matches!(run(&g, "zstd", u64::MAX), Err(DeriveError::Unsupported(_))));
        assert!(matches!(run(b"", "auto", u64::MAX), Err(DeriveError::Unsupported(_))));
        assert!(Decompress.params(&[("format".into(), "xz".into())], None).is_err());
    }
}
