//! [`Secret<T>`]: a request field that never appears in plaintext outside the plugin that
//! reads it.
//!
//! A secret serializes as `{"$secret": "<base64 of nonce ‖ ciphertext>"}`, encrypted with
//! XChaCha20-Poly1305. Plans are built before any workstream exists, so a secret is first
//! encrypted with a key that lives only as long as the process; `submit` re-encrypts it with the
//! workstream's key ([`SecretKey`], from bytes, a file or an environment variable). Without a
//! configured key the process key stays in use, and an action that needs the secret after a
//! restart fails with a message that says how to configure one.
//!
//! `Debug` and `Display` print `Secret(***)`; the plaintext is reachable only through
//! [`Secret::expose`].
//!
//! Keys are passed explicitly, never through ambient state: a `Secret` always serializes under
//! the process key, and always deserializes with the process key (and, for reading plans
//! outside a workstream, the keys configured on this process's workstreams that are still
//! alive; `Action::request_with_key` takes its key explicitly instead). The workstream
//! moves secrets between its own key ring and the process key at its boundaries, with its ring
//! in hand: `submit` seals requests under its key, a plugin's request is opened to the process
//! key just before it is decoded (`decode_request` with the ring), and a plugin's response is
//! sealed under the workstream's key as soon as it is encoded.
//!
//! `Secret` and `SecretKey` come with the `secrets` feature (default; XChaCha20-Poly1305 from
//! `chacha20poly1305`). Without it, the types are absent, and a stored request that holds an
//! encrypted secret is refused at submit.

use std::fmt;
#[cfg(feature = "secrets")]
use std::path::Path;
#[cfg(feature = "secrets")]
use std::sync::{Arc, LazyLock, Weak};

#[cfg(feature = "secrets")]
use base64::Engine as _;
#[cfg(feature = "secrets")]
use base64::engine::general_purpose::STANDARD as B64;
#[cfg(feature = "secrets")]
use chacha20poly1305::aead::{Aead, Generate, KeyInit};
#[cfg(feature = "secrets")]
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
#[cfg(feature = "secrets")]
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::workflow::Json;

/// The JSON key that marks an encrypted secret.
pub const SECRET_MARKER: &str = "$secret";
/// What a redacted secret holds (exports and display clones).
pub const REDACTED: &str = "redacted";

#[cfg(feature = "secrets")]
/// The environment variable [`SecretKey::from_default_env`] reads.
pub const DEFAULT_KEY_ENV: &str = "COERCION_SECRET_KEY";

#[cfg(feature = "secrets")]
/// How to give a workstream a durable key, for error messages.
pub const KEY_HELP: &str = "configure the same 32-byte key on every workstream that runs the plan: \
     `Workstream::builder().secret_key(SecretKey::from_env(\"COERCION_SECRET_KEY\")?)` (base64 or hex), \
     `SecretKey::from_file(path)` or `SecretKey::from_bytes(..)`";

#[cfg(feature = "secrets")]
#[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
/// A value that must not leak: redacted in `Debug`/`Display`, encrypted when serialized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

#[cfg(feature = "secrets")]
impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The plaintext, for the plugin that needs it. Do not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The plaintext, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

#[cfg(feature = "secrets")]
impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

#[cfg(feature = "secrets")]
impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(feature = "secrets")]
impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(feature = "secrets")]
#[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
/// A 256-bit key that encrypts secrets at rest.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

#[cfg(feature = "secrets")]
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

#[cfg(feature = "secrets")]
#[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
/// A key could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("secret key: {0}")]
pub struct KeyError(String);

