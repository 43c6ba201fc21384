//! The values expressions compute with: borrowed from the event where they
//! can be.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

use super::EvalError;
use crate::event::{Map, Str, Value};

#[derive(Clone, Debug)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    Bytes(Rc<Vec<u8>>),
    /// A JSON array of the event.
    JsonList(&'a [Value]),
    /// A list the expression built.
    List(Rc<Vec<Val<'a>>>),
    /// A JSON object of the event.
    JsonMap(&'a Map),
    /// A map the expression built.
    Map(Rc<Vec<(Val<'a>, Val<'a>)>>),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Microseconds.
    Duration(i64),
}

impl<'a> Val<'a> {
    pub fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Int(n) => Val::Int(*n),
            Value::Float(f) => Val::Double(*f),
            Value::Str(s) => Val::Str(Cow::Borrowed(s.as_str())),
            Value::Array(a) => Val::JsonList(a),
            Value::Object(m) => Val::JsonMap(m),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::UInt(_) => "uint",
            Val::Double(_) => "double",
            Val::Str(_) => "string",
            Val::Bytes(_) => "bytes",
            Val::JsonList(_) | Val::List(_) => "list",
            Val::JsonMap(_) | Val::Map(_) => "map",
            Val::Timestamp(_) => "timestamp",
            Val::Duration(_) => "duration",
        }
    }

    /// The elements of a list.
    pub fn list_items(&self) -> Option<Vec<Val<'a>>> {
        match self {
            Val::JsonList(a) => Some(a.iter().map(Val::from_json).collect()),
            Val::List(l) => Some(l.as_ref().clone()),
            _ => None,
        }
    }

    pub fn size(&self) -> Option<usize> {
        match self {
            Val::Str(s) => Some(s.chars().count()),
            Val::Bytes(b) => Some(b.len()),
            Val::JsonList(a) => Some(a.len()),
            Val::List(l) => Some(l.len()),
            Val::JsonMap(m) => Some(m.len()),
            Val::Map(m) => Some(m.len()),
            _ => None,
        }
    }

    /// `map[key]` (or `map.key`); `None` when the key is absent.
    pub fn get(&self, key: &Val<'_>) -> Option<Val<'a>> {
        match (self, key) {
            (Val::JsonMap(m), Val::Str(k)) => m.get(k).map(Val::from_json),
            (Val::Map(m), k) => m.iter().find(|(mk, _)| equal(mk, k)).map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// The value as JSON, for fields an expression sets.
    pub fn to_json(&self) -> Result<Value, EvalError> {
        Ok(match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(n) => Value::Int(*n),
            Val::UInt(n) => Value::from(*n),
            Val::Double(f) => Value::Float(*f),
            Val::Str(s) => Value::Str(Str::from(s.as_ref())),
            Val::Bytes(b) => {
                use base64::Engine as _;
                Value::Str(Str::from(base64::engine::general_purpose::STANDARD.encode(b.as_slice())))
            }
            Val::JsonList(a) => Value::Array(a.to_vec()),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect::<Result<_, _>>()?),
            Val::JsonMap(m) => Value::Object((*m).clone()),
            Val::Map(m) => {
                let mut out = Map::with_capacity(m.len());
                for (k, v) in m.iter() {
                    let Val::Str(k) = k else {
                        return Err(EvalError::new("no_such_overload", "JSON object keys are strings"));
                    };
                    out.insert(Str::from(k.as_ref()), v.to_json()?);
                }
                Value::Object(out)
            }
            Val::Timestamp(t) => {
                let mut text = Vec::with_capacity(27);
                crate::event::time::format_rfc3339(*t, &mut text);
                Value::Str(Str::from(String::from_utf8_lossy(&text).into_owned()))
            }
            Val::Duration(d) => Value::Str(Str::from(format!("{}s", *d as f64 / 1e6))),
        })
    }

    /// The text of a value, for keys and templates.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Int(n) => Cow::Owned(n.to_string()),
            Val::UInt(n) => Cow::Owned(n.to_string()),
            Val::Double(f) => Cow::Owned(f.to_string()),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Null => Cow::Borrowed("null"),
            other => match other.to_json() {
                Ok(v) => Cow::Owned(serde_json::to_string(&v).unwrap_or_default()),
                Err(_) => Cow::Borrowed(""),
            },
        }
    }
}

/// CEL equality: numbers compare by value across int, uint and double;
/// values of different types are not equal.
pub fn equal(a: &Val<'_>, b: &Val<'_>) -> bool {
    if let Some(o) = numeric_cmp(a, b) {
        return o == Ordering::Equal;
    }
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bytes(x), Val::Bytes(y)) => x == y,
        (Val::Timestamp(x), Val::Timestamp(y)) | (Val::Duration(x), Val::Duration(y)) => x == y,
        (Val::JsonList(_) | Val::List(_), Val::JsonList(_) | Val::List(_)) => {
            let (Some(x), Some(y)) = (a.list_items(), b.list_items()) else { return false };
            x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| equal(p, q))
        }
        (Val::JsonMap(_) | Val::Map(_), Val::JsonMap(_) | Val::Map(_)) => {
            let (Some(la), Some(lb)) = (a.size(), b.size()) else { return false };
            la == lb && map_entries(a).iter().all(|(k, v)| b.get(k).is_some_and(|w| equal(v, &w)))
        }
        _ => false,
    }
}

