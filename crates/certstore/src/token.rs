//! Private keys in PKCS#11 tokens (smart cards, USB tokens, HSMs, SoftHSM): the key never leaves
//! the token; envelopd asks it to sign or decrypt ([`smime::ExternalKey`]).
//!
//! Built on `cryptoki`, the Parsec project's PKCS#11 binding (kept up to date, used by Parsec and
//! Sequoia): its `unsafe` calls into the module stay inside it. A token is named by a PKCS#11 URI
//! (RFC 7512) as p11-kit, OpenSSL and GnuTLS write them:
//! `pkcs11:token=Praxis;object=praxis-2026;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/envelopd/pin`.
//!
//! Failure is never silent and a wrong PIN is never tried twice: cards lock after three wrong
//! PINs, so once the token refuses the PIN this key refuses every use until the configuration
//! is loaded again. A token pulled out (or a module that lost its sessions) is opened again at
//! the next use, with the PIN that worked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use smime::{Digest, ExternalKey, ExternalKind, RsaPadding};
use zeroize::Zeroizing;

mod uri;
pub use uri::{read_pin_file, Pkcs11Uri};

/// Each PKCS#11 module is loaded and initialised once per process (C_Initialize may not be
/// called twice).
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    if !path.exists() {
        return Err(format!(
            "the PKCS#11 module {} does not exist (is the token's software installed?)",
            path.display()
        ));
    }
    let m = Pkcs11::new(path)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "the PKCS#11 module {} did not start: {e}",
                path.display()
            ))
        }
    }
    modules.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

/// Where a token key stands.
enum State {
    /// Sessions ready (the first one logged in: PKCS#11 logs in the whole application).
    Open {
        sessions: Vec<Session>,
        key: ObjectHandle,
    },
    /// Not open now (never yet, or the token went away): opened at the next use.
    Closed,
    /// The token refused the PIN: never tried again (cards lock after three wrong PINs).
    PinRefused(String),
}

/// A private key in a PKCS#11 token.
pub struct TokenKey {
    module: Pkcs11,
    module_path: PathBuf,
    uri: Pkcs11Uri,
    pin: Option<Zeroizing<String>>,
    label: String,
    kind: ExternalKind,
    public_key: Vec<u8>,
    state: Mutex<State>,
    /// Sessions opened at most (the token's limit, and 4).
    max_sessions: usize,
}

/// What [`open`] found: the key, and the certificate stored beside it (same CKA_ID), if any.
pub struct Opened {
    /// The key.
    pub key: Arc<TokenKey>,
    /// The certificate in the token with the key's CKA_ID, when there is one.
    pub cert: Option<smime::Cert>,
}

/// Opens the key a PKCS#11 URI names: `module` and `pin` when the URI does not give them.
/// Logs in once; a refused PIN is reported and never tried again.
pub fn open(
    uri: &str,
    module_path: Option<&Path>,
    pin: Option<Zeroizing<String>>,
) -> Result<Opened, String> {
    let uri = Pkcs11Uri::parse(uri)?;
    let module_path = uri
        .module_path
        .clone()
        .or_else(|| module_path.map(Path::to_path_buf))
        .ok_or(
            "no PKCS#11 module: give module = \"/path/to/module.so\" or ?module-path= in the URI",
        )?;
    let pin = match uri.pin()? {
        Some(p) => Some(p),
        None => pin,
    };
    let m = module(&module_path)?;
    let label = uri
        .token
        .clone()
        .or_else(|| uri.serial.clone())
        .unwrap_or_else(|| "(any)".into());
    let mut key = TokenKey {
        module: m,
        module_path,
        uri,
        pin,
        label,
        kind: ExternalKind::Rsa(0),
        public_key: Vec::new(),
        state: Mutex::new(State::Closed),
        max_sessions: 4,
    };
    let (session, handle, slot) = key.connect()?;
    let (kind, public_key) = key.describe_key(&session, handle)?;
    key.kind = kind;
    key.public_key = public_key;
    if let Ok(info) = key.module.get_token_info(slot) {
        if let cryptoki::slot::Limit::Max(n) = info.max_session_count() {
            key.max_sessions = (n as usize).clamp(1, 4);
        }
    }
    let cert = key.find_cert(&session, handle);
    *key.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Open {
        sessions: vec![session],
        key: handle,
    };
    Ok(Opened {
        key: Arc::new(key),
        cert,
    })
}

