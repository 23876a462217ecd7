//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA1)
//! and the recovery codes that stand in for a lost authenticator.
//!
//! Verification takes the time as a parameter, so it is tested against the
//! RFCs' vectors; it answers which time step matched, so the caller can
//! refuse a step already used (replay protection).

use std::fmt;

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api_key::hex;
use super::tokens::KeyEncryptionKey;
use crate::model::UserId;
use crate::png;

/// RFC 4648 base32 without padding, the encoding authenticator apps expect.
pub fn base32_encode(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// A shared TOTP key. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// 160 bits, the HMAC-SHA1 block-free key size RFC 4226 recommends.
    pub fn generate() -> Self {
        Self(rand::random::<[u8; 20]>().to_vec())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }
}

/// RFC 4226 HOTP: HMAC-SHA1 of the counter, dynamically truncated.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// TOTP parameters: SHA1, 6 digits, 30-second steps, one step either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totp {
    pub digits: u32,
    pub step_seconds: u64,
    pub skew_steps: u64,
}

impl Default for Totp {
    fn default() -> Self {
        Self {
            digits: 6,
            step_seconds: 30,
            skew_steps: 1,
        }
    }
}

impl Totp {
    pub fn step_at(&self, unix_seconds: u64) -> u64 {
        unix_seconds / self.step_seconds
    }

    pub fn code_at(&self, secret: &TotpSecret, unix_seconds: u64) -> String {
        let code = hotp(&secret.0, self.step_at(unix_seconds), self.digits);
        format!("{code:0width$}", width = self.digits as usize)
    }

    /// The time step whose code `code` is, within the allowed skew; `None`
    /// when it matches none. Every candidate is computed and compared in
    /// constant time, so the time taken says nothing about which matched.
    pub fn verify(&self, secret: &TotpSecret, code: &str, unix_seconds: u64) -> Option<u64> {
        let code = code.trim();
        if code.len() != self.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = self.step_at(unix_seconds);
        let mut matched = None;
        for step in now.saturating_sub(self.skew_steps)..=now + self.skew_steps {
            let expected = format!(
                "{:0width$}",
                hotp(&secret.0, step, self.digits),
                width = self.digits as usize
            );
            if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// The `otpauth://` URI an authenticator app enrols from.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &TotpSecret, totp: &Totp) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
        percent_encode(issuer),
        percent_encode(account),
        secret.to_base32(),
        percent_encode(issuer),
        totp.digits,
        totp.step_seconds
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A QR code of `text` as a PNG data URL, 6 pixels per module with the
/// 4-module quiet zone scanners need.
pub fn qr_png_data_url(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    let modules = code.width();
    let colors = code.to_colors();
    const SCALE: usize = 6;
    const QUIET: usize = 4;
    let side = (modules + 2 * QUIET) * SCALE;
    let dark = |x: usize, y: usize| {
        let (mx, my) = (x / SCALE, y / SCALE);
        (QUIET..QUIET + modules).contains(&mx)
            && (QUIET..QUIET + modules).contains(&my)
            && colors[(my - QUIET) * modules + (mx - QUIET)] == qrcode::Color::Dark
    };
    let png = png::bilevel(side as u32, side as u32, dark);
    Ok(png::data_url(&png))
}

pub const RECOVERY_CODE_COUNT: usize = 10;

/// Ten single-use codes of 50 random bits each, as `xxxxx-xxxxx`.
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let raw = base32_encode(&rand::random::<[u8; 7]>()).to_lowercase();
            format!("{}-{}", &raw[..5], &raw[5..10])
        })
        .collect()
}

/// The code as compared: case and dashes don't matter.
fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// How a recovery code is stored: keyed (an HMAC under a key derived from
/// the key-encryption key, which is not in the database) and bound to its
/// user. 50 random bits are too few against a sweep of a database copy when
/// the digest is a bare hash; with the key elsewhere a copy reveals nothing.
pub fn recovery_code_digest(kek: &KeyEncryptionKey, user: UserId, code: &str) -> String {
    format!(
        "{KEYED_PREFIX}{}",
        kek.keyed_digest(
            &format!("recovery-code:{}", user.0),
            normalise_recovery_code(code).as_bytes()
        )
    )
}

/// Marks a keyed digest, telling it from the bare SHA-256 of codes made
/// before (`legacy_recovery_code_digest`).
const KEYED_PREFIX: &str = "hmac:";