#[cfg(feature = "secrets")]
impl SecretKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    /// A fresh random key (keep it somewhere safe to resume plans after a restart).
    pub fn generate() -> SecretKey {
        SecretKey(<[u8; 32]>::generate())
    }

    /// Parses 32 bytes written as base64 or hex (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex checked"))
                .collect()
        } else {
            B64.decode(text)
                .map_err(|_| KeyError("expected 32 bytes as base64 or 64 hex digits".into()))?
        };
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError(format!("expected 32 bytes, got {}", b.len())))?;
        Ok(SecretKey(arr))
    }

    /// The key in environment variable `var` (base64 or hex).
    pub fn from_env(var: &str) -> Result<SecretKey, KeyError> {
        let text = std::env::var(var)
            .map_err(|_| KeyError(format!("environment variable {var} is not set")))?;
        SecretKey::parse(&text)
            .map_err(|e| KeyError(format!("environment variable {var}: {}", e.0)))
    }

    /// The key in `COERCION_SECRET_KEY`.
    pub fn from_default_env() -> Result<SecretKey, KeyError> {
        SecretKey::from_env(DEFAULT_KEY_ENV)
    }

    /// The key in a file: 32 raw bytes, or base64/hex text.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SecretKey, KeyError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
        if let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
            && !arr.iter().all(|b| b.is_ascii_graphic())
        {
            return Ok(SecretKey(arr));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| KeyError(format!("{}: not a key", path.display())))?;
        SecretKey::parse(&text).map_err(|e| KeyError(format!("{}: {}", path.display(), e.0)))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    fn encrypt(&self, plaintext: &[u8]) -> String {
        let nonce = XNonce::generate();
        let ct = self
            .cipher()
            .encrypt(&nonce, plaintext)
            .expect("encryption with a valid key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 24 {
            return None;
        }
        let (nonce, ct) = data.split_at(24);
        let nonce = XNonce::try_from(nonce).ok()?;
        self.cipher().decrypt(&nonce, ct).ok()
    }
}

#[cfg(feature = "secrets")]
/// The key that lives as long as this process: every `Secret` serializes under it, and a
/// workstream re-encrypts under its own key at its boundaries.
static PROCESS_KEY: LazyLock<Arc<SecretKey>> = LazyLock::new(|| Arc::new(SecretKey::generate()));

#[cfg(feature = "secrets")]
/// The keys configured on the workstreams of this process that are still alive (a key leaves
/// when the last key ring holding it is dropped), so that reading a plan outside the engine
/// (`Action::request`, `Action::response`) decrypts what those workstreams sealed. Explicit
/// access without it: `Action::request_with_key`, `Action::response_with_key`.
static LIVE_KEYS: std::sync::Mutex<Vec<Weak<SecretKey>>> = std::sync::Mutex::new(Vec::new());

/// The keys a decode may use, the first one encrypting.
#[cfg(feature = "secrets")]
#[derive(Clone, Debug)]
pub(crate) struct KeyRing {
    keys: Vec<Arc<SecretKey>>,
    holder: Holder,
}

/// Whose keys a ring holds: what to say when none of them opens a secret.
#[cfg(feature = "secrets")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// A workstream's: its configured key, if any, and the process key.
    Workstream { configured: bool },
    /// Typed access outside a workstream: the process key and the live workstreams' keys.
    Outside,
    /// A key given for one decode, and the process key.
    Explicit,
}

/// Without the `secrets` feature there are no keys (and no `Secret` to seal).
#[cfg(not(feature = "secrets"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyRing {}

#[cfg(feature = "secrets")]
impl Default for KeyRing {
    /// The process key only.
    fn default() -> KeyRing {
        KeyRing::new(None)
    }
}

#[cfg(feature = "secrets")]
impl KeyRing {
    /// The workstream's key (if configured) first, then the process key. A configured key is
    /// listed among this process's live keys for as long as this ring or a clone of it lives.
    pub(crate) fn new(configured: Option<SecretKey>) -> KeyRing {
        let configured = configured.map(Arc::new);
        if let Some(key) = &configured {
            let mut live = LIVE_KEYS.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|k| k.strong_count() > 0);
            live.push(Arc::downgrade(key));
        }
        let holder = Holder::Workstream {
            configured: configured.is_some(),
        };
        KeyRing::of(configured, holder)
    }

    /// `key` first, then the process key, without listing `key` anywhere: an explicit decode.
    pub(crate) fn explicit(key: &SecretKey) -> KeyRing {
        KeyRing::of(Some(Arc::new(key.clone())), Holder::Explicit)
    }

    fn of(first: Option<Arc<SecretKey>>, holder: Holder) -> KeyRing {
        let mut keys: Vec<Arc<SecretKey>> = first.into_iter().collect();
        keys.push(Arc::clone(&PROCESS_KEY));
        KeyRing { keys, holder }
    }

    /// Outside a workstream: encrypts with the process key, decrypts with it and with the keys
    /// configured on the workstreams of this process that are alive.
    fn outside() -> KeyRing {
        let mut keys = vec![Arc::clone(&PROCESS_KEY)];
        keys.extend(
            LIVE_KEYS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter_map(Weak::upgrade),
        );
        KeyRing {
            keys,
            holder: Holder::Outside,
        }
    }

    fn encrypting(&self) -> &SecretKey {
        &self.keys[0]
    }
}

