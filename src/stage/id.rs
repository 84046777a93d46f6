//! The stage id: BLAKE3 in key-derivation mode, with the context `bottle stage <format>`, over
//! the canonical encoding of the resolved spec; the first 16 bytes, as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::STAGE_FORMAT;

pub const ID_BYTES: usize = 16;
pub const ID_HEX_LEN: usize = 2 * ID_BYTES;
/// The shortest prefix a command accepts for an id.
pub const MIN_PREFIX_LEN: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StageId([u8; ID_BYTES]);

/// The derive-key context. BLAKE3 asks for a hard-coded, globally unique string per purpose;
/// the format version is part of it so that a new format can never reuse an old id.
pub fn hash_context() -> String {
    format!("bottle stage {STAGE_FORMAT}")
}

impl StageId {
    pub fn of_canonical_spec(canonical: &[u8]) -> StageId {
        let mut hasher = blake3::Hasher::new_derive_key(&hash_context());
        hasher.update(canonical);
        let mut id = [0u8; ID_BYTES];
        hasher.finalize_xof().fill(&mut id);
        StageId(id)
    }

    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageId({self})")
    }
}

/// Only the full, lower-case form parses; prefixes are resolved against a store.
impl FromStr for StageId {
    type Err = String;

    fn from_str(text: &str) -> Result<StageId, String> {
        if text.len() != ID_HEX_LEN || !is_lower_hex(text) {
            return Err(format!(
                "`{text}` is not a stage id (32 lower-case hex digits)"
            ));
        }
        let mut id = [0u8; ID_BYTES];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(StageId(id))
    }
}

pub fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Serialize for StageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let id = StageId::of_canonical_spec(b"{}\n");
        assert_eq!(id.to_hex().len(), 32);
        assert_eq!(id.to_hex().parse::<StageId>().unwrap(), id);
        assert!("ABCDEF0123456789abcdef0123456789"
            .parse::<StageId>()
            .is_err());
    }

    #[test]
    fn is_keyed_by_the_format() {
        // Plain BLAKE3 of the same bytes must differ: the context separates bottle's ids from
        // any other hash of a JSON file.
        let id = StageId::of_canonical_spec(b"{}\n");
        assert_ne!(&blake3::hash(b"{}\n").as_bytes()[..16], id.as_bytes());
    }
}
