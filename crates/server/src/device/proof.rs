//! Proof of possession: a device registered with a key signs the challenge nonce's UTF-8 bytes.
//! Ed25519 signatures are the 64 bytes of RFC 8032; P-256 signatures are ECDSA with SHA-256,
//! as the 64-byte `r || s` of JOSE/WebCrypto or as DER (what OpenSSL and most TPM stacks give).

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A device's registered public key.
#[derive(Debug, Clone)]
pub enum DeviceKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

fn b64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

impl DeviceKey {
    /// The key of a public JWK as `POST /v1/devices` accepted it.
    pub fn from_jwk(jwk: &serde_json::Value) -> Option<DeviceKey> {
        let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
        match (field("kty"), field("crv")) {
            (Some("OKP"), Some("Ed25519")) => {
                let x: [u8; 32] = b64url(field("x")?)?.try_into().ok()?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .ok()
                    .map(DeviceKey::Ed25519)
            }
            (Some("EC"), Some("P-256")) => {
                let x: [u8; 32] = b64url(field("x")?)?.try_into().ok()?;
                let y: [u8; 32] = b64url(field("y")?)?.try_into().ok()?;
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .ok()
                    .map(DeviceKey::P256)
            }
            _ => None,
        }
    }

    /// Whether `signature` (base64url) signs `message` with this key.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        use p256::ecdsa::signature::Verifier;
        let Some(bytes) = b64url(signature) else {
            return false;
        };
        match self {
            DeviceKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(&bytes)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            DeviceKey::P256(key) => {
                let sig = if bytes.len() == 64 {
                    p256::ecdsa::Signature::from_slice(&bytes)
                } else {
                    p256::ecdsa::Signature::from_der(&bytes)
                };
                sig.is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}

/// What a nonce is bound to: the identity's strong keys, so that a nonce asked for one machine
/// cannot serve another.
pub fn subject(claim_keys: &[String]) -> String {
    let mut keys: Vec<&str> = claim_keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    hex::encode(Sha256::digest(keys.join("\n").as_bytes()))
}

/// A fresh nonce: 32 random bytes, base64url.
pub fn nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ed25519_and_p256_in_both_forms() {
        use p256::ecdsa::signature::Signer;
        let ed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(ed.verifying_key().as_bytes())});
        let key = DeviceKey::from_jwk(&jwk).unwrap();
        let sig = URL_SAFE_NO_PAD.encode(ed.sign(b"n1").to_bytes());
        assert!(key.verify(b"n1", &sig));
        assert!(!key.verify(b"n2", &sig));

        let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = ec.verifying_key().to_encoded_point(false);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())});
        let key = DeviceKey::from_jwk(&jwk).unwrap();
        let sig: p256::ecdsa::Signature = ec.sign(b"n1");
        assert!(key.verify(b"n1", &URL_SAFE_NO_PAD.encode(sig.to_bytes())));
        assert!(key.verify(b"n1", &URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes())));
        assert!(!key.verify(b"n2", &URL_SAFE_NO_PAD.encode(sig.to_bytes())));
        assert!(!key.verify(b"n1", "not base64 !"));
    }
}
