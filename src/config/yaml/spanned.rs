//! `Spanned<T>`: a value with the position it is written at. The
//! deserializer recognises it by its reserved struct name and hands it the
//! node's line and column before the value itself.

use std::fmt;

use serde::de::{self, Visitor};

use super::Pos;

pub(super) const SPANNED: &str = "$hostwatch::Spanned";
pub(super) const SPANNED_FIELDS: &[&str] = &["$line", "$col", "$value"];

/// A value together with the position it was written at, for checks that run
/// after deserialization (an unknown input, an invalid URL) to point at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub pos: Pos,
    pub value: T,
}

impl<T: Default> Default for Spanned<T> {
    fn default() -> Self {
        Spanned { pos: Pos::default(), value: T::default() }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value with a position")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut line = 0;
                let mut col = 0;
                let mut value = None;
                while let Some(key) = map.next_key::<&str>()? {
                    match key {
                        "$line" => line = map.next_value()?,
                        "$col" => col = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(Spanned { pos: Pos { line, col }, value })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}
