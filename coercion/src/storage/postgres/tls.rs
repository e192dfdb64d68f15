//! TLS to PostgreSQL, as libpq understands `sslmode` and `sslrootcert`.
//!
//! tokio-postgres parses `sslmode=disable|prefer|require` only and rejects `verify-ca`,
//! `verify-full` and `sslrootcert`, so [`split`] takes both out of the connection string (URL
//! or `key=value` form) and [`connector`] builds the rustls client that enforces them:
//!
//! | `sslmode` | encrypted | server certificate |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (the default) | when the server offers TLS | not checked (as libpq) |
//! | `require` | yes | not checked; checked against `sslrootcert` (or `~/.postgresql/root.crt`) when there is one (as libpq) |
//! | `verify-ca` | yes | signed by a CA of `sslrootcert` |
//! | `verify-full` | yes | signed by a CA of `sslrootcert`, and issued for the host name |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the system's roots (which
//! means `verify-full`: any public certificate chains to them, so a weaker mode is refused, as
//! libpq does); without it, `verify-ca` and `verify-full` use `~/.postgresql/root.crt`, as
//! libpq does, and fail with a message saying so when that file does not exist either (and
//! `require` checks the CA when that file exists).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::storage::StoreError;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::permanent(format!(
                    "postgres: bad connection URL: sslmode={other:?} is not one of disable, prefer, \
                     require, verify-ca, verify-full"
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is off, tried or required.
    fn for_driver(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// The TLS settings taken out of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<String>,
}

/// Splits `url` into the connection string tokio-postgres accepts (with `sslmode` as it
/// understands it) and the TLS settings.
pub(super) fn split(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let (rest, found) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else {
        split_keywords(url)?
    };
    let mut settings = TlsSettings::default();
    let mut mode_given = false;
    for (key, value) in found {
        match key.as_str() {
            "sslmode" => {
                settings.mode = SslMode::parse(&value)?;
                mode_given = true;
            }
            _ => settings.root_cert = Some(value),
        }
    }
    // As libpq: the system's roots are only worth anything with the name checked (any public
    // certificate for any name chains to them), so `system` means verify-full.
    if settings.root_cert.as_deref() == Some("system") {
        if !mode_given {
            settings.mode = SslMode::VerifyFull;
        } else if settings.mode != SslMode::VerifyFull {
            return Err(StoreError::permanent(format!(
                "postgres: bad connection URL: sslrootcert=system needs sslmode=verify-full (it is {}): \
                 any public certificate chains to the system's roots, so only the name check \
                 makes them worth anything",
                settings.mode.name()
            )));
        }
    }
    let mode = settings.mode.for_driver();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if rest.contains('?') { '&' } else { '?' };
        format!("{rest}{sep}sslmode={mode}")
    } else {
        format!("{} sslmode={mode}", rest.trim_end())
    };
    Ok((rest, settings))
}

fn is_ours(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

/// URL form: the query's `sslmode` and `sslrootcert` pairs (percent-decoded) taken out.
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let decode = |text: &str| -> Result<String, StoreError> {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| {
                StoreError::permanent(format!(
                    "postgres: bad connection URL: {text:?} is not UTF-8 once decoded"
                ))
            })
    };
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key_text = decode(key)?;
        if is_ours(&key_text) {
            found.push((key_text, decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, found))
}

/// `key=value` form (libpq's grammar: spaces around `=` allowed, values in single quotes with
/// backslash escapes): the `sslmode` and `sslrootcert` pairs taken out, the rest kept as written.
fn split_keywords(text: &str) -> Result<(String, Vec<(String, String)>), StoreError> {
    let bad =
        |why: String| StoreError::permanent(format!("postgres: bad connection string: {why}"));
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut kept = String::new();
    let mut found = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != '=' && !bytes[i].is_whitespace() {
            i += 1;
        }
        let key: String = bytes[start..i].iter().collect();
        if key.is_empty() {
            // tokio-postgres would stop reading there, silently dropping what follows.
            return Err(bad("a `=` without a key before it".to_owned()));
        }
        skip_ws(&mut i);
        if i >= bytes.len() || bytes[i] != '=' {
            return Err(bad(format!("{key:?} is not followed by `=`")));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == '\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(bad(format!("the value of {key:?} has no closing quote"))),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_whitespace() {
                if bytes[i] == '\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        if is_ours(&key) {
            found.push((key, value));
        } else {
            kept.extend(&bytes[start..i]);
            kept.push(' ');
        }
    }
    Ok((kept, found))
}