/// A sealed secret as stored: one key, `$secret` (another field would hide it from the
/// rewrites that re-seal and redact secrets).
#[cfg(feature = "secrets")]
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    #[serde(rename = "$secret")]
    sealed: String,
}

#[cfg(feature = "secrets")]
impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let plaintext = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        let sealed = PROCESS_KEY.encrypt(&plaintext);
        Sealed { sealed }.serialize(s)
    }
}

#[cfg(feature = "secrets")]
impl<'de, T: DeserializeOwned> Deserialize<'de> for Secret<T> {
    /// Decrypts with the process key, then with the keys configured on this process's live
    /// workstreams (a plan read outside the engine); a workstream opens a request to the
    /// process key before decoding it (`decode_request`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Sealed { sealed } = Sealed::deserialize(d)?;
        let plaintext =
            open_sealed(&sealed, &KeyRing::outside()).map_err(serde::de::Error::custom)?;
        // serde's message may quote the value (`invalid type: string "…"`): keep only where the
        // plaintext stopped decoding, never what it holds.
        serde_json::from_slice(&plaintext).map(Secret).map_err(|e| {
            serde::de::Error::custom(format!(
                "{NOT_DECODED} `{}` (its plaintext is not shown; decoding stopped at column {})",
                std::any::type_name::<T>(),
                e.column()
            ))
        })
    }
}

/// How the message of a secret that typed access cannot open begins.
#[cfg(feature = "secrets")]
const NOT_OPENED: &str = "a secret cannot be decrypted";

/// How the message of a secret whose plaintext is not of the field's type begins.
#[cfg(feature = "secrets")]
const NOT_DECODED: &str = "a secret does not decode into";

/// The plaintext of the sealed text `sealed`, decrypted with one of `ring`'s keys; the error
/// says why not (redacted, not base64, no key opens it).
#[cfg(feature = "secrets")]
fn open_sealed(sealed: &str, ring: &KeyRing) -> Result<Vec<u8>, String> {
    if sealed == REDACTED {
        return Err("the secret was redacted (the plan came from an export or a display copy) and cannot be used".into());
    }
    let data = B64
        .decode(sealed)
        .map_err(|_| "a secret is not valid base64".to_string())?;
    ring.keys.iter().find_map(|k| k.decrypt(&data)).ok_or_else(|| {
        match ring.holder {
            Holder::Workstream { configured: true } => format!(
                "a secret in the request cannot be decrypted with the configured key; {KEY_HELP}"
            ),
            Holder::Workstream { configured: false } => format!(
                "a secret in the request was encrypted by another process and no secret key is configured, \
                 so it cannot be decrypted after a restart; {KEY_HELP}"
            ),
            Holder::Outside => format!(
                "{NOT_OPENED} with this process's key or the key of one of its workstreams that is \
                 still alive (its workstream was dropped, or another process sealed it): decode it \
                 with `Action::request_with_key` or `Action::response_with_key` and the key it was \
                 sealed with"
            ),
            Holder::Explicit => format!("{NOT_OPENED} with the key given (or this process's key)"),
        }
    })
}

/// Why a stored request did not decode.
#[derive(Debug)]
pub(crate) struct DecodeError {
    message: String,
    secret: bool,
}

impl DecodeError {
    pub(crate) fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Decodes a stored request into the plugin's request type. With `ring` (a workstream's keys),
/// its secrets are first opened with them to the process key, which `Secret`'s `Deserialize`
/// uses; a failure there, or a secret whose plaintext is not of its field's type, is a secret
/// error ([`DecodeError::is_secret`]).
pub(crate) fn decode_request<T: DeserializeOwned>(
    req: &Json,
    ring: Option<&KeyRing>,
) -> Result<T, DecodeError> {
    let secret = |message: String| DecodeError {
        message,
        secret: true,
    };
    let opened;
    let req = match ring {
        Some(ring) if may_hold_secret(req) => {
            opened = to_process_key(req, ring).map_err(secret)?;
            &opened
        }
        _ => req,
    };
    req.decode().map_err(|e| {
        let message = e.to_string();
        DecodeError {
            secret: is_secret_failure(&message),
            message,
        }
    })
}

