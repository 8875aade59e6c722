//! Object identifiers and the mapping from CMS algorithm identifiers to `aws-lc-rs` primitives.

use der::asn1::ObjectIdentifier as Oid;

macro_rules! oids {
    ($($name:ident = $value:literal;)*) => {
        $(
            #[doc = concat!("OID ", $value, ".")]
            pub const $name: Oid = Oid::new_unwrap($value);
        )*
    };
}

oids! {
    ID_DATA = "1.2.840.113549.1.7.1";
    ID_SIGNED_DATA = "1.2.840.113549.1.7.2";
    ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3";
    ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23";
    ID_CONTENT_TYPE = "1.2.840.113549.1.9.3";
    ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4";
    ID_SIGNING_TIME = "1.2.840.113549.1.9.5";
    ID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15";
    ID_ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11";
    ID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12";
    ID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47";
    ID_EMAIL_ADDRESS = "1.2.840.113549.1.9.1";
    RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
    MD5_WITH_RSA = "1.2.840.113549.1.1.4";
    SHA1_WITH_RSA = "1.2.840.113549.1.1.5";
    ID_RSAES_OAEP = "1.2.840.113549.1.1.7";
    ID_MGF1 = "1.2.840.113549.1.1.8";
    ID_RSASSA_PSS = "1.2.840.113549.1.1.10";
    SHA256_WITH_RSA = "1.2.840.113549.1.1.11";
    SHA384_WITH_RSA = "1.2.840.113549.1.1.12";
    SHA512_WITH_RSA = "1.2.840.113549.1.1.13";
    ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1";
    ECDSA_WITH_SHA1 = "1.2.840.10045.4.1";
    ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
    ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3";
    ECDSA_WITH_SHA512 = "1.2.840.10045.4.3.4";
    SECP256R1 = "1.2.840.10045.3.1.7";
    SECP384R1 = "1.3.132.0.34";
    ID_ED25519 = "1.3.101.112";
    ID_DSA = "1.2.840.10040.4.1";
    DSA_WITH_SHA1 = "1.2.840.10040.4.3";
    ID_MD5 = "1.2.840.113549.2.5";
    ID_SHA1 = "1.3.14.3.2.26";
    ID_SHA256 = "2.16.840.1.101.3.4.2.1";
    ID_SHA384 = "2.16.840.1.101.3.4.2.2";
    ID_SHA512 = "2.16.840.1.101.3.4.2.3";
    AES128_CBC = "2.16.840.1.101.3.4.1.2";
    AES192_CBC = "2.16.840.1.101.3.4.1.22";
    AES256_CBC = "2.16.840.1.101.3.4.1.42";
    AES128_GCM = "2.16.840.1.101.3.4.1.6";
    AES192_GCM = "2.16.840.1.101.3.4.1.26";
    AES256_GCM = "2.16.840.1.101.3.4.1.46";
    DES_EDE3_CBC = "1.2.840.113549.3.7";
    RC2_CBC = "1.2.840.113549.3.2";
    DES_CBC = "1.3.14.3.2.7";
    ID_SAN = "2.5.29.17";
    DH_SHA1_KDF = "1.3.133.16.840.63.0.2";
    DH_SHA224_KDF = "1.3.132.1.11.0";
    DH_SHA256_KDF = "1.3.132.1.11.1";
    DH_SHA384_KDF = "1.3.132.1.11.2";
    DH_SHA512_KDF = "1.3.132.1.11.3";
    AES128_WRAP = "2.16.840.1.101.3.4.1.5";
    AES192_WRAP = "2.16.840.1.101.3.4.1.25";
    AES256_WRAP = "2.16.840.1.101.3.4.1.45";
    ID_X25519 = "1.3.101.110";
}

/// A human name for an OID, for error messages.
pub fn name(oid: &Oid) -> String {
    let known: &[(Oid, &str)] = &[
        (RC2_CBC, "RC2-CBC"),
        (DES_CBC, "DES-CBC"),
        (DES_EDE3_CBC, "3DES-CBC"),
        (ID_DSA, "DSA"),
        (DSA_WITH_SHA1, "DSA-with-SHA1"),
        (ID_MD5, "MD5"),
        (MD5_WITH_RSA, "MD5-with-RSA"),
        (ID_SHA1, "SHA-1"),
        (ID_SHA256, "SHA-256"),
        (ID_SHA384, "SHA-384"),
        (ID_SHA512, "SHA-512"),
        (AES128_CBC, "AES-128-CBC"),
        (AES192_CBC, "AES-192-CBC"),
        (AES256_CBC, "AES-256-CBC"),
        (AES128_GCM, "AES-128-GCM"),
        (AES192_GCM, "AES-192-GCM"),
        (AES256_GCM, "AES-256-GCM"),
        (RSA_ENCRYPTION, "RSA"),
        (ID_RSAES_OAEP, "RSA-OAEP"),
        (ID_RSASSA_PSS, "RSA-PSS"),
        (ID_EC_PUBLIC_KEY, "EC"),
        (ID_ED25519, "Ed25519"),
        (SECP256R1, "P-256"),
        (ID_X25519, "X25519"),
        (DH_SHA1_KDF, "ECDH-SHA1-KDF"),
        (SECP384R1, "P-384"),
        (ID_DATA, "data"),
        (ID_SIGNED_DATA, "signed-data"),
        (ID_ENVELOPED_DATA, "enveloped-data"),
        (ID_AUTH_ENVELOPED_DATA, "authEnveloped-data"),
    ];
    known
        .iter()
        .find(|(o, _)| o == oid)
        .map_or_else(|| oid.to_string(), |(_, n)| format!("{n} ({oid})"))
}