/// The kind of key [`generate`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKey {
    /// RSA with this many bits (2048, 3072, 4096).
    Rsa(u64),
    /// ECDSA/ECDH on P-256.
    P256,
    /// ECDSA/ECDH on P-384.
    P384,
}

/// Generates a key pair inside the token the URI names (CKA_SENSITIVE, not CKA_EXTRACTABLE: it
/// can never be read out, wrapped or copied), labelled and with the id the URI gives, usable
/// for signing and decrypting (RSA) or key agreement (EC); then opens it.
pub fn generate(
    uri: &str,
    module_path: Option<&Path>,
    pin: Option<Zeroizing<String>>,
    kind: NewKey,
) -> Result<Opened, String> {
    let parsed = Pkcs11Uri::parse(uri)?;
    let path = parsed
        .module_path
        .clone()
        .or_else(|| module_path.map(Path::to_path_buf))
        .ok_or("no PKCS#11 module: give --module or ?module-path= in the URI")?;
    let pin = match parsed.pin()? {
        Some(p) => Some(p),
        None => pin,
    };
    let pin = pin.ok_or("generating a key needs the token's PIN (pin-source= or --pin-file)")?;
    let label = parsed
        .object
        .clone()
        .ok_or("name the new key with object=<label> in the URI")?;
    let id = parsed.id.clone().unwrap_or_else(|| {
        // An id from the label, so certificates stored later can be matched to the key.
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, label.as_bytes()).as_ref()[..8]
            .to_vec()
    });
    let m = module(&path)?;
    let (session, token) = new_key_session(&m, &path, &parsed, &pin, &label)?;
    let common = |public: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
            Attribute::Private(!public),
        ]
    };
    let mut public = common(true);
    let mut private = common(false);
    private.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Unwrap(false),
    ]);
    public.extend([Attribute::Verify(true), Attribute::Wrap(false)]);
    let mechanism = match kind {
        NewKey::Rsa(bits) => {
            public.extend([
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Encrypt(true),
            ]);
            private.push(Attribute::Decrypt(true));
            Mechanism::RsaPkcsKeyPairGen
        }
        NewKey::P256 | NewKey::P384 => {
            let curve = if kind == NewKey::P256 {
                smime::alg::SECP256R1
            } else {
                smime::alg::SECP384R1
            };
            public.push(Attribute::EcParams(
                der::Encode::to_der(&curve).map_err(|e| e.to_string())?,
            ));
            private.push(Attribute::Derive(true));
            Mechanism::EccKeyPairGen
        }
    };
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| format!("cannot generate a key in token \"{token}\": {}", short(&e)))?;
    drop(session);
    let mut named = uri.to_string();
    if parsed.id.is_none() {
        // Opened by label and the id just given.
        let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
        named = match named.split_once('?') {
            Some((path, query)) => format!("{path};id={hex}?{query}"),
            None => format!("{named};id={hex}"),
        };
    }
    open(&named, Some(&path), Some(pin))
}

