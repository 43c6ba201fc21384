//! The JSON value an event's `data` is made of.
//!
//! Unlike `serde_json::Value`, keys and strings are [`Str`] (static keys and
//! slices of read buffers cost no allocation) and objects are small ordered
//! vectors: event payloads have a handful of fields, where a linear scan beats
//! hashing and keeps the order fields were added in.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::Str;

/// A JSON value.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Str),
    Array(Vec<Value>),
    Object(Map),
}

/// A JSON object that keeps its keys in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map(Vec<(Str, Value)>);

// === impl Map ===

impl Map {
    pub fn new() -> Self {
        Map(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Map(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets `key`, looking for it only among the first `n` entries (those
    /// that were there before a parser began adding distinct keys).
    pub fn set_after(&mut self, n: usize, key: Str, value: Value) {
        match self.position_in(&key, n) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Keeps the first `n` entries.
    pub fn truncate(&mut self, n: usize) {
        self.0.truncate(n);
    }

    /// Where `key` is among the first `n` entries.
    pub fn position_in(&self, key: &str, n: usize) -> Option<usize> {
        self.0[..n.min(self.0.len())].iter().position(|(k, _)| k.as_str() == key)
    }

    /// A map of these entries, whose keys the caller knows are distinct.
    pub fn from_entries(entries: Vec<(Str, Value)>) -> Self {
        Map(entries)
    }

    /// The `i`th key and value.
    pub fn entry_at(&self, i: usize) -> Option<(&Str, &Value)> {
        self.0.get(i).map(|(k, v)| (k, v))
    }

    pub fn set_at(&mut self, i: usize, value: Value) {
        if let Some(slot) = self.0.get_mut(i) {
            slot.1 = value;
        }
    }

    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    }

    /// Sets `key`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: Str, value: Value) {
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    /// Appends without looking for an existing key: for builders that know
    /// their keys are distinct.
    pub fn push(&mut self, key: Str, value: Value) {
        self.0.push((key, value));
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for Map {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(Str, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Str, Value)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

// === impl Value ===

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Map> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The JSON type name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// A cheap estimate of the memory the value holds, for buffer limits.
    /// It walks the value once and reads lengths only.
    pub fn size_estimate(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 8,
            Value::Str(s) => s.len() + 8,
            Value::Array(a) => 16 + a.iter().map(Value::size_estimate).sum::<usize>(),
            Value::Object(m) => 16 + m.0.iter().map(|(k, v)| k.len() + 8 + v.size_estimate()).sum::<usize>(),
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Str::from_static(s))
    }
}

impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::Str(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Str::from(s))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        i64::try_from(n).map_or(Value::Float(n as f64), Value::Int)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Float(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Object(m)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            // JSON has no NaN or infinity; null is what serde_json writes too.
            Value::Float(f) if !f.is_finite() => s.serialize_unit(),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Object(m) => m.serialize(s),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(m) => Ok(m),
            other => Err(de::Error::custom(format_args!("expected an object, found {}", other.kind()))),
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Float(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(Str::from(s)))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(Str::from(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::with_capacity(access.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = access.next_entry::<Str, Value>()? {
            map.insert(k, v);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_key_order() {
        let text = r#"{"z":1,"a":[true,null,1.5,"x"],"m":{"k":"v"}}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        let v: Value = serde_json::from_str(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(v.as_object().unwrap().get("a"), Some(&Value::Int(2)));
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn big_unsigned_becomes_float() {
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert!(matches!(v, Value::Float(_)));
    }
}