/// A message digest algorithm usable in signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// SHA-1: verify only, reported as weak.
    Sha1,
    /// SHA-256, the default.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// The algorithm's OID.
    pub fn oid(self) -> Oid {
        match self {
            Digest::Sha1 => ID_SHA1,
            Digest::Sha256 => ID_SHA256,
            Digest::Sha384 => ID_SHA384,
            Digest::Sha512 => ID_SHA512,
        }
    }

    /// Looks a digest up by OID; MD5 and unknown digests are refused with a clear error.
    pub fn from_oid(oid: &Oid) -> Result<Self, crate::Error> {
        Ok(match *oid {
            ID_SHA1 => Digest::Sha1,
            ID_SHA256 => Digest::Sha256,
            ID_SHA384 => Digest::Sha384,
            ID_SHA512 => Digest::Sha512,
            _ => {
                return Err(crate::Error::Unsupported(format!(
                    "digest algorithm {}",
                    name(oid)
                )))
            }
        })
    }

    /// The `micalg` parameter value of RFC 8551 §3.5.3.
    pub fn micalg(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha-1",
            Digest::Sha256 => "sha-256",
            Digest::Sha384 => "sha-384",
            Digest::Sha512 => "sha-512",
        }
    }

    /// The `aws-lc-rs` digest algorithm.
    pub fn algorithm(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            Digest::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &aws_lc_rs::digest::SHA256,
            Digest::Sha384 => &aws_lc_rs::digest::SHA384,
            Digest::Sha512 => &aws_lc_rs::digest::SHA512,
        }
    }

    /// Hashes data with this algorithm.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(self.algorithm(), data)
            .as_ref()
            .to_vec()
    }
}

/// The symmetric cipher that protects the content of an encrypted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    /// AES-128-GCM (AuthEnvelopedData).
    Aes128Gcm,
    /// AES-192-GCM (AuthEnvelopedData; decrypt only).
    Aes192Gcm,
    /// AES-256-GCM (AuthEnvelopedData), the default where recipients support it.
    Aes256Gcm,
    /// AES-128-CBC (EnvelopedData).
    Aes128Cbc,
    /// AES-192-CBC (EnvelopedData; decrypt only).
    Aes192Cbc,
    /// AES-256-CBC (EnvelopedData), for Outlook and other clients without GCM.
    Aes256Cbc,
    /// Triple-DES CBC: decrypt only, reported as weak.
    Des3Cbc,
}

impl ContentCipher {
    /// The algorithm's OID.
    pub fn oid(self) -> Oid {
        match self {
            ContentCipher::Aes128Gcm => AES128_GCM,
            ContentCipher::Aes192Gcm => AES192_GCM,
            ContentCipher::Aes256Gcm => AES256_GCM,
            ContentCipher::Aes128Cbc => AES128_CBC,
            ContentCipher::Aes192Cbc => AES192_CBC,
            ContentCipher::Aes256Cbc => AES256_CBC,
            ContentCipher::Des3Cbc => DES_EDE3_CBC,
        }
    }

    /// Looks a content cipher up by OID; RC2, DES and unknown ciphers are refused.
    pub fn from_oid(oid: &Oid) -> Result<Self, crate::Error> {
        Ok(match *oid {
            AES128_GCM => ContentCipher::Aes128Gcm,
            AES192_GCM => ContentCipher::Aes192Gcm,
            AES256_GCM => ContentCipher::Aes256Gcm,
            AES128_CBC => ContentCipher::Aes128Cbc,
            AES192_CBC => ContentCipher::Aes192Cbc,
            AES256_CBC => ContentCipher::Aes256Cbc,
            DES_EDE3_CBC => ContentCipher::Des3Cbc,
            _ => {
                return Err(crate::Error::Unsupported(format!(
                    "content encryption algorithm {} (envelopd reads AES and 3DES only)",
                    name(oid)
                )))
            }
        })
    }

    /// Parses a command-line name such as `aes256-gcm`.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "aes128-gcm" => ContentCipher::Aes128Gcm,
            "aes256-gcm" => ContentCipher::Aes256Gcm,
            "aes128-cbc" => ContentCipher::Aes128Cbc,
            "aes256-cbc" => ContentCipher::Aes256Cbc,
            _ => return None,
        })
    }

    /// The key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            ContentCipher::Aes128Gcm | ContentCipher::Aes128Cbc => 16,
            ContentCipher::Aes192Gcm | ContentCipher::Aes192Cbc | ContentCipher::Des3Cbc => 24,
            ContentCipher::Aes256Gcm | ContentCipher::Aes256Cbc => 32,
        }
    }

    /// True for the authenticated (GCM) ciphers.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            ContentCipher::Aes128Gcm | ContentCipher::Aes192Gcm | ContentCipher::Aes256Gcm
        )
    }

    /// True for ciphers envelopd only reads because they are no longer considered safe.
    pub fn is_weak(self) -> bool {
        self == ContentCipher::Des3Cbc
    }

    /// A short name such as `AES-256-GCM`.
    pub fn label(self) -> &'static str {
        match self {
            ContentCipher::Aes128Gcm => "AES-128-GCM",
            ContentCipher::Aes192Gcm => "AES-192-GCM",
            ContentCipher::Aes256Gcm => "AES-256-GCM",
            ContentCipher::Aes128Cbc => "AES-128-CBC",
            ContentCipher::Aes192Cbc => "AES-192-CBC",
            ContentCipher::Aes256Cbc => "AES-256-CBC",
            ContentCipher::Des3Cbc => "3DES-CBC",
        }
    }
}