/// Moves a key (PKCS#8 DER, RSA or EC) and its certificate into the token the URI names, as
/// sensitive and not extractable (it can never be read out again); labelled with the URI's
/// object, with `id`. Returns the key, opened from the token.
pub fn import(
    uri: &str,
    module_path: Option<&Path>,
    pin: Option<Zeroizing<String>>,
    pkcs8_der: &[u8],
    cert: &smime::Cert,
    id: &[u8],
) -> Result<Opened, String> {
    use der::Decode;
    let parsed = Pkcs11Uri::parse(uri)?;
    let path = parsed
        .module_path
        .clone()
        .or_else(|| module_path.map(Path::to_path_buf))
        .ok_or("no PKCS#11 module: give --module or ?module-path= in the URI")?;
    let pin = match parsed.pin()? {
        Some(p) => Some(p),
        None => pin,
    };
    let pin =
        pin.ok_or("moving a key into a token needs the token's PIN (pin-source= or --pin-file)")?;
    let label = parsed
        .object
        .clone()
        .ok_or("name the key with object=<label> in the URI")?;
    let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8_der)
        .map_err(|e| format!("cannot read the private key: {e}"))?;
    let inner = info.private_key.as_bytes();
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    };
    let mut private = common(ObjectClass::PRIVATE_KEY);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
    ]);
    let mut public = common(ObjectClass::PUBLIC_KEY);
    public.push(Attribute::Verify(true));
    let secret = |b: &[u8]| Zeroizing::new(b.to_vec());
    match info.algorithm.oid {
        smime::alg::RSA_ENCRYPTION => {
            let k = RsaPrivateKey::from_der(inner).map_err(|e| format!("RSA key: {e}"))?;
            let n = k.modulus.as_bytes().to_vec();
            let e = k.public_exponent.as_bytes().to_vec();
            private.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::Decrypt(true),
                Attribute::Modulus(n.clone()),
                Attribute::PublicExponent(e.clone()),
                Attribute::PrivateExponent(secret(k.private_exponent.as_bytes()).to_vec()),
                Attribute::Prime1(secret(k.prime1.as_bytes()).to_vec()),
                Attribute::Prime2(secret(k.prime2.as_bytes()).to_vec()),
                Attribute::Exponent1(secret(k.exponent1.as_bytes()).to_vec()),
                Attribute::Exponent2(secret(k.exponent2.as_bytes()).to_vec()),
                Attribute::Coefficient(secret(k.coefficient.as_bytes()).to_vec()),
            ]);
            public.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::Encrypt(true),
                Attribute::Modulus(n),
                Attribute::PublicExponent(e),
            ]);
        }
        smime::alg::ID_EC_PUBLIC_KEY => {
            let curve = info
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
                .ok_or("EC key without a named curve")?;
            let k = EcPrivateKey::from_der(inner).map_err(|e| format!("EC key: {e}"))?;
            let params = der::Encode::to_der(&curve).map_err(|e| e.to_string())?;
            let point = cert.spki().subject_public_key.raw_bytes().to_vec();
            let point = der::Encode::to_der(
                &der::asn1::OctetString::new(point).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            private.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::Derive(true),
                Attribute::EcParams(params.clone()),
                Attribute::Value(secret(k.private_key.as_bytes()).to_vec()),
            ]);
            public.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(params),
                Attribute::EcPoint(point),
            ]);
        }
        other => {
            return Err(format!(
                "envelopd moves RSA and EC keys into tokens, not {other}"
            ))
        }
    }
    let m = module(&path)?;
    let (session, token) = new_key_session(&m, &path, &parsed, &pin, &label)?;
    session
        .create_object(&private)
        .map_err(|e| format!("cannot store the key in token \"{token}\": {}", short(&e)))?;
    session.create_object(&public).map_err(|e| {
        format!(
            "cannot store the public key in token \"{token}\": {}",
            short(&e)
        )
    })?;
    let mut certificate = common(ObjectClass::CERTIFICATE);
    certificate.extend([
        Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
        Attribute::Subject(
            der::Encode::to_der(cert.parsed().tbs_certificate().subject())
                .map_err(|e| e.to_string())?,
        ),
        Attribute::Value(cert.der().to_vec()),
    ]);
    session.create_object(&certificate).map_err(|e| {
        format!(
            "cannot store the certificate in token \"{token}\": {}",
            short(&e)
        )
    })?;
    drop(session);
    open(uri, Some(&path), Some(pin))
}

#[derive(der::Sequence)]
struct RsaPrivateKey<'a> {
    version: u8,
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
    private_exponent: der::asn1::UintRef<'a>,
    prime1: der::asn1::UintRef<'a>,
    prime2: der::asn1::UintRef<'a>,
    exponent1: der::asn1::UintRef<'a>,
    exponent2: der::asn1::UintRef<'a>,
    coefficient: der::asn1::UintRef<'a>,
}

#[derive(der::Sequence)]
struct EcPrivateKey<'a> {
    version: u8,
    private_key: &'a der::asn1::OctetStringRef,
    #[asn1(context_specific = "0", optional = "true")]
    parameters: Option<der::asn1::ObjectIdentifier>,
    #[asn1(context_specific = "1", optional = "true")]
    public_key: Option<der::asn1::BitStringRef<'a>>,
}

/// Reads the key attributes that show it cannot leave the token: (sensitive, extractable,
/// never extractable).
pub fn protection(key: &TokenKey) -> Result<(bool, bool, bool), smime::Error> {
    key.with_session(|s, k| {
        let attrs = s.get_attributes(
            k,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )?;
        let mut out = (false, true, false);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => out.0 = v,
                Attribute::Extractable(v) => out.1 = v,
                Attribute::NeverExtractable(v) => out.2 = v,
                _ => {}
            }
        }
        Ok(out)
    })
}

