//! From the parsed expression to closures.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr, LiteralValue, operators};
use regex::Regex;

use super::value::{self, Val, equal};
use super::{EvalError, Node, Result};
use crate::event::{EventId, Value};

#[derive(Default)]
pub struct Compiler {
    /// Macro variables in scope, innermost last, with their slot.
    scope: Vec<(String, usize)>,
    pub slots: usize,
}

fn err(reason: &'static str, detail: impl Into<String>) -> EvalError {
    EvalError::new(reason, detail)
}

/// A constant of the expression that evaluation can lend to its values:
/// interned, so that compiling the same expression again stores nothing new.
fn lit(s: &str) -> &'static str {
    crate::event::intern(s)
}

impl Compiler {
    pub fn expr(&mut self, e: &IdedExpr) -> std::result::Result<Node, String> {
        match &e.expr {
            Ast::Literal(l) => Ok(literal(l)),
            Ast::Ident(name) => self.ident(name),
            Ast::Select(sel) => self.select(e, &sel.operand, &sel.field, sel.test),
            Ast::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
            Ast::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err("optional list elements are not supported".to_string());
                }
                let items =
                    list.elements.iter().map(|x| self.expr(x)).collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Box::new(move |ctx| {
                    let mut out = Vec::with_capacity(items.len());
                    for item in &items {
                        out.push(item(ctx)?);
                    }
                    Ok(Val::List(Rc::new(out)))
                }))
            }
            Ast::Map(map) => {
                let mut entries = Vec::new();
                for entry in &map.entries {
                    let EntryExpr::MapEntry(m) = &entry.expr else {
                        return Err("struct fields are not supported".to_string());
                    };
                    entries.push((self.expr(&m.key)?, self.expr(&m.value)?));
                }
                Ok(Box::new(move |ctx| {
                    let mut out = Vec::with_capacity(entries.len());
                    for (k, v) in &entries {
                        out.push((k(ctx)?, v(ctx)?));
                    }
                    Ok(Val::Map(Rc::new(out)))
                }))
            }
            Ast::Comprehension(c) => self.comprehension(c),
            Ast::Struct(s) => Err(format!("messages (`{}{{...}}`) are not supported", s.type_name)),
            Ast::Unspecified => Err("empty expression".to_string()),
        }
    }

    fn ident(&mut self, name: &str) -> std::result::Result<Node, String> {
        if let Some((_, slot)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            let slot = *slot;
            return Ok(Box::new(move |ctx| Ok(ctx.slots.borrow()[slot].clone())));
        }
        Ok(match name {
            "type" => Box::new(|ctx| Ok(Val::Str(Cow::Borrowed(ctx.event.ty.as_str())))),
            "source" => Box::new(|ctx| Ok(Val::Str(Cow::Borrowed(ctx.event.source.as_str())))),
            "host" => Box::new(|ctx| Ok(Val::Str(Cow::Borrowed(ctx.event.host.as_str())))),
            "subject" => Box::new(|ctx| match &ctx.event.subject {
                Some(s) => Ok(Val::Str(Cow::Borrowed(s.as_str()))),
                None => Err(err("no_such_field", "the event has no subject")),
            }),
            "time" => Box::new(|ctx| Ok(Val::Timestamp(ctx.event.time))),
            "id" => Box::new(|ctx| match &ctx.event.id {
                EventId::Given(s) => Ok(Val::Str(Cow::Borrowed(s.as_str()))),
                EventId::Generated(n) => {
                    let mut out = Vec::with_capacity(36);
                    crate::event::id::format_id(*n, &mut out);
                    Ok(Val::Str(Cow::Owned(String::from_utf8_lossy(&out).into_owned())))
                }
            }),
            "data" => Box::new(|ctx| Ok(Val::from_json(&ctx.event.data))),
            "ext" => Box::new(|ctx| Ok(Val::JsonMap(&ctx.event.attrs))),
            "null" => Box::new(|_| Ok(Val::Null)),
            other => {
                return Err(format!(
                    "unknown name `{other}`: an expression sees id, type, source, subject, time, host, \
                     data and ext (e.g. `data.{other}`)"
                ));
            }
        })
    }

    /// `a.b` or `has(a.b)`.
    fn select(
        &mut self,
        whole: &IdedExpr,
        operand: &IdedExpr,
        field: &str,
        test: bool,
    ) -> std::result::Result<Node, String> {
        // `data.a.b.c` and `ext.x`: walk the event directly.
        if let Some((root, path)) = static_path(whole)
            && (root == "data" || root == "ext")
            && !self.scope.iter().any(|(n, _)| *n == root)
        {
            let path: Vec<&'static str> = path.iter().map(|s| lit(s)).collect();
            let in_data = root == "data";
            return Ok(Box::new(move |ctx| {
                let mut v: &crate::event::Value;
                let mut rest = path.as_slice();
                if in_data {
                    v = &ctx.event.data;
                } else {
                    let Some((first, more)) = rest.split_first() else {
                        return Ok(Val::JsonMap(&ctx.event.attrs));
                    };
                    match ctx.event.attrs.get(first) {
                        Some(found) => v = found,
                        None if test && more.is_empty() => return Ok(Val::Bool(false)),
                        None => {
                            return Err(err("no_such_field", format!("no extension attribute `{first}`")));
                        }
                    }
                    rest = more;
                }
                for (i, key) in rest.iter().enumerate() {
                    let last = i + 1 == rest.len();
                    match v {
                        Value::Object(m) => match m.get(key) {
                            Some(found) => v = found,
                            None if test && last => return Ok(Val::Bool(false)),
                            None => return Err(err("no_such_field", format!("no field `{key}`"))),
                        },
                        other => {
                            return Err(err(
                                "no_such_field",
                                format!("`{key}` of a {}, not of a map", Val::from_json(other).kind()),
                            ));
                        }
                    }
                }
                if test { Ok(Val::Bool(true)) } else { Ok(Val::from_json(v)) }
            }));
        }
        let operand = self.expr(operand)?;
        let field = lit(field);
        Ok(Box::new(move |ctx| {
            let base = operand(ctx)?;
            let key = Val::Str(Cow::Borrowed(field));
            match base {
                Val::JsonMap(_) | Val::Map(_) => match base.get(&key) {
                    Some(v) if !test => Ok(v),
                    Some(_) => Ok(Val::Bool(true)),
                    None if test => Ok(Val::Bool(false)),
                    None => Err(err("no_such_field", format!("no field `{field}`"))),
                },
                other => Err(err("no_such_field", format!("`{field}` of a {}, not of a map", other.kind()))),
            }
        }))
    }

    fn comprehension(
        &mut self,
        c: &cel::common::ast::ComprehensionExpr,
    ) -> std::result::Result<Node, String> {
        if c.iter_var2.is_some() {
            return Err("two-variable comprehensions are not supported".to_string());
        }
        let range = self.expr(&c.iter_range)?;
        let init = self.expr(&c.accu_init)?;
        let iter_slot = self.slots;
        let accu_slot = self.slots + 1;
        self.slots += 2;
        self.scope.push((c.accu_var.clone(), accu_slot));
        self.scope.push((c.iter_var.clone(), iter_slot));
        let cond = self.expr(&c.loop_cond);
        let step = self.expr(&c.loop_step);
        self.scope.pop();
        let result = self.expr(&c.result);
        self.scope.pop();
        let (cond, step, result) = (cond?, step?, result?);
        Ok(Box::new(move |ctx| {
            let range = range(ctx)?;
            let items: Vec<Val<'_>> = match &range {
                Val::JsonList(_) | Val::List(_) => range.list_items().unwrap_or_default(),
                Val::JsonMap(_) | Val::Map(_) => {
                    value::map_entries(&range).into_iter().map(|(k, _)| k).collect()
                }
                other => {
                    return Err(err("no_such_overload", format!("cannot iterate over a {}", other.kind())));
                }
            };
            let accu = init(ctx)?;
            ctx.slots.borrow_mut()[accu_slot] = accu;
            for item in items {
                ctx.slots.borrow_mut()[iter_slot] = item;
                match cond(ctx)? {
                    Val::Bool(false) => break,
                    Val::Bool(true) => {}
                    other => {
                        return Err(err("no_such_overload", format!("loop condition gave {}", other.kind())));
                    }
                }
                let next = step(ctx)?;
                ctx.slots.borrow_mut()[accu_slot] = next;
            }
            result(ctx)
        }))
    }

    fn call(
        &mut self,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> std::result::Result<Node, String> {
        match (name, target, args.len()) {
            (operators::LOGICAL_AND, None, 2) | (operators::LOGICAL_OR, None, 2) => {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                let is_and = name == operators::LOGICAL_AND;
                // CEL: `false && error` is false, `true || error` is true,
                // whichever side the error is on.
                Ok(Box::new(move |ctx| {
                    let left = a(ctx);
                    if let Ok(Val::Bool(l)) = left
                        && l != is_and
                    {
                        return Ok(Val::Bool(l));
                    }
                    let right = b(ctx);
                    match (left, right) {
                        (_, Ok(Val::Bool(r))) if r != is_and => Ok(Val::Bool(r)),
                        (Ok(Val::Bool(_)), Ok(Val::Bool(r))) => Ok(Val::Bool(r)),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                        (Ok(x), Ok(y)) => Err(err(
                            "no_such_overload",
                            format!(
                                "`{}` takes booleans, not {} and {}",
                                if is_and { "&&" } else { "||" },
                                x.kind(),
                                y.kind()
                            ),
                        )),
                    }
                }))
            }
            (operators::CONDITIONAL, None, 3) => {
                let (c, t, f) = (self.expr(&args[0])?, self.expr(&args[1])?, self.expr(&args[2])?);
                Ok(Box::new(move |ctx| match c(ctx)? {
                    Val::Bool(true) => t(ctx),
                    Val::Bool(false) => f(ctx),
                    other => {
                        Err(err("no_such_overload", format!("`?:` takes a boolean, not {}", other.kind())))
                    }
                }))
            }
            (operators::LOGICAL_NOT, None, 1) => {
                let a = self.expr(&args[0])?;
                Ok(Box::new(move |ctx| match a(ctx)? {
                    Val::Bool(b) => Ok(Val::Bool(!b)),
                    other => {
                        Err(err("no_such_overload", format!("`!` takes a boolean, not {}", other.kind())))
                    }
                }))
            }
            (operators::NOT_STRICTLY_FALSE, None, 1) => {
                let a = self.expr(&args[0])?;
                Ok(Box::new(move |ctx| Ok(Val::Bool(!matches!(a(ctx), Ok(Val::Bool(false)))))))
            }
            (operators::NEGATE, None, 1) => {
                let a = self.expr(&args[0])?;
                Ok(Box::new(move |ctx| match a(ctx)? {
                    Val::Int(n) => {
                        n.checked_neg().map(Val::Int).ok_or_else(|| err("overflow", "integer overflow"))
                    }
                    Val::Double(f) => Ok(Val::Double(-f)),
                    Val::Duration(d) => Ok(Val::Duration(-d)),
                    other => Err(err("no_such_overload", format!("cannot negate {}", other.kind()))),
                }))
            }
            (operators::EQUALS | operators::NOT_EQUALS, None, 2) => {
                let negate = name == operators::NOT_EQUALS;
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| Ok(Val::Bool(equal(&a(ctx)?, &b(ctx)?) != negate))))
            }
            (
                operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
                None,
                2,
            ) => {
                let test: fn(Ordering) -> bool = match name {
                    operators::LESS => Ordering::is_lt,
                    operators::LESS_EQUALS => Ordering::is_le,
                    operators::GREATER => Ordering::is_gt,
                    _ => Ordering::is_ge,
                };
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| Ok(Val::Bool(test(value::compare(&a(ctx)?, &b(ctx)?)?)))))
            }
            (operators::ADD, None, 2) => {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| value::add(a(ctx)?, b(ctx)?)))
            }
            (operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO, None, 2) => {
                let op = match name {
                    operators::SUBSTRACT => '-',
                    operators::MULTIPLY => '*',
                    operators::DIVIDE => '/',
                    _ => '%',
                };
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| value::arith(op, a(ctx)?, b(ctx)?)))
            }
            (operators::INDEX, None, 2) => {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| index(a(ctx)?, b(ctx)?)))
            }
            (operators::IN, None, 2) => {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Box::new(move |ctx| {
                    let (x, within) = (a(ctx)?, b(ctx)?);
                    match &within {
                        Val::JsonList(_) | Val::List(_) => Ok(Val::Bool(
                            within.list_items().unwrap_or_default().iter().any(|i| equal(i, &x)),
                        )),
                        Val::JsonMap(_) | Val::Map(_) => Ok(Val::Bool(within.get(&x).is_some())),
                        other => Err(err(
                            "no_such_overload",
                            format!("`in` takes a list or a map, not {}", other.kind()),
                        )),
                    }
                }))
            }
            _ => self.function(name, target, args),
        }
    }

    fn function(
        &mut self,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> std::result::Result<Node, String> {
        let name: &'static str = lit(name);
        // `x.f(y)` and `f(x, y)` are the same call for these.
        let mut all: Vec<&IdedExpr> = target.into_iter().collect();
        all.extend(args.iter());
        let arity = all.len();
        let arg = |c: &mut Compiler, i: usize| c.expr(all[i]);
        match (name, arity) {
            ("size", 1) => {
                let a = arg(self, 0)?;
                Ok(Box::new(move |ctx| {
                    let v = a(ctx)?;
                    v.size()
                        .map(|n| Val::Int(n as i64))
                        .ok_or_else(|| err("no_such_overload", format!("no size of {}", v.kind())))
                }))
            }
            ("startsWith" | "endsWith" | "contains", 2) => {
                let (a, b) = (arg(self, 0)?, arg(self, 1)?);
                let f: fn(&str, &str) -> bool = match name {
                    "startsWith" => |s, p| s.starts_with(p),
                    "endsWith" => |s, p| s.ends_with(p),
                    _ => |s, p| s.contains(p),
                };
                Ok(Box::new(move |ctx| match (a(ctx)?, b(ctx)?) {
                    (Val::Str(s), Val::Str(p)) => Ok(Val::Bool(f(&s, &p))),
                    (x, y) => {
                        Err(err("no_such_overload", format!("no {name} for {} and {}", x.kind(), y.kind())))
                    }
                }))
            }
            ("matches", 2) => {
                let a = arg(self, 0)?;
                // A literal pattern is compiled once, here.
                if let Ast::Literal(LiteralValue::String(p)) = &all[1].expr {
                    let re = Regex::new(p.inner()).map_err(|e| format!("invalid pattern: {e}"))?;
                    return Ok(Box::new(move |ctx| match a(ctx)? {
                        Val::Str(s) => Ok(Val::Bool(re.is_match(&s))),
                        other => Err(err("no_such_overload", format!("no matches for {}", other.kind()))),
                    }));
                }
                let b = arg(self, 1)?;
                Ok(Box::new(move |ctx| match (a(ctx)?, b(ctx)?) {
                    (Val::Str(s), Val::Str(p)) => {
                        let re = Regex::new(&p)
                            .map_err(|e| err("invalid_argument", format!("invalid pattern: {e}")))?;
                        Ok(Val::Bool(re.is_match(&s)))
                    }
                    (x, y) => {
                        Err(err("no_such_overload", format!("no matches for {} and {}", x.kind(), y.kind())))
                    }
                }))
            }
            ("lowerAscii" | "upperAscii" | "trim", 1) => {
                let a = arg(self, 0)?;
                let f: fn(&str) -> String = match name {
                    "lowerAscii" => |s| s.to_ascii_lowercase(),
                    "upperAscii" => |s| s.to_ascii_uppercase(),
                    _ => |s| s.trim().to_string(),
                };
                Ok(Box::new(move |ctx| match a(ctx)? {
                    Val::Str(s) => Ok(Val::Str(Cow::Owned(f(&s)))),
                    other => Err(err("no_such_overload", format!("no {name} for {}", other.kind()))),
                }))
            }
            ("int" | "uint" | "double" | "string" | "bool" | "timestamp" | "duration", 1) => {
                let a = arg(self, 0)?;
                let to: for<'v> fn(Val<'v>) -> Result<'v> = match name {
                    "int" => to_int,
                    "uint" => to_uint,
                    "double" => to_double,
                    "string" => to_string,
                    "bool" => to_bool,
                    "timestamp" => to_timestamp,
                    _ => to_duration,
                };
                Ok(Box::new(move |ctx| to(a(ctx)?)))
            }
            _ => Err(format!("unknown function `{name}` with {arity} argument(s)")),
        }
    }
}

