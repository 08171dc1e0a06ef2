//! AWS Signature Version 4 for tests that send S3 requests by hand: the cases an S3 client
//! library will not produce (a wrong secret, a body shorter than its length, a `Content-MD5`
//! that does not match) or cannot express (bucket operations). Header signing only, region
//! `us-east-1`, service `s3`.
//!
//! It is a test's signer: no presigned URLs, no chunked signing, and it signs exactly the
//! headers it is given (plus `host`, `x-amz-date` and `x-amz-content-sha256`).

use sha2::{Digest as _, Sha256};

/// The payload hash that leaves the body unsigned.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// An access key and its secret.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// Its secret.
    pub secret_key: &'a str,
}

impl Signer<'_> {
    /// [`sign`] at the current time.
    pub fn headers(
        &self,
        method: &str,
        host: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
        payload_hash: &str,
    ) -> Vec<(String, String)> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.sign(method, host, path_and_query, extra, payload_hash, now)
    }

    /// The headers to send with a request of `method` to `host` + `path_and_query` (already
    /// percent-encoded as it goes on the wire): `extra` (names lowercase) plus `host`,
    /// `x-amz-date`, `x-amz-content-sha256` (the hex SHA-256 of the body, or
    /// [`UNSIGNED_PAYLOAD`]) and `authorization`, signed at `now_unix` seconds.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
        payload_hash: &str,
        now_unix: u64,
    ) -> Vec<(String, String)> {
        sign(method, host, path_and_query, extra, payload_hash, (self.access_key, self.secret_key), now_unix)
    }
}

fn sign(
    method: &str,
    host: &str,
    path_and_query: &str,
    extra: &[(&str, &str)],
    payload_hash: &str,
    (access_key, secret_key): (&str, &str),
    now_unix: u64,
) -> Vec<(String, String)> {
    let amz_date = amz_date(now_unix);
    let date = &amz_date[..8];
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    pairs.sort();
    let canonical_query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers: Vec<(String, String)> =
        extra.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned())).collect();
    headers.push(("host".into(), host.into()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    headers.push(("x-amz-content-sha256".into(), payload_hash.into()));
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
    let mut key = hmac(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
    ));
    headers
}

/// HMAC-SHA256 (also what a test signing aws-chunked bodies by hand needs).
pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC).
fn amz_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_the_hmac_match_known_values() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The example of AWS's documentation ("GET Object" with a range).
    #[test]
    fn the_documented_example_signs_alike() {
        let signer =
            Signer { access_key: "AKIAIOSFODNN7EXAMPLE", secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
        let headers = signer.sign(
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            &[("range", "bytes=0-9")],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            1_369_353_600,
        );
        let auth = headers.iter().find(|(k, _)| k == "authorization").unwrap();
        assert!(
            auth.1.ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
            "{}",
            auth.1
        );
    }
}