/// Whether a decode error comes from a secret (its messages are this module's own).
#[cfg(feature = "secrets")]
fn is_secret_failure(message: &str) -> bool {
    [
        NOT_DECODED,
        NOT_OPENED,
        "the secret was redacted",
        "a secret is not valid base64",
        "a secret in the request",
    ]
    .iter()
    .any(|start| message.starts_with(start))
}

#[cfg(not(feature = "secrets"))]
fn is_secret_failure(_message: &str) -> bool {
    false
}

/// `json` with every secret that one of `opens` opens sealed again under `under`; one that none
/// opens is an error (why, from `open_sealed`), or with `keep_unopened` is left as it is.
#[cfg(feature = "secrets")]
fn reseal_with(
    json: &Json,
    opens: &KeyRing,
    under: &SecretKey,
    keep_unopened: bool,
) -> Result<Json, String> {
    if !may_hold_secret(json) {
        return Ok(json.clone());
    }
    rewrite(json, &mut |sealed| match open_sealed(sealed, opens) {
        Ok(plaintext) => Ok(under.encrypt(&plaintext)),
        Err(_) if keep_unopened => Ok(sealed.to_owned()),
        Err(why) => Err(why),
    })
}

/// `json` with every secret opened with `ring`'s keys and sealed again under the process key
/// (which `Secret`'s `Deserialize` uses): a request about to be decoded or validated.
#[cfg(feature = "secrets")]
pub(crate) fn to_process_key(json: &Json, ring: &KeyRing) -> Result<Json, String> {
    reseal_with(json, ring, &PROCESS_KEY, false)
}

/// `json`, encoded by this process (its secrets under the process key), with those secrets
/// sealed under `ring`'s key, as the workstream stores them: a submitted request, a plugin's
/// response. Any other `{"$secret": …}` value (one a plugin passed through, sealed elsewhere or
/// redacted) is left as it is: a response is never refused after its action ran. What cannot
/// be rewritten (nested deeper than the JSON parser goes) keeps its secrets under the process
/// key, which is logged.
#[cfg(feature = "secrets")]
pub(crate) fn seal_for_store(json: Json, ring: &KeyRing) -> Json {
    match reseal_with(&json, &KeyRing::default(), ring.encrypting(), true) {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::warn!(error = %e, "secrets could not be sealed under the workstream's key (kept under this process's key: they cannot be decrypted after a restart)");
            json
        }
    }
}

/// Refuses a request that holds an encrypted secret: without the `secrets` feature nothing can
/// decrypt it.
#[cfg(not(feature = "secrets"))]
pub(crate) fn to_process_key(json: &Json, _ring: &KeyRing) -> Result<Json, String> {
    if !may_hold_secret(json) {
        return Ok(json.clone());
    }
    rewrite(json, &mut |_| {
        Err(
            "the request holds an encrypted secret, but coercion was built without its \
             `secrets` feature; enable it (`coercion = { features = [\"secrets\"] }`)"
                .into(),
        )
    })
}

/// Without the `secrets` feature there are no secrets to seal.
#[cfg(not(feature = "secrets"))]
pub(crate) fn seal_for_store(json: Json, _ring: &KeyRing) -> Json {
    json
}

/// Whether a JSON text may hold a secret (cheap pre-check).
fn may_hold_secret(json: &Json) -> bool {
    json.as_str().contains(SECRET_MARKER)
}

/// Rewrites every sealed secret in `json` with `f` (given the sealed text).
fn rewrite(json: &Json, f: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<Json, String> {
    fn walk(
        v: &mut serde_json::Value,
        f: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<(), String> {
        match v {
            serde_json::Value::Object(map) => {
                if map.len() == 1
                    && let Some(serde_json::Value::String(sealed)) = map.get_mut(SECRET_MARKER)
                {
                    *sealed = f(sealed)?;
                    return Ok(());
                }
                map.values_mut().try_for_each(|v| walk(v, f))
            }
            serde_json::Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, f)),
            _ => Ok(()),
        }
    }
    let mut value: serde_json::Value = json.decode().map_err(|e| e.to_string())?;
    walk(&mut value, f)?;
    Json::encode(&value).map_err(|e| e.to_string())
}