impl TokenKey {
    /// The module file this key's token is reached through.
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// The token's label (or serial).
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// Finds the slot, opens a session, logs in (once) and finds the key.
    fn connect(&self) -> Result<(Session, ObjectHandle, Slot), String> {
        let slot = self.slot()?;
        let session = self
            .module
            .open_ro_session(slot)
            .map_err(|e| self.failure("cannot open a session with", &e))?;
        if let Some(pin) = &self.pin {
            login(&session, pin, &self.label)?;
        }
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(o) = &self.uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| self.failure("cannot search", &e))?;
        let handle = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "token \"{}\" has no private key {}{}",
                    self.label,
                    self.uri
                        .object
                        .as_deref()
                        .map(|o| format!("labelled \"{o}\""))
                        .unwrap_or_default(),
                    if self.pin.is_none() {
                        " (no PIN given: private keys are only visible after a login)"
                    } else {
                        ""
                    }
                ))
            }
            _ => {
                return Err(format!(
                "token \"{}\" has {} private keys matching the URI: name one with object= and id=",
                self.label,
                found.len()
            ))
            }
        };
        Ok((session, handle, slot))
    }

    /// The slot holding the token; when it is not present, the module is started again once
    /// (at most every few seconds) so a token put back is found: some modules (SoftHSM) read
    /// their tokens only when they start.
    fn slot(&self) -> Result<Slot, String> {
        match self.find_slot() {
            Ok(slot) => Ok(slot),
            Err(why) => {
                if !self.restart_module() {
                    return Err(why);
                }
                self.find_slot()
            }
        }
    }

    /// Finalises and initialises the module again; false when it was done moments ago.
    fn restart_module(&self) -> bool {
        static LAST: OnceLock<Mutex<HashMap<PathBuf, std::time::Instant>>> = OnceLock::new();
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .get(&self.module_path)
            .is_some_and(|t| now.duration_since(*t) < std::time::Duration::from_secs(2))
        {
            return false;
        }
        last.insert(self.module_path.clone(), now);
        let _ = self.module.clone().finalize();
        let started = self
            .module
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        tracing::info!(token = %self.label, module = %self.module_path.display(), ok = started.is_ok(), "PKCS#11 module started again to look for the token");
        started.is_ok()
    }

    fn find_slot(&self) -> Result<Slot, String> {
        let slots = self
            .module
            .get_slots_with_token()
            .map_err(|e| self.failure("cannot list the slots of", &e))?;
        let mut labels = Vec::new();
        for slot in slots {
            let Ok(info) = self.module.get_token_info(slot) else {
                continue;
            };
            let label = info.label().trim_end().to_string();
            let serial = info.serial_number().trim_end().to_string();
            let token_ok = self.uri.token.as_deref().is_none_or(|t| t == label);
            let serial_ok = self.uri.serial.as_deref().is_none_or(|s| s == serial);
            if token_ok && serial_ok {
                return Ok(slot);
            }
            labels.push(label);
        }
        Err(format!(
            "token \"{}\" is not present (module {}; tokens present: {})",
            self.label,
            self.module_path.display(),
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        ))
    }

    fn failure(&self, what: &str, e: &CkError) -> String {
        format!("{what} token \"{}\": {}", self.label, short(e))
    }

    /// The key's type and public key (for matching its certificate).
    fn describe_key(
        &self,
        session: &Session,
        handle: ObjectHandle,
    ) -> Result<(ExternalKind, Vec<u8>), String> {
        let attrs = session
            .get_attributes(handle, &[AttributeType::KeyType, AttributeType::Id])
            .map_err(|e| self.failure("cannot read the key in", &e))?;
        let mut key_type = None;
        let mut id = None;
        for a in attrs {
            match a {
                Attribute::KeyType(k) => key_type = Some(k),
                Attribute::Id(i) => id = Some(i),
                _ => {}
            }
        }
        match key_type {
            Some(KeyType::RSA) => {
                let attrs = session
                    .get_attributes(
                        handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(|e| self.failure("cannot read the RSA key in", &e))?;
                let (mut n, mut e) = (Vec::new(), Vec::new());
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = v,
                        Attribute::PublicExponent(v) => e = v,
                        _ => {}
                    }
                }
                if n.is_empty() || e.is_empty() {
                    return Err(format!(
                        "token \"{}\" does not show the RSA key's public part",
                        self.label
                    ));
                }
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                Ok((ExternalKind::Rsa(bits), rsa_public_key_der(&n, &e)?))
            }
            Some(KeyType::EC) => {
                let attrs = session
                    .get_attributes(handle, &[AttributeType::EcParams])
                    .map_err(|e| self.failure("cannot read the EC key in", &e))?;
                let params = attrs
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcParams(p) => Some(p),
                        _ => None,
                    })
                    .ok_or_else(|| format!("token \"{}\": EC key without a curve", self.label))?;
                let curve = <der::asn1::ObjectIdentifier as der::Decode>::from_der(&params)
                    .map_err(|_| format!("token \"{}\": EC key on a curve envelopd does not know", self.label))?;
                // The point is on the public key object beside it (same CKA_ID).
                let mut template = vec![
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::EC),
                ];
                if let Some(id) = id {
                    template.push(Attribute::Id(id));
                }
                let point = session
                    .find_objects(&template)
                    .ok()
                    .and_then(|found| found.first().copied())
                    .and_then(|h| session.get_attributes(h, &[AttributeType::EcPoint]).ok())
                    .and_then(|attrs| {
                        attrs.into_iter().find_map(|a| match a {
                            Attribute::EcPoint(p) => Some(p),
                            _ => None,
                        })
                    })
                    .map(|p| unwrap_octet_string(&p))
                    .unwrap_or_default();
                Ok((ExternalKind::Ec(curve), point))
            }
            other => Err(format!(
                "token \"{}\": the key is of a type envelopd cannot use ({other:?}); RSA and EC keys work",
                self.label
            )),
        }
    }

    /// The certificate stored with the key (same CKA_ID), if the token holds one.
    fn find_cert(&self, session: &Session, handle: ObjectHandle) -> Option<smime::Cert> {
        let id = session
            .get_attributes(handle, &[AttributeType::Id])
            .ok()?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Id(i) => Some(i),
                _ => None,
            })?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(id),
            ])
            .ok()?;
        let value = session
            .get_attributes(*found.first()?, &[AttributeType::Value])
            .ok()?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })?;
        smime::Cert::from_der(&value).ok()
    }

    /// Runs `op` with a session of the pool; a token that went away is opened again once.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, smime::Error> {
        for attempt in 0..2 {
            let (session, handle) = self.take_session()?;
            match op(&session, handle) {
                Ok(v) => {
                    self.give_back(session);
                    return Ok(v);
                }
                Err(e) if attempt == 0 && gone(&e) => {
                    tracing::warn!(token = %self.label, error = %short(&e), "the token went away; opening it again");
                    drop(session);
                    *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Closed;
                }
                Err(e) => {
                    self.give_back(session);
                    return Err(op_error(&self.label, &e));
                }
            }
        }
        Err(smime::Error::Key(format!(
            "token \"{}\" is not usable",
            self.label
        )))
    }

    fn take_session(&self) -> Result<(Session, ObjectHandle), smime::Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::PinRefused(why) => return Err(smime::Error::Key(why.clone())),
            State::Open { sessions, key } => {
                let key = *key;
                if let Some(s) = sessions.pop() {
                    return Ok((s, key));
                }
                let slot = self.slot().map_err(smime::Error::Key)?;
                return self
                    .module
                    .open_ro_session(slot)
                    .map(|s| (s, key))
                    .map_err(|e| op_error(&self.label, &e));
            }
            State::Closed => {}
        }
        match self.connect() {
            Ok((s, key, _)) => {
                *state = State::Open {
                    sessions: Vec::new(),
                    key,
                };
                tracing::info!(token = %self.label, "token opened again");
                Ok((s, key))
            }
            Err(why) => {
                if why.contains("refused the PIN") || why.contains("locked") {
                    *state = State::PinRefused(why.clone());
                }
                Err(smime::Error::Key(why))
            }
        }
    }

    fn give_back(&self, session: Session) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Open { sessions, .. } = &mut *state {
            if sessions.len() < self.max_sessions {
                sessions.push(session);
            }
        }
    }
}

