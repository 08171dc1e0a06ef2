//! The peer of the shared-tier benchmark: plain OpenDAL reads of one object, as any program would
//! do them without tiercache (no verification, bytes discarded).
//!
//!     opendal_read URL PATH REPS              # whole reads, 1 MiB chunks, 4 in flight (as the
//!                                             # shared tier reads); prints `bytes seconds` each
//!     opendal_read URL PATH REPS RANGE_BYTES  # one range of RANGE_BYTES at a random offset per
//!                                             # rep, each on a new Operator (new connection, as a
//!                                             # fresh node); prints `seconds` each

use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: URL PATH REPS [RANGE_BYTES]";
    let mut args = std::env::args().skip(1);
    let (url, path) = (args.next().ok_or(usage)?, args.next().ok_or(usage)?);
    let reps: usize = args.next().ok_or(usage)?.parse()?;
    let range: Option<u64> = args.next().map(|r| r.parse()).transpose()?;
    opendal::install_default();
    let size = opendal::Operator::from_uri(url.as_str())?.stat(&path).await?.content_length();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..reps {
        let op = opendal::Operator::from_uri(url.as_str())?;
        let t0 = std::time::Instant::now();
        match range {
            Some(len) => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let start = x % (size - len);
                let got = op.read_with(&path).range(start..start + len).await?;
                assert_eq!(got.len() as u64, len);
                println!("{:.6}", t0.elapsed().as_secs_f64());
            }
            None => {
                let reader = op.reader_with(&path).chunk(1 << 20).concurrent(4).await?;
                let mut stream = reader.into_bytes_stream(..).await?;
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    n += chunk?.len() as u64;
                }
                println!("{n} {:.6}", t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(())
}