/// Replaces every secret of `json` with the redaction marker. A request that holds a secret but
/// cannot be rewritten (nested deeper than the JSON parser goes, say) is redacted whole: this
/// fails closed.
pub(crate) fn redact(json: &Json) -> Json {
    if !may_hold_secret(json) {
        return json.clone();
    }
    rewrite(json, &mut |_| Ok(REDACTED.to_owned())).unwrap_or_else(|_| {
        Json::encode(&format!(
            "{REDACTED} (the whole request: it holds a secret that could not be redacted on its own)"
        ))
        .expect("a string encodes")
    })
}

#[cfg(all(test, feature = "secrets"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Serialize, Deserialize, Debug)]
    struct Req {
        user: String,
        password: Secret<String>,
    }

    #[test]
    fn a_secret_nested_too_deeply_to_rewrite_is_redacted_with_its_whole_request() {
        let secret = Json::encode(&Secret::new("deep-marker".to_owned())).unwrap();
        let deep = format!("{}{}{}", "[".repeat(200), secret.as_str(), "]".repeat(200));
        // Stored JSON is kept as text, which may nest deeper than a parsed document may.
        let json = Json::from_text(&deep).unwrap();
        let shown = redact(&json);
        assert!(
            !shown.as_str().contains(SECRET_MARKER),
            "{}",
            shown.as_str()
        );
        assert!(shown.as_str().contains(REDACTED));
    }

    #[test]
    fn debug_and_json_never_show_the_plaintext() {
        let req = Req {
            user: "u".into(),
            password: Secret::new("hunter2-marker".into()),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
        let json = Json::encode(&req).unwrap();
        assert!(!json.as_str().contains("hunter2"), "{}", json.as_str());
        assert!(json.as_str().contains(SECRET_MARKER));
        let back: Req = decode_request(&json, None).unwrap();
        assert_eq!(back.password.expose(), "hunter2-marker");
    }

    #[test]
    fn reseal_moves_secrets_to_the_configured_key_and_redact_removes_them() {
        let req = Req {
            user: "u".into(),
            password: Secret::new("pw".into()),
        };
        let json = Json::encode(&req).unwrap();
        let ring = Arc::new(KeyRing::new(Some(SecretKey::from_bytes([7; 32]))));
        let sealed = seal_for_store(json.clone(), &ring);
        assert_ne!(sealed, json);
        // Only the configured key opens it now.
        let other = Arc::new(KeyRing::new(Some(SecretKey::from_bytes([8; 32]))));
        let only_configured = KeyRing {
            keys: vec![Arc::new(SecretKey::from_bytes([7; 32]))],
            holder: Holder::Workstream { configured: true },
        };
        let back: Req = decode_request(&sealed, Some(&only_configured)).unwrap();
        assert_eq!(back.password.expose(), "pw");
        let wrong = KeyRing {
            keys: vec![Arc::new(SecretKey::from_bytes([8; 32]))],
            holder: Holder::Workstream { configured: true },
        };
        let err = decode_request::<Req>(&sealed, Some(&wrong)).unwrap_err();
        assert!(err.is_secret());
        assert!(err.to_string().contains("configured key"), "{err}");
        drop(other);
        let redacted = redact(&sealed);
        assert!(redacted.as_str().contains(REDACTED));
        let err = decode_request::<Req>(&redacted, None).unwrap_err();
        assert!(err.is_secret());
        assert!(err.to_string().contains("redacted"), "{err}");
        let err = decode_request::<Req>(&redacted, Some(&ring)).unwrap_err();
        assert!(err.is_secret());
        assert!(err.to_string().contains("redacted"), "{err}");
    }

    /// The keys a decode uses are the ones it is given: a request sealed under one
    /// workstream's key does not open with another workstream's ring, although both keys are
    /// configured in this process; and what a `Secret` serializes under never depends on the
    /// caller (always the process key, resealed explicitly).
    #[test]
    fn a_decode_uses_the_ring_it_is_given_and_nothing_else() {
        let a = KeyRing::new(Some(SecretKey::from_bytes([21; 32])));
        let b = KeyRing::new(Some(SecretKey::from_bytes([22; 32])));
        let req = Req {
            user: "u".into(),
            password: Secret::new("pw-a".into()),
        };
        let plain = Json::encode(&req).unwrap();
        // Sealed under the process key, whoever serializes.
        let back: Req = decode_request(&plain, Some(&KeyRing::default())).unwrap();
        assert_eq!(back.password.expose(), "pw-a");
        let sealed_a = seal_for_store(plain.clone(), &a);
        let back: Req = decode_request(&sealed_a, Some(&a)).unwrap();
        assert_eq!(back.password.expose(), "pw-a");
        let err = decode_request::<Req>(&sealed_a, Some(&b)).unwrap_err();
        assert!(err.is_secret(), "{err}");
        assert!(err.to_string().contains("configured key"), "{err}");
        // A request of the wrong shape is not a secret error.
        let other = Json::from_text(r#"{"user": 1}"#).unwrap();
        assert!(
            !decode_request::<Req>(&other, Some(&a))
                .unwrap_err()
                .is_secret()
        );
    }

    /// A response's own secrets go under the workstream's key; a `{"$secret": …}` value it
    /// passed through (sealed elsewhere, or redacted) stays as it was, and nothing is refused.
    #[test]
    fn a_response_seals_its_own_secrets_and_leaves_foreign_ones() {
        #[derive(Serialize, Deserialize)]
        struct Resp {
            token: Secret<String>,
            foreign: serde_json::Value,
            redacted: serde_json::Value,
        }
        let ring = KeyRing::new(Some(SecretKey::from_bytes([31; 32])));
        let elsewhere = SecretKey::from_bytes([32; 32]).encrypt(b"\"theirs\"");
        let resp = Resp {
            token: Secret::new("ours".into()),
            foreign: serde_json::json!({ SECRET_MARKER: elsewhere }),
            redacted: serde_json::json!({ SECRET_MARKER: REDACTED }),
        };
        let json = seal_for_store(Json::encode(&resp).unwrap(), &ring);
        let value: serde_json::Value = json.decode().unwrap();
        assert_eq!(value["foreign"][SECRET_MARKER], elsewhere.as_str());
        assert_eq!(value["redacted"][SECRET_MARKER], REDACTED);
        let token = value["token"][SECRET_MARKER].as_str().unwrap();
        let data = B64.decode(token).unwrap();
        assert!(
            PROCESS_KEY.decrypt(&data).is_none(),
            "still under the process key"
        );
        assert_eq!(ring.encrypting().decrypt(&data).unwrap(), b"\"ours\"");
        assert!(!json.as_str().contains("ours"));
    }

    /// A configured key is among the keys typed access outside a workstream may use while a
    /// ring holding it lives (a workstream and its clones), and leaves with the last one: the
    /// process-wide list does not grow with every workstream ever built.
    #[test]
    fn a_configured_key_is_live_while_its_ring_lives() {
        let bytes = [41; 32];
        let live = || KeyRing::outside().keys.iter().any(|k| k.0 == bytes);
        assert!(!live());
        let ring = KeyRing::new(Some(SecretKey::from_bytes(bytes)));
        let clone = ring.clone();
        assert!(live());
        drop(ring);
        assert!(live(), "a clone still holds it");
        drop(clone);
        assert!(!live());
        // An explicit ring lists nothing.
        let explicit = KeyRing::explicit(&SecretKey::from_bytes(bytes));
        assert!(!live());
        assert_eq!(explicit.encrypting().0, bytes);
        // Dead entries are dropped as keys are added.
        for i in 0..100u8 {
            drop(KeyRing::new(Some(SecretKey::from_bytes([i; 32]))));
        }
        let listed = LIVE_KEYS.lock().unwrap().len();
        assert!(listed < 50, "{listed} entries listed");
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex = "00".repeat(31) + "ff";
        assert!(SecretKey::parse(&hex).is_ok());
        assert!(SecretKey::parse(&B64.encode([1u8; 32])).is_ok());
        assert!(
            SecretKey::parse("short")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        assert!(
            SecretKey::parse(&B64.encode([1u8; 16]))
                .unwrap_err()
                .to_string()
                .contains("got 16")
        );
    }
}
