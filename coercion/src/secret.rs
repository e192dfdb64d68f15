//! Decoding of stored requests. Requests may carry secrets; decoding goes through here so the
//! engine can tell a secret that cannot be decrypted from a malformed request.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::workflow::Json;

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

/// Decodes a stored request into the plugin's request type.
pub(crate) fn decode_request<T: DeserializeOwned>(req: &Json) -> Result<T, DecodeError> {
    req.decode().map_err(|e| DecodeError { message: e.to_string(), secret: false })
}