pub fn map_entries<'a>(m: &Val<'a>) -> Vec<(Val<'a>, Val<'a>)> {
    match m {
        Val::JsonMap(map) => {
            map.iter().map(|(k, v)| (Val::Str(Cow::Borrowed(k.as_str())), Val::from_json(v))).collect()
        }
        Val::Map(m) => m.as_ref().clone(),
        _ => Vec::new(),
    }
}

/// Orders numbers of any kind by value.
fn numeric_cmp(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    Some(match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::UInt(x), Val::UInt(y)) => x.cmp(y),
        (Val::Double(x), Val::Double(y)) => x.partial_cmp(y)?,
        (Val::Int(x), Val::UInt(y)) => {
            if *x < 0 {
                Ordering::Less
            } else {
                (*x as u64).cmp(y)
            }
        }
        (Val::UInt(_), Val::Int(_)) => return numeric_cmp(b, a).map(Ordering::reverse),
        (Val::Int(x), Val::Double(y)) => (*x as f64).partial_cmp(y)?,
        (Val::Double(x), Val::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (Val::UInt(x), Val::Double(y)) => (*x as f64).partial_cmp(y)?,
        (Val::Double(x), Val::UInt(y)) => x.partial_cmp(&(*y as f64))?,
        _ => return None,
    })
}

/// CEL ordering, for `< <= > >=`.
pub fn compare(a: &Val<'_>, b: &Val<'_>) -> Result<Ordering, EvalError> {
    if let Some(o) = numeric_cmp(a, b) {
        return Ok(o);
    }
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Bytes(x), Val::Bytes(y)) => Ok(x.cmp(y)),
        (Val::Timestamp(x), Val::Timestamp(y)) | (Val::Duration(x), Val::Duration(y)) => Ok(x.cmp(y)),
        _ => {
            Err(EvalError::new("no_such_overload", format!("cannot compare {} with {}", a.kind(), b.kind())))
        }
    }
}

fn overflow() -> EvalError {
    EvalError::new("overflow", "integer overflow")
}

pub fn add<'a>(a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => Val::Int(x.checked_add(y).ok_or_else(overflow)?),
        (Val::UInt(x), Val::UInt(y)) => Val::UInt(x.checked_add(y).ok_or_else(overflow)?),
        (Val::Double(x), Val::Double(y)) => Val::Double(x + y),
        (Val::Str(x), Val::Str(y)) => Val::Str(Cow::Owned(format!("{x}{y}"))),
        (Val::Bytes(x), Val::Bytes(y)) => Val::Bytes(Rc::new([x.as_slice(), y.as_slice()].concat())),
        (x @ (Val::JsonList(_) | Val::List(_)), y @ (Val::JsonList(_) | Val::List(_))) => {
            let mut items = x.list_items().unwrap_or_default();
            items.extend(y.list_items().unwrap_or_default());
            Val::List(Rc::new(items))
        }
        (Val::Timestamp(t), Val::Duration(d)) | (Val::Duration(d), Val::Timestamp(t)) => {
            Val::Timestamp(t.checked_add(d).ok_or_else(overflow)?)
        }
        (Val::Duration(x), Val::Duration(y)) => Val::Duration(x.checked_add(y).ok_or_else(overflow)?),
        (x, y) => {
            return Err(EvalError::new(
                "no_such_overload",
                format!("cannot add {} and {}", x.kind(), y.kind()),
            ));
        }
    })
}

pub fn arith<'a>(op: char, a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
    let zero = || EvalError::new("division_by_zero", "division by zero");
    Ok(match (op, a, b) {
        ('-', Val::Int(x), Val::Int(y)) => Val::Int(x.checked_sub(y).ok_or_else(overflow)?),
        ('-', Val::UInt(x), Val::UInt(y)) => Val::UInt(x.checked_sub(y).ok_or_else(overflow)?),
        ('-', Val::Double(x), Val::Double(y)) => Val::Double(x - y),
        ('-', Val::Timestamp(x), Val::Timestamp(y)) => Val::Duration(x.checked_sub(y).ok_or_else(overflow)?),
        ('-', Val::Timestamp(x), Val::Duration(y)) => Val::Timestamp(x.checked_sub(y).ok_or_else(overflow)?),
        ('-', Val::Duration(x), Val::Duration(y)) => Val::Duration(x.checked_sub(y).ok_or_else(overflow)?),
        ('*', Val::Int(x), Val::Int(y)) => Val::Int(x.checked_mul(y).ok_or_else(overflow)?),
        ('*', Val::UInt(x), Val::UInt(y)) => Val::UInt(x.checked_mul(y).ok_or_else(overflow)?),
        ('*', Val::Double(x), Val::Double(y)) => Val::Double(x * y),
        ('/', Val::Int(_), Val::Int(0)) | ('%', Val::Int(_), Val::Int(0)) => return Err(zero()),
        ('/', Val::UInt(_), Val::UInt(0)) | ('%', Val::UInt(_), Val::UInt(0)) => return Err(zero()),
        ('/', Val::Int(x), Val::Int(y)) => Val::Int(x.checked_div(y).ok_or_else(overflow)?),
        ('/', Val::UInt(x), Val::UInt(y)) => Val::UInt(x / y),
        ('/', Val::Double(x), Val::Double(y)) => Val::Double(x / y),
        ('%', Val::Int(x), Val::Int(y)) => Val::Int(x.checked_rem(y).ok_or_else(overflow)?),
        ('%', Val::UInt(x), Val::UInt(y)) => Val::UInt(x % y),
        (op, x, y) => {
            return Err(EvalError::new(
                "no_such_overload",
                format!("no `{op}` for {} and {}", x.kind(), y.kind()),
            ));
        }
    })
}