/// A read-write session, logged in, on the token the URI names, where no private key has the
/// label `label` yet (for putting a new key in); also the token's label, for messages.
fn new_key_session(
    m: &Pkcs11,
    path: &Path,
    parsed: &Pkcs11Uri,
    pin: &Zeroizing<String>,
    label: &str,
) -> Result<(Session, String), String> {
    let probe = TokenKey {
        module: m.clone(),
        module_path: path.to_path_buf(),
        uri: parsed.clone(),
        pin: Some(pin.clone()),
        label: parsed.token.clone().unwrap_or_else(|| "(any)".into()),
        kind: ExternalKind::Rsa(0),
        public_key: Vec::new(),
        state: Mutex::new(State::Closed),
        max_sessions: 1,
    };
    let slot = probe.slot()?;
    let session = m
        .open_rw_session(slot)
        .map_err(|e| probe.failure("cannot open a session with", &e))?;
    login(&session, pin, &probe.label)?;
    let taken = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| probe.failure("cannot search", &e))?;
    if !taken.is_empty() {
        return Err(format!(
            "token \"{}\" already has a key labelled \"{label}\": choose another object= label",
            probe.label
        ));
    }
    Ok((session, probe.label))
}

/// Logs the application in (once per module: every session shares it). A refused PIN is an
/// error that says it will not be tried again.
fn login(session: &Session, pin: &str, label: &str) -> Result<(), String> {
    let secret: cryptoki::types::AuthPin = pin.into();
    match session.login(UserType::User, Some(&secret)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(format!(
            "token \"{label}\" refused the PIN; envelopd does not try it again (tokens lock after a few wrong PINs): correct the PIN and restart envelopd"
        )),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(format!(
            "token \"{label}\" is locked after too many wrong PINs: unlock it with its security officer PIN"
        )),
        Err(e) => Err(format!("cannot log in to token \"{label}\": {}", short(&e))),
    }
}

