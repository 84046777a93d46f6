//! The one place that names the YAML library. serde_yaml is archived upstream but complete for
//! what we need (serialising plain structs and maps, and reading them back in tests); keeping it
//! behind these two functions makes swapping it a one-file change.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).expect("rendered models always serialise to YAML")
}

pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}
