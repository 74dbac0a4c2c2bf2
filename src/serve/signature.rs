//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the webhook secret, compared
//! in constant time (the `hmac` crate's `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    /// Not `sha256=` and 64 hex digits.
    #[error("the X-Hub-Signature-256 header is not `sha256=` and 64 hex digits")]
    Malformed,
    /// Signed with another secret, or the body was changed.
    #[error("the signature does not match the body and the secret")]
    Mismatch,
}

/// Check `header` (the `X-Hub-Signature-256` value) against `body` and `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value for `body` signed with `secret` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_vector_holds_and_others_fail() {
        // docs.github.com, "Validating webhook deliveries".
        let secret = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(secret, b"Hello, World!", Some(good)), Ok(()));
        assert_eq!(sign(secret, b"Hello, World!"), good);
        assert_eq!(
            verify(b"another secret", b"Hello, World!", Some(good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, b"Hello, World?", Some(good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(secret, b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(
                secret,
                b"x",
                Some("sha1=229f4920493b455398168cd86dc6b366064bdf3f")
            ),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(secret, b"x", Some("sha256=111")),
            Err(SignatureError::Malformed)
        );
    }
}