/// Errors after which the token is opened again (removed and put back, sessions lost).
fn gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::DeviceError,
            _
        )
    )
}

fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{f} returned {rv:?}"),
        other => other.to_string(),
    }
}

fn op_error(label: &str, e: &CkError) -> smime::Error {
    match e {
        CkError::Pkcs11(RvError::KeyFunctionNotPermitted, f) => smime::Error::Key(format!(
            "token \"{label}\" does not allow this key that operation ({f}): the key's usage flags forbid it (an EC key for decrypting needs CKA_DERIVE, an RSA key CKA_DECRYPT)"
        )),
        CkError::Pkcs11(
            RvError::MechanismInvalid | RvError::MechanismParamInvalid | RvError::ArgumentsBad,
            f,
        ) => smime::Error::Unsupported(format!(
            "token \"{label}\" does not offer the mechanism this message needs ({f}; SoftHSM, for one, does RSA-OAEP only with SHA-1)"
        )),
        _ => smime::Error::Key(format!("token \"{label}\" failed: {}", short(e))),
    }
}

impl ExternalKey for TokenKey {
    fn describe(&self) -> String {
        let kind = match &self.kind {
            ExternalKind::Rsa(bits) => format!("RSA-{bits}"),
            ExternalKind::Ec(c) => format!("EC({c})"),
        };
        format!("{kind} in token \"{}\"", self.label)
    }

    fn kind(&self) -> ExternalKind {
        self.kind.clone()
    }

