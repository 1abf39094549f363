//! Raw values by key, from the file, the environment or the defaults, with their origin, and the
//! typed getters whose errors name the key (and variable), the bad value and what is allowed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use toml::Value;

use crate::daemon::DaemonError;
use crate::keys::{key_info, DefaultValue, KeyInfo, Range, ValueKind, ENV_PREFIX, KEYS, SECTIONS};

/// Where a value came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    Default,
    File,
    Env(String),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) value: Value,
    pub(super) origin: Origin,
}

/// Raw values by (section, key), with their origin; reads are recorded so that a test can
/// prove every key in [`KEYS`] is read and nothing else is.
pub(super) struct Values {
    pub(super) map: BTreeMap<(&'static str, &'static str), Entry>,
    pub(super) read: RefCell<Vec<(&'static str, &'static str)>>,
}

pub(super) fn invalid(key: String, value: String, allowed: impl Into<String>) -> DaemonError {
    DaemonError::InvalidConfig {
        key,
        value,
        allowed: allowed.into(),
    }
}

pub(super) fn section_keys(section: &str) -> String {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Converts a variable's text to the key's TOML type. Text that does not convert is kept as a
/// string, so that the typed getter reports it with the key's allowed values.
pub(super) fn env_value(kind: ValueKind, text: &str) -> Value {
    let int = |t: &str| t.trim().replace('_', "").parse::<i64>().ok();
    match kind {
        ValueKind::Integer | ValueKind::IntegerOrWord => int(text)
            .map(Value::Integer)
            .unwrap_or_else(|| Value::String(text.to_string())),
        ValueKind::Bool => match text.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => Value::String(text.to_string()),
        },
        ValueKind::String => Value::String(text.to_string()),
        ValueKind::IntegerList => {
            if text.trim().is_empty() {
                return Value::Array(Vec::new());
            }
            let items: Option<Vec<Value>> = text
                .split(',')
                .map(|s| int(s).map(Value::Integer))
                .collect();
            items
                .map(Value::Array)
                .unwrap_or_else(|| Value::String(text.to_string()))
        }
    }
}

impl Values {
    pub(super) fn new() -> Self {
        Values {
            map: BTreeMap::new(),
            read: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn insert_file(&mut self, text: &str) -> Result<(), DaemonError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| DaemonError::ConfigParse {
                    detail: e.to_string().trim_end().to_string(),
                })?;
        for (section, body) in table {
            let Some(sec) = SECTIONS.iter().find(|s| **s == section) else {
                return Err(invalid(
                    section,
                    "(a section)".into(),
                    format!("the sections are [{}]", SECTIONS.join("], [")),
                ));
            };
            let Value::Table(body) = body else {
                return Err(invalid(
                    section.clone(),
                    body.to_string(),
                    format!("[{section}] must be a table of keys"),
                ));
            };
            for (key, value) in body {
                let Some(info) = key_info(sec, &key) else {
                    return Err(invalid(
                        format!("{sec}.{key}"),
                        value.to_string(),
                        format!("not a key; [{sec}] has {}", section_keys(sec)),
                    ));
                };
                self.map.insert(
                    (info.section, info.key),
                    Entry {
                        value,
                        origin: Origin::File,
                    },
                );
            }
        }
        Ok(())
    }

