//! A serde deserializer over the tree. Every error it returns carries the
//! position of the innermost node it is about and the path of keys there.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::spanned::{SPANNED, SPANNED_FIELDS};
use super::tree::is_null;
use super::{Error, Kind, Node};

/// Deserializes a value from a node.
pub fn from_node<'a, T: de::Deserialize<'a>>(node: &'a Node) -> Result<T, Error> {
    T::deserialize(NodeDe(node)).map_err(|e| e.or_at(node.pos))
}

pub struct NodeDe<'a>(pub &'a Node);

impl<'a> NodeDe<'a> {
    fn scalar(&self) -> Option<&'a str> {
        match &self.0.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn mismatch(&self, exp: &dyn de::Expected) -> Error {
        de::Error::invalid_type(self.0.unexpected(), exp)
    }

    fn number<T: std::str::FromStr>(&self, exp: &dyn de::Expected) -> Result<T, Error> {
        let text = self.scalar().ok_or_else(|| self.mismatch(exp))?;
        let clean = text.replace('_', "");
        clean.parse().map_err(|_| self.mismatch(exp))
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn visit_plain<'de, V: Visitor<'de>>(text: &str, v: V) -> Result<V::Value, Error> {
    if is_null(text) {
        return v.visit_unit();
    }
    match text {
        "true" | "True" | "TRUE" => return v.visit_bool(true),
        "false" | "False" | "FALSE" => return v.visit_bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return v.visit_i64(n);
    }
    if let Ok(n) = text.parse::<u64>() {
        return v.visit_u64(n);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return v.visit_i64(n);
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
        && let Ok(f) = text.parse::<f64>()
    {
        return v.visit_f64(f);
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => v.visit_f64(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => v.visit_f64(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => v.visit_f64(f64::NAN),
        _ => v.visit_str(text),
    }
}

macro_rules! int_method {
    ($method:ident, $ty:ty, $visit:ident) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            let n: $ty = self.number(&v)?;
            v.$visit::<Error>(n).map_err(|e| e.or_at(self.0.pos))
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        match &self.0.kind {
            Kind::Scalar { text, plain: true } => visit_plain(text, v),
            Kind::Scalar { text, plain: false } => v.visit_str(text),
            Kind::Seq(items) => v.visit_seq(SeqAccess { items: items.iter(), index: 0 }),
            Kind::Map(entries) => v.visit_map(MapAccess { entries: entries.iter(), key: None }),
        }
        .map_err(|e| e.or_at(pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some("true" | "True" | "TRUE") => v.visit_bool(true),
            Some("false" | "False" | "FALSE") => v.visit_bool(false),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    int_method!(deserialize_i8, i64, visit_i64);
    int_method!(deserialize_i16, i64, visit_i64);
    int_method!(deserialize_i32, i64, visit_i64);
    int_method!(deserialize_i64, i64, visit_i64);
    int_method!(deserialize_u8, u64, visit_u64);
    int_method!(deserialize_u16, u64, visit_u64);
    int_method!(deserialize_u32, u64, visit_u64);
    int_method!(deserialize_u64, u64, visit_u64);
    int_method!(deserialize_f32, f64, visit_f64);
    int_method!(deserialize_f64, f64, visit_f64);

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some(text) => v.visit_str(text),
            None => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        if self.0.is_null() { v.visit_none() } else { v.visit_some(self) }.map_err(|e| e.or_at(pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        if self.0.is_null() { v.visit_unit() } else { Err(self.mismatch(&v)) }
            .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        v.visit_newtype_struct(self).map_err(|e| e.or_at(pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            Kind::Seq(items) => v.visit_seq(SeqAccess { items: items.iter(), index: 0 }),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match &self.0.kind {
            Kind::Map(entries) => v.visit_map(MapAccess { entries: entries.iter(), key: None }),
            // An empty value (`buffer:`) is an empty mapping.
            _ if self.0.is_null() => v.visit_map(MapAccess { entries: [].iter(), key: None }),
            _ => Err(self.mismatch(&v)),
        }
        .map_err(|e| e.or_at(self.0.pos))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        if name == SPANNED {
            return v.visit_map(SpannedAccess { node: self.0, step: 0 });
        }
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let pos = self.0.pos;
        match &self.0.kind {
            Kind::Scalar { text, .. } => v.visit_enum(text.as_str().into_deserializer()),
            Kind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                v.visit_enum(EnumAccess { key, value })
            }
            _ => Err(de::Error::invalid_type(self.0.unexpected(), &"a name, or a mapping with a single key")),
        }
        .map_err(|e: Error| e.or_at(pos))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_unit()
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAccess<'a> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let index = self.index;
        self.index += 1;
        seed.deserialize(NodeDe(node)).map(Some).map_err(|e| e.or_at(node.pos).within(format!("[{index}]")))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    key: Option<&'a (Node, Node)>,
}

impl<'de, 'a> de::MapAccess<'de> for MapAccess<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else { return Ok(None) };
        self.key = Some(entry);
        seed.deserialize(NodeDe(&entry.0)).map(Some).map_err(|e| {
            let mut e = e.or_at(entry.0.pos);
            e.key = entry.0.as_str().map(str::to_string);
            e
        })
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.key.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        seed.deserialize(NodeDe(value)).map_err(|e| {
            let e = e.or_at(value.pos);
            match key.as_str() {
                Some(k) => e.within(k.to_string()),
                None => e,
            }
        })
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = Error;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), Error> {
        let variant = seed.deserialize(NodeDe(self.key)).map_err(|e| e.or_at(self.key.pos))?;
        Ok((variant, NodeDe(self.value)))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        if self.0.is_null() { Ok(()) } else { Err(Error::at(self.0.pos, "this option takes no value")) }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let pos = self.0.pos;
        seed.deserialize(self).map_err(|e| e.or_at(pos))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, v)
    }
}

struct SpannedAccess<'a> {
    node: &'a Node,
    step: u8,
}

impl<'de, 'a> de::MapAccess<'de> for SpannedAccess<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(key) = SPANNED_FIELDS.get(self.step as usize) else { return Ok(None) };
        seed.deserialize(BorrowedStr(key)).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(self.node.pos.line.into_deserializer()),
            2 => seed.deserialize(self.node.pos.col.into_deserializer()),
            _ => seed.deserialize(NodeDe(self.node)),
        }
    }
}

struct BorrowedStr(&'static str);

impl<'de> de::Deserializer<'de> for BorrowedStr {
    type Error = Error;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_borrowed_str(self.0)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