    fn public_key(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    fn sign(
        &self,
        message: &[u8],
        digest: Digest,
        padding: RsaPadding,
    ) -> Result<Vec<u8>, smime::Error> {
        let (hash_alg, hash) = hash(digest, message)?;
        match (&self.kind, padding) {
            (ExternalKind::Rsa(_), RsaPadding::Pkcs1v15) => {
                // DigestInfo with CKM_RSA_PKCS: what every token and card supports.
                let mut info = digest_info_prefix(digest)?.to_vec();
                info.extend_from_slice(&hash);
                self.with_session(|s, k| s.sign(&Mechanism::RsaPkcs, k, &info))
            }
            (ExternalKind::Rsa(_), RsaPadding::Pss) => {
                let params = PkcsPssParams {
                    hash_alg,
                    mgf: mgf(digest),
                    s_len: (hash.len() as u64).into(),
                };
                self.with_session(|s, k| s.sign(&Mechanism::RsaPkcsPss(params), k, &hash))
            }
            (ExternalKind::Ec(_), _) => {
                self.with_session(|s, k| s.sign(&Mechanism::Ecdsa, k, &hash))
            }
        }
    }

    fn rsa_decrypt(
        &self,
        encrypted: &[u8],
        oaep: Option<Digest>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, smime::Error> {
        let result = match oaep {
            None => self.with_session(|s, k| match s.decrypt(&Mechanism::RsaPkcs, k, encrypted) {
                Ok(v) => Ok(Some(v)),
                Err(e) if invalid_input(&e) => Ok(None),
                Err(e) => Err(e),
            }),
            Some(d) => {
                let (hash_alg, _) = hash(d, b"")?;
                let params = PkcsOaepParams::new(hash_alg, mgf(d), PkcsOaepSource::empty());
                self.with_session(|s, k| {
                    match s.decrypt(&Mechanism::RsaPkcsOaep(params), k, encrypted) {
                        Ok(v) => Ok(Some(v)),
                        Err(e) if invalid_input(&e) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            }
        }?;
        Ok(result.map(Zeroizing::new))
    }

    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, smime::Error> {
        let ExternalKind::Ec(curve) = &self.kind else {
            return Err(smime::Error::Key("not an EC key".into()));
        };
        let len: u64 = if *curve == smime::alg::SECP384R1 {
            48
        } else {
            32
        };
        let value = self.with_session(|s, k| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(len.into()),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            let derived = s.derive_key(&Mechanism::Ecdh1Derive(params), k, &template)?;
            let attrs = s.get_attributes(derived, &[AttributeType::Value]);
            let _ = s.destroy_object(derived);
            Ok(attrs?.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            }))
        })?;
        value
            .map(Zeroizing::new)
            .ok_or_else(|| smime::Error::Key("the token gave no ECDH secret".into()))
    }
}

/// The token refused the input itself (bad padding, wrong length): not a token failure.
fn invalid_input(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        )
    )
}

fn hash(digest: Digest, message: &[u8]) -> Result<(MechanismType, Vec<u8>), smime::Error> {
    use aws_lc_rs::digest;
    let (mech, alg) = match digest {
        Digest::Sha256 => (MechanismType::SHA256, &digest::SHA256),
        Digest::Sha384 => (MechanismType::SHA384, &digest::SHA384),
        Digest::Sha512 => (MechanismType::SHA512, &digest::SHA512),
        Digest::Sha1 => (MechanismType::SHA1, &digest::SHA1_FOR_LEGACY_USE_ONLY),
    };
    Ok((mech, digest::digest(alg, message).as_ref().to_vec()))
}

fn mgf(digest: Digest) -> PkcsMgfType {
    match digest {
        Digest::Sha1 => PkcsMgfType::MGF1_SHA1,
        Digest::Sha256 => PkcsMgfType::MGF1_SHA256,
        Digest::Sha384 => PkcsMgfType::MGF1_SHA384,
        Digest::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}

/// The DER DigestInfo before the hash (RFC 8017 §9.2, note 1).
fn digest_info_prefix(digest: Digest) -> Result<&'static [u8], smime::Error> {
    Ok(match digest {
        Digest::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Digest::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Digest::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        Digest::Sha1 => return Err(smime::Error::Unsupported("signing with SHA-1".into())),
    })
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }, as certificates
/// carry it.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
    use der::Encode;
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        n: der::asn1::UintRef<'a>,
        e: der::asn1::UintRef<'a>,
    }
    let key = RsaPublicKey {
        n: der::asn1::UintRef::new(n).map_err(|e| e.to_string())?,
        e: der::asn1::UintRef::new(e).map_err(|e| e.to_string())?,
    };
    key.to_der().map_err(|e| e.to_string())
}

/// CKA_EC_POINT is a DER OCTET STRING around the point (most modules); a bare point is kept.
fn unwrap_octet_string(p: &[u8]) -> Vec<u8> {
    use der::Decode;
    der::asn1::OctetString::from_der(p)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_else(|_| p.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_is_named() {
        let err = open(
            "pkcs11:token=t;object=k?module-path=/nonexistent/libnothing.so",
            None,
            None,
        )
        .err()
        .unwrap();
        assert!(
            err.contains("/nonexistent/libnothing.so does not exist"),
            "{err}"
        );
    }
}