fn literal(l: &LiteralValue) -> Node {
    match l {
        LiteralValue::Boolean(b) => {
            let b = *b.inner();
            Box::new(move |_| Ok(Val::Bool(b)))
        }
        LiteralValue::Int(n) => {
            let n = *n.inner();
            Box::new(move |_| Ok(Val::Int(n)))
        }
        LiteralValue::UInt(n) => {
            let n = *n.inner();
            Box::new(move |_| Ok(Val::UInt(n)))
        }
        LiteralValue::Double(f) => {
            let f = *f.inner();
            Box::new(move |_| Ok(Val::Double(f)))
        }
        LiteralValue::String(s) => {
            let s = lit(s.inner());
            Box::new(move |_| Ok(Val::Str(Cow::Borrowed(s))))
        }
        LiteralValue::Bytes(b) => {
            let b = b.inner().to_vec();
            Box::new(move |_| Ok(Val::Bytes(Rc::new(b.clone()))))
        }
        LiteralValue::Null => Box::new(|_| Ok(Val::Null)),
    }
}

/// `data.a.b` as ("data", ["a", "b"]); `None` for anything else.
fn static_path(e: &IdedExpr) -> Option<(&str, Vec<&str>)> {
    let mut fields = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Ast::Select(s) => {
                // Only the outermost select may be a `has()` test.
                if s.test && !fields.is_empty() {
                    return None;
                }
                fields.push(s.field.as_str());
                cur = &s.operand;
            }
            Ast::Ident(name) => {
                fields.reverse();
                return Some((name.as_str(), fields));
            }
            _ => return None,
        }
    }
}