/// The rustls connector for `settings`.
pub(super) fn connector(
    settings: &TlsSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::permanent("postgres: TLS setup").caused_by(e))?;
    // As libpq: `require` checks the CA when one is given, or when ~/.postgresql/root.crt exists.
    let default_root = default_root_cert().filter(|p| p.exists());
    let verify = match (settings.mode, &settings.root_cert) {
        (SslMode::Require, None) if default_root.is_some() => Some(false),
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::Require | SslMode::VerifyCa, Some(_)) | (SslMode::VerifyCa, None) => Some(false),
        (SslMode::VerifyFull, _) => Some(true),
    };
    let config = match verify {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        Some(check_name) => {
            let roots = Arc::new(roots(settings)?);
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                provider.clone(),
            )
            .build()
            .map_err(|e| StoreError::permanent("postgres: TLS setup").caused_by(e))?;
            if check_name {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// libpq's default CA file: `~/.postgresql/root.crt`.
fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql").join("root.crt"))
}

/// The CA certificates that verify the server.
fn roots(settings: &TlsSettings) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    let file = match settings.root_cert.as_deref() {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StoreError::permanent(
                    "postgres: sslrootcert=system, but no CA certificate of the system could be loaded",
                ));
            }
            return Ok(store);
        }
        Some(path) => PathBuf::from(path),
        None => match default_root_cert() {
            Some(path) if path.exists() => path,
            _ => {
                return Err(StoreError::permanent(format!(
                    "postgres: sslmode={} checks the server's certificate, but no CA was given: \
                         add sslrootcert=/path/to/ca.pem (or sslrootcert=system) to the connection \
                         URL, or put the CA in ~/.postgresql/root.crt",
                    match settings.mode {
                        SslMode::VerifyCa => "verify-ca",
                        _ => "verify-full",
                    }
                )));
            }
        },
    };
    let certs = CertificateDer::pem_file_iter(&file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StoreError::permanent(format!(
                "postgres: cannot read the CA certificates of sslrootcert {}: {e}",
                file.display()
            ))
        })?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(StoreError::permanent(format!(
            "postgres: sslrootcert {} holds no usable CA certificate (a PEM file is expected)",
            file.display()
        )));
    }
    Ok(store)
}

/// `prefer` and `require` without a CA, as libpq: encrypted, the server's certificate not
/// checked (the handshake's signatures still are).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a given CA; the name the certificate was issued for is
/// not checked (webpki checks the chain first, then the name).
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: SslMode, root: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode,
            root_cert: root.map(str::to_owned),
        }
    }

    #[test]
    fn urls_lose_the_tls_keys_and_keep_the_rest() {
        let (rest, s) = split(
            "postgres://u@db.test:5433/ops?hostaddr=10.0.0.7&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u@db.test:5433/ops?hostaddr=10.0.0.7&application_name=a&sslmode=require"
        );
        assert_eq!(s, settings(SslMode::VerifyFull, Some("/etc/ca x.pem")));
        let (rest, s) = split("postgresql://u@h/db").unwrap();
        assert_eq!(rest, "postgresql://u@h/db?sslmode=prefer");
        assert_eq!(s, TlsSettings::default());
        let (rest, s) = split("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u@h/db?sslmode=disable");
        assert_eq!(s.mode, SslMode::Disable);
    }

    #[test]
    fn keyword_strings_lose_the_tls_keys_and_keep_the_rest_as_written() {
        let (rest, s) = split(
            "host=db.test  port=5433 user='o\\'brien' sslmode = verify-ca sslrootcert='/ca dir/ca.pem' dbname=ops",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=db.test port=5433 user='o\\'brien' dbname=ops sslmode=require"
        );
        assert_eq!(s, settings(SslMode::VerifyCa, Some("/ca dir/ca.pem")));
        // What is kept still parses, quotes and all.
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("o'brien"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = split("postgres://h/db?sslmode=verify_full").unwrap_err();
        assert!(
            e.to_string()
                .contains("sslmode=\"verify_full\" is not one of"),
            "{e}"
        );
        let e = split("host=h sslrootcert='/open").unwrap_err();
        assert!(e.to_string().contains("no closing quote"), "{e}");
        let e = split("host").unwrap_err();
        assert!(e.to_string().contains("not followed by `=`"), "{e}");
        let e = split("host=h =x sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("a `=` without a key"), "{e}");
    }

    #[test]
    fn the_system_roots_mean_verify_full() {
        let (_, s) = split("postgres://h/db?sslrootcert=system").unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        for weaker in ["prefer", "require", "verify-ca"] {
            let e = split(&format!(
                "postgres://h/db?sslrootcert=system&sslmode={weaker}"
            ))
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "sslrootcert=system needs sslmode=verify-full (it is {weaker})"
                )),
                "{e}"
            );
        }
        let (_, s) = split("postgres://h/db?sslrootcert=system&sslmode=verify-full").unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
    }

    fn refused(settings: &TlsSettings) -> StoreError {
        match connector(settings) {
            Err(e) => e,
            Ok(_) => panic!("{settings:?} must be refused"),
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let e = refused(&settings(SslMode::VerifyFull, Some("/nonexistent/ca.pem")));
        assert!(
            e.to_string()
                .contains("cannot read the CA certificates of sslrootcert /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("coercion-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = refused(&settings(SslMode::VerifyCa, empty.to_str()));
        assert!(
            e.to_string().contains("holds no usable CA certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        // A verifying mode without sslrootcert reads ~/.postgresql/root.crt, as libpq; without
        // it, the message says what to add.
        let default =
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql").join("root.crt"));
        if default.is_none_or(|p| !p.exists()) {
            let e = refused(&settings(SslMode::VerifyFull, None));
            assert!(
                e.to_string().contains(
                    "sslmode=verify-full checks the server's certificate, but no CA was given: \
                     add sslrootcert=/path/to/ca.pem (or sslrootcert=system)"
                ),
                "{e}"
            );
        }
        // Modes that check nothing need no CA.
        assert!(connector(&settings(SslMode::Require, None)).is_ok());
        assert!(connector(&settings(SslMode::Prefer, None)).is_ok());
    }
}
