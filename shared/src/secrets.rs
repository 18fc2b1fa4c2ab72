//! The master key file and encryption of secrets at rest (XChaCha20-Poly1305).
//!
//! The key file holds 32 random bytes as hex. The first command that needs it creates it
//! with mode 0600; a key file readable by group or others is refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20::cipher::consts::U10;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Problems with the master key or with a sealed secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The operating system's reason is part of the message, not a `source`: shown as a
    /// chain (`{:#}`), it would be repeated.
    #[error("master key file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("master key file {path} has mode {mode:04o}; it must be readable by its owner only: chmod 600 {path}")]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("master key file {path} does not hold a 64-digit hex key; restore it from backup (secrets sealed under another key cannot be read)")]
    Malformed { path: PathBuf },
    #[error("a stored secret could not be decrypted: wrong master key or damaged data")]
    Decrypt,
}

/// The key that seals TOTP seeds and derives the recovery-code pepper.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Read the key file, or create it (mode 0600, parent directories 0700) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsError> {
        let io = |error| SecretsError::Io {
            path: path.to_path_buf(),
            error,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretsError::LoosePermissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
                let mut key = Zeroizing::new([0u8; 32]);
                let decoded = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(text.trim().as_bytes())
                    .map_err(|_| SecretsError::Malformed {
                        path: path.to_path_buf(),
                    })?;
                let decoded = Zeroizing::new(decoded);
                if decoded.len() != 32 {
                    return Err(SecretsError::Malformed {
                        path: path.to_path_buf(),
                    });
                }
                key.copy_from_slice(&decoded);
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    if !dir.as_os_str().is_empty() && !dir.exists() {
                        fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(dir)
                            .map_err(io)?;
                    }
                }
                let mut key = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(key.as_mut());
                let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(key.as_ref()));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(hex.as_bytes()).map_err(io)?;
                file.write_all(b"\n").map_err(io)?;
                file.sync_all().map_err(io)?;
                // The caller says so once, at warn, with what to do (back it up).
                tracing::debug!(path = %path.display(), "created a new master key file");
                Ok(Self { key })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
        }
    }

    /// Encrypt `plaintext`; `context` binds the ciphertext to its purpose (AEAD associated data).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let (key, iv) = xchacha(&self.key, &nonce);
        // Encrypted in place: the copy of the plaintext becomes the ciphertext.
        let mut body = plaintext.to_vec();
        // Sealing in memory fails only for a message over ChaCha20's 256 GiB.
        if key
            .seal_in_place_append_tag(iv, Aad::from(context), &mut body)
            .is_err()
        {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Decrypt what [`seal`](Self::seal) made with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEAL_VERSION {
            return Err(SecretsError::Decrypt);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let (key, iv) = xchacha(&self.key, &nonce);
        let mut body = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let len = key
            .open_in_place(iv, Aad::from(context), &mut body)
            .map_err(|_| SecretsError::Decrypt)?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// A sub-key for one purpose (HMAC-SHA256 of the label).
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(label.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }
}

const TAG_LEN: usize = 16;

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) as ChaCha20-Poly1305 (RFC 8439, ring's
/// assembly) under the HChaCha20 sub-key of the nonce's first 16 bytes, with its last 8
/// bytes as the nonce. About a fifth of the time of the `chacha20poly1305` crate for a
/// TOTP seed (measured here: 0.5-1.1 us against 3.6-4.5 us), and a code-only login opens
/// one on the thread that decides every such login.
///
/// The sub-key is wiped here; ring keeps its own copy in the returned key, unwiped (ring
/// wipes no key material), for as long as one seal or open takes.
fn xchacha(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let mut derived = chacha20::hchacha::<U10>(key.into(), (&nonce[..16]).into());
    let mut sub = Zeroizing::new([0u8; 32]);
    sub.copy_from_slice(&derived);
    derived.as_mut_slice().zeroize();
    let key = UnboundKey::new(&CHACHA20_POLY1305, sub.as_ref())
        .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"));
    let mut iv = [0u8; 12];
    iv[4..].copy_from_slice(&nonce[16..]);
    (LessSafeKey::new(key), Nonce::assume_unique_for_key(iv))
}

/// HMAC accepts keys of any length, so construction never fails.
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = MasterKey::load_or_create(&path).unwrap();
        let sealed = k1.seal(b"ctx", b"seed");
        assert_eq!(k2.open(b"ctx", &sealed).unwrap().as_slice(), b"seed");
    }

    #[test]
    fn an_unreadable_key_file_names_the_os_reason_once() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails with an OS error.
        let path = dir.path().join("master.key");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let e = MasterKey::load_or_create(&path).unwrap_err();
        // As `error: {e:#}` shows it: the message, then every source.
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert_eq!(chain.matches("os error").count(), 1, "{chain}");
    }

    #[test]
    fn loose_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, "not hex").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(SecretsError::Malformed { .. })
        ));
    }

    #[test]
    fn sealed_secret_needs_same_key_and_context() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        let sealed = a.seal(b"factor:1", b"seed");
        assert!(a.open(b"factor:2", &sealed).is_err());
        assert!(b.open(b"factor:1", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(a.open(b"factor:1", &tampered).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1: the AEAD's own test vector.
    #[test]
    fn sealing_is_xchacha20_poly1305_as_its_specification_gives_it() {
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let expected = hex(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e",
            "c0875924c1c7987947deafd8780acf49"
        ));
        let mut sealed = vec![SEAL_VERSION];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&expected);
        let m = MasterKey::from_bytes(key);
        assert_eq!(m.open(&aad, &sealed).unwrap().as_slice(), plaintext);
        // What seal makes (with its own random nonce) is the same construction: the
        // chacha20poly1305 crate opens it, and what the crate seals opens here.
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let crate_cipher = XChaCha20Poly1305::new(&key.into());
        for len in [0, 1, 20, 64, 65, 300] {
            let secret: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ours = m.seal(b"factor:9", &secret);
            let opened = crate_cipher
                .decrypt(
                    XNonce::from_slice(&ours[1..25]),
                    Payload {
                        msg: &ours[25..],
                        aad: b"factor:9",
                    },
                )
                .unwrap();
            assert_eq!(opened, secret);
            let theirs = crate_cipher
                .encrypt(
                    XNonce::from_slice(&ours[1..25]),
                    Payload {
                        msg: &secret,
                        aad: b"factor:9",
                    },
                )
                .unwrap();
            assert_eq!(theirs[..], ours[25..]);
            assert_eq!(m.open(b"factor:9", &ours).unwrap().as_slice(), secret);
        }
    }
}