    pub(super) fn insert_env(&mut self, name: &str, text: &str) -> Result<(), DaemonError> {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            let upper = s.to_ascii_uppercase();
            rest.strip_prefix(upper.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            // Not a configuration variable (HOUNDPOOL_HOUND_BIN, HOUNDPOOL_LOG, ...).
            return Ok(());
        };
        let Some(info) = KEYS
            .iter()
            .find(|k| k.section == section && k.key.eq_ignore_ascii_case(key))
        else {
            return Err(invalid(
                name.to_string(),
                text.to_string(),
                format!(
                    "not a configuration variable; [{section}] has {}",
                    section_keys(section)
                ),
            ));
        };
        if key.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(invalid(
                name.to_string(),
                text.to_string(),
                format!("variable names are upper case: {}", info.env_name()),
            ));
        }
        self.map.insert(
            (info.section, info.key),
            Entry {
                value: env_value(info.kind, text),
                origin: Origin::Env(name.to_string()),
            },
        );
        Ok(())
    }

    /// The entry of a key: the configured one, or its parsed default.
    pub(super) fn get(&self, section: &'static str, key: &'static str) -> Entry {
        self.read.borrow_mut().push((section, key));
        if let Some(e) = self.map.get(&(section, key)) {
            return e.clone();
        }
        let default = match key_info(section, key).map(|k| k.default) {
            Some(DefaultValue::Int(n)) => Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
            Some(DefaultValue::Bool(b)) => Value::Boolean(b),
            Some(DefaultValue::Str(s)) => Value::String(s.to_string()),
            Some(DefaultValue::EmptyList) => Value::Array(Vec::new()),
            // Only reached for a key missing from KEYS, which the schema test rules out.
            None => Value::String(String::new()),
        };
        Entry {
            value: default,
            origin: Origin::Default,
        }
    }

    pub(super) fn bad(
        section: &str,
        key: &str,
        entry: &Entry,
        allowed: impl Into<String>,
    ) -> DaemonError {
        let name = match &entry.origin {
            Origin::Env(var) => format!("{section}.{key} (from {var})"),
            Origin::File | Origin::Default => format!("{section}.{key}"),
        };
        let value = match &entry.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        invalid(name, value, allowed)
    }

    /// The declaration of `section.key`; a name missing from [`KEYS`] is reported as an
    /// invalid key rather than a panic (the schema test rules it out).
    fn info(section: &'static str, key: &'static str) -> Result<&'static KeyInfo, DaemonError> {
        key_info(section, key)
            .ok_or_else(|| invalid(format!("{section}.{key}"), String::new(), "not a key"))
    }

    /// An integer key, checked against its declared [`Range`]; the error says what the
    /// declaration allows ([`KeyInfo::allowed`]).
    pub(super) fn int(&self, section: &'static str, key: &'static str) -> Result<u64, DaemonError> {
        let info = Self::info(section, key)?;
        let e = self.get(section, key);
        let range = info.range.unwrap_or(Range {
            min: 0,
            max: u64::MAX,
            unit: crate::keys::Unit::Count,
            zero: None,
        });
        match e.value.as_integer().and_then(|v| u64::try_from(v).ok()) {
            Some(v) if range.contains(v) => Ok(v),
            _ => Err(Self::bad(section, key, &e, info.allowed())),
        }
    }

    /// A millisecond key ([`Values::int`]) as a duration.
    pub(super) fn ms(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<Duration, DaemonError> {
        self.int(section, key).map(Duration::from_millis)
    }

    /// A microsecond key ([`Values::int`]) as a duration.
    pub(super) fn us(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<Duration, DaemonError> {
        self.int(section, key).map(Duration::from_micros)
    }

    pub(super) fn boolean(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<bool, DaemonError> {
        let e = self.get(section, key);
        e.value
            .as_bool()
            .ok_or_else(|| Self::bad(section, key, &e, "true or false"))
    }

    pub(super) fn string(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<String, DaemonError> {
        let e = self.get(section, key);
        match &e.value {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            _ => Err(Self::bad(section, key, &e, "a string without NUL")),
        }
    }

    /// A string key that must be one of its declared words ([`KeyInfo::choices`]).
    pub(super) fn choice(
        &self,
        section: &'static str,
        key: &'static str,
    ) -> Result<&'static str, DaemonError> {
        let info = Self::info(section, key)?;
        let e = self.get(section, key);
        let found = e
            .value
            .as_str()
            .and_then(|s| info.choices.iter().copied().find(|w| *w == s));
        found.ok_or_else(|| Self::bad(section, key, &e, info.allowed()))
    }
}