fn index<'a>(base: Val<'a>, key: Val<'a>) -> Result<'a> {
    match (&base, &key) {
        (Val::JsonList(_) | Val::List(_), Val::Int(_) | Val::UInt(_)) => {
            let i = match key {
                Val::Int(i) => i,
                Val::UInt(u) => u as i64,
                _ => 0,
            };
            let items = base.list_items().unwrap_or_default();
            usize::try_from(i).ok().and_then(|i| items.get(i).cloned()).ok_or_else(|| {
                err("index_out_of_range", format!("no element {i} in a list of {}", items.len()))
            })
        }
        (Val::JsonMap(_) | Val::Map(_), _) => {
            base.get(&key).ok_or_else(|| err("no_such_key", format!("no key {}", key.to_text())))
        }
        _ => Err(err("no_such_overload", format!("cannot index a {} with a {}", base.kind(), key.kind()))),
    }
}

fn to_int(v: Val<'_>) -> Result<'_> {
    Ok(Val::Int(match v {
        Val::Int(n) => n,
        Val::UInt(n) => i64::try_from(n).map_err(|_| err("overflow", "too large for int"))?,
        Val::Double(f) if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 => f.trunc() as i64,
        Val::Double(_) => return Err(err("overflow", "out of the range of int")),
        Val::Str(s) => {
            s.trim().parse().map_err(|_| err("invalid_argument", format!("`{s}` is not an int")))?
        }
        Val::Bool(b) => b as i64,
        Val::Timestamp(t) => t.div_euclid(1_000_000),
        other => return Err(err("no_such_overload", format!("no int of {}", other.kind()))),
    }))
}

fn to_uint(v: Val<'_>) -> Result<'_> {
    Ok(Val::UInt(match v {
        Val::UInt(n) => n,
        Val::Int(n) => u64::try_from(n).map_err(|_| err("overflow", "negative for uint"))?,
        Val::Double(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => f.trunc() as u64,
        Val::Double(_) => return Err(err("overflow", "out of the range of uint")),
        Val::Str(s) => {
            s.trim().parse().map_err(|_| err("invalid_argument", format!("`{s}` is not a uint")))?
        }
        other => return Err(err("no_such_overload", format!("no uint of {}", other.kind()))),
    }))
}

fn to_double(v: Val<'_>) -> Result<'_> {
    Ok(Val::Double(match v {
        Val::Double(f) => f,
        Val::Int(n) => n as f64,
        Val::UInt(n) => n as f64,
        Val::Str(s) => {
            s.trim().parse().map_err(|_| err("invalid_argument", format!("`{s}` is not a double")))?
        }
        other => return Err(err("no_such_overload", format!("no double of {}", other.kind()))),
    }))
}

fn to_string(v: Val<'_>) -> Result<'_> {
    Ok(match v {
        Val::Str(s) => Val::Str(s),
        Val::Bytes(b) => Val::Str(Cow::Owned(
            String::from_utf8(b.as_ref().clone())
                .map_err(|_| err("invalid_argument", "bytes that are not UTF-8"))?,
        )),
        v @ (Val::Int(_) | Val::UInt(_) | Val::Double(_) | Val::Bool(_) | Val::Timestamp(_)) => {
            let json = v.to_json()?;
            Val::Str(Cow::Owned(match json {
                Value::Str(s) => s.to_string(),
                other => serde_json::to_string(&other).unwrap_or_default(),
            }))
        }
        other => return Err(err("no_such_overload", format!("no string of {}", other.kind()))),
    })
}

fn to_bool(v: Val<'_>) -> Result<'_> {
    match v {
        Val::Bool(b) => Ok(Val::Bool(b)),
        Val::Str(s) => match s.as_ref() {
            "true" | "True" | "TRUE" | "t" | "1" => Ok(Val::Bool(true)),
            "false" | "False" | "FALSE" | "f" | "0" => Ok(Val::Bool(false)),
            _ => Err(err("invalid_argument", format!("`{s}` is not a bool"))),
        },
        other => Err(err("no_such_overload", format!("no bool of {}", other.kind()))),
    }
}

fn to_timestamp(v: Val<'_>) -> Result<'_> {
    match v {
        Val::Timestamp(t) => Ok(Val::Timestamp(t)),
        Val::Str(s) => crate::event::time::parse_rfc3339(&s)
            .map(Val::Timestamp)
            .ok_or_else(|| err("invalid_argument", format!("`{s}` is not an RFC 3339 time"))),
        Val::Int(secs) => secs
            .checked_mul(1_000_000)
            .map(Val::Timestamp)
            .ok_or_else(|| err("overflow", "time out of range")),
        other => Err(err("no_such_overload", format!("no timestamp of {}", other.kind()))),
    }
}

fn to_duration(v: Val<'_>) -> Result<'_> {
    match v {
        Val::Duration(d) => Ok(Val::Duration(d)),
        Val::Str(s) => {
            let (neg, text) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.as_ref()),
            };
            let d = humantime::parse_duration(text)
                .map_err(|_| err("invalid_argument", format!("`{s}` is not a duration")))?;
            let micros =
                i64::try_from(d.as_micros()).map_err(|_| err("overflow", "duration out of range"))?;
            Ok(Val::Duration(if neg { -micros } else { micros }))
        }
        other => Err(err("no_such_overload", format!("no duration of {}", other.kind()))),
    }
}