/// The bare SHA-256 recovery codes were stored as before keyed digests:
/// still accepted, once each, until their owner enrols again.
pub fn legacy_recovery_code_digest(code: &str) -> String {
    hex(&Sha256::digest(normalise_recovery_code(code).as_bytes()))
}

/// Whether `code` looks like a recovery code rather than a TOTP code.
pub fn is_recovery_code(code: &str) -> bool {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).count() == 10
        && code.chars().any(|c| c.is_ascii_alphabetic() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4226_hotp_vectors() {
        let key = b"12345678901234567890";
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.into_iter().enumerate() {
            assert_eq!(hotp(key, counter as u64, 6), want, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_sha1_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let totp = Totp {
            digits: 8,
            ..Totp::default()
        };
        for (time, want) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(totp.code_at(&secret, time), want, "time {time}");
            assert_eq!(totp.verify(&secret, want, time), Some(time / 30));
        }
    }

    #[test]
    fn one_step_of_skew_either_side_and_no_more() {
        let secret = TotpSecret::generate();
        let totp = Totp::default();
        let t = 1_700_000_000;
        let code = totp.code_at(&secret, t);
        assert_eq!(totp.verify(&secret, &code, t), Some(t / 30));
        assert_eq!(totp.verify(&secret, &code, t + 30), Some(t / 30));
        assert_eq!(totp.verify(&secret, &code, t - 30), Some(t / 30));
        assert_eq!(totp.verify(&secret, &code, t + 90), None);
        assert_eq!(totp.verify(&secret, "12345", t), None);
        assert_eq!(totp.verify(&secret, "abcdef", t), None);
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        let secret = TotpSecret::generate();
        assert_eq!(
            data_encoding::BASE32_NOPAD
                .decode(secret.to_base32().as_bytes())
                .unwrap(),
            secret.as_bytes()
        );
    }

    #[test]
    fn the_uri_names_issuer_and_account() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let uri = otpauth_uri("memberd", "alice@example.org", &secret, &Totp::default());
        assert_eq!(
            uri,
            "otpauth://totp/memberd:alice%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=memberd&algorithm=SHA1&digits=6&period=30"
        );
        assert!(
            qr_png_data_url(&uri)
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
    }

    /// The QR code scans: zbar (what many scanners build on) reads back the
    /// URI. Needs `zbarimg` (Debian's zbar-tools; `.ci/run` installs it).
    #[test]
    fn the_qr_code_scans() {
        use base64::Engine as _;
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if std::process::Command::new("zbarimg")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(!in_ci, "zbarimg is required under CI");
            eprintln!("skipping: zbarimg is not installed");
            return;
        }
        let secret = TotpSecret::generate();
        let uri = otpauth_uri("memberd", "alice", &secret, &Totp::default());
        let url = qr_png_data_url(&uri).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(url.trim_start_matches("data:image/png;base64,"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qr.png");
        std::fs::write(&path, png).unwrap();
        let out = std::process::Command::new("zbarimg")
            .args(["--quiet", "--raw"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uri);
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        let (kek, _) = KeyEncryptionKey::generate();
        let u1 = UserId(uuid::Uuid::new_v4());
        for code in &codes {
            assert!(is_recovery_code(code), "{code}");
            assert_eq!(
                recovery_code_digest(&kek, u1, code),
                recovery_code_digest(&kek, u1, &code.to_uppercase().replace('-', ""))
            );
        }
        assert!(!is_recovery_code("123456"));
    }

    // Regression (issue 13, finding 14): codes were stored as a bare SHA-256,
    // which one sweep of 2^50 reverses from a copy of the database.
    #[test]
    fn recovery_code_digests_are_keyed_and_per_user() {
        let code = &generate_recovery_codes()[0];
        let (u1, u2) = (UserId(uuid::Uuid::new_v4()), UserId(uuid::Uuid::new_v4()));
        let (kek, _) = KeyEncryptionKey::generate();
        let (other_kek, _) = KeyEncryptionKey::generate();
        let digest = recovery_code_digest(&kek, u1, code);
        assert!(digest.starts_with("hmac:"));
        assert!(!digest.contains(&legacy_recovery_code_digest(code)));
        assert_ne!(
            digest,
            recovery_code_digest(&other_kek, u1, code),
            "needs the key"
        );
        assert_ne!(
            digest,
            recovery_code_digest(&kek, u2, code),
            "bound to its user"
        );
    }
}
