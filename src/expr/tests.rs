//! The compiled expressions against the `cel` crate's interpreter, the
//! reference, on many expressions and events; and what CEL says of errors.

use super::*;
use crate::event::{EventId, Map, Str, Value};

fn event(data: &str, subject: Option<&'static str>) -> Event {
    let mut attrs = Map::new();
    attrs.insert(Str::from_static("sampledrate"), Value::Int(10));
    Event {
        id: EventId::Given(Str::from_static("ev-1")),
        time: 1_795_751_400_123_456,
        ty: Str::from_static("http.transaction"),
        source: Str::from_static("hostwatch://web-01/web"),
        subject: subject.map(Str::from_static),
        host: Str::from_static("web-01"),
        attrs,
        data: serde_json::from_str(data).unwrap(),
    }
}

fn events() -> Vec<Event> {
    vec![
        event(
            r#"{"status":503,"path":"/api/items","method":"GET","bytes":1234,"ratio":0.25,"tags":["a","b"],"req":{"headers":{"ua":"curl"}},"ok":false}"#,
            Some("/api/items"),
        ),
        event(
            r#"{"status":200,"path":"/health","method":"HEAD","bytes":0,"ratio":1.5,"tags":[],"req":{"headers":{}},"ok":true}"#,
            None,
        ),
        event(r#"{"status":"404","path":"","tags":["x"],"n":-7}"#, Some("")),
        event(r#"{}"#, Some("/x")),
    ]
}

/// The reference: the same event as variables of the `cel` interpreter.
fn reference(expr: &str, e: &Event) -> std::result::Result<serde_json::Value, String> {
    let program = cel::Program::compile(expr).map_err(|e| e.to_string())?;
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("type", e.ty.to_string());
    ctx.add_variable_from_value("source", e.source.to_string());
    ctx.add_variable_from_value("host", e.host.to_string());
    if let Some(s) = &e.subject {
        ctx.add_variable_from_value("subject", s.to_string());
    }
    if let EventId::Given(id) = &e.id {
        ctx.add_variable_from_value("id", id.to_string());
    }
    // Integers are ints, as hostwatch reads JSON (serde would make the
    // non-negative ones uints).
    fn to_cel(v: &Value) -> cel::Value {
        match v {
            Value::Null => cel::Value::Null,
            Value::Bool(b) => cel::Value::Bool(*b),
            Value::Int(n) => cel::Value::Int(*n),
            Value::Float(f) => cel::Value::Float(*f),
            Value::Str(s) => cel::Value::String(std::sync::Arc::new(s.to_string())),
            Value::Array(a) => cel::Value::List(std::sync::Arc::new(a.iter().map(to_cel).collect())),
            Value::Object(m) => {
                let map: std::collections::HashMap<cel::objects::Key, cel::Value> = m
                    .iter()
                    .map(|(k, v)| (cel::objects::Key::String(std::sync::Arc::new(k.to_string())), to_cel(v)))
                    .collect();
                cel::Value::Map(cel::objects::Map { map: std::sync::Arc::new(map) })
            }
        }
    }
    ctx.add_variable_from_value("data", to_cel(&e.data));
    ctx.add_variable_from_value("ext", to_cel(&Value::Object(e.attrs.clone())));
    let t = chrono::DateTime::from_timestamp_micros(e.time).unwrap().fixed_offset();
    ctx.add_variable_from_value("time", cel::Value::Timestamp(t));
    let value = program.execute(&ctx).map_err(|e| e.to_string())?;
    from_cel(&value).ok_or_else(|| format!("cannot compare {value:?}"))
}

fn from_cel(v: &cel::Value) -> Option<serde_json::Value> {
    use cel::Value as C;
    Some(match v {
        C::Null => serde_json::Value::Null,
        C::Bool(b) => (*b).into(),
        C::Int(n) => (*n).into(),
        C::UInt(n) => (*n).into(),
        C::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number)?,
        C::String(s) => s.as_str().into(),
        C::List(l) => serde_json::Value::Array(l.iter().map(from_cel).collect::<Option<_>>()?),
        C::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m.map.iter() {
                let cel::objects::Key::String(k) = k else { return None };
                out.insert(k.to_string(), from_cel(v)?);
            }
            serde_json::Value::Object(out)
        }
        _ => return None,
    })
}

fn ours(expr: &str, e: &Event) -> std::result::Result<serde_json::Value, String> {
    let compiled = Expr::compile(expr).map_err(|e| e.to_string())?;
    let v = compiled.eval(e).map_err(|e| e.to_string())?;
    let json = v.to_json().map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(&json).unwrap())
}

const EXPRESSIONS: &[&str] = &[
    r#"type == "http.transaction" && data.status >= 500"#,
    r#"data.path.startsWith("/health")"#,
    r#"data.path != "/health""#,
    r#"data.status >= 500 || data.path == "/health""#,
    r#"!(data.status < 400)"#,
    r#"data.status == 503"#,
    r#"data.status == 503.0"#,
    r#"data.ratio > 0.5"#,
    r#"data.bytes + 1"#,
    r#"data.bytes * 2 - 3"#,
    r#"data.bytes / 2"#,
    r#"data.bytes % 7"#,
    r#"data.ratio * 2.0"#,
    r#"-data.n"#,
    r#"data.method + " " + data.path"#,
    r#"size(data.path)"#,
    r#"data.path.size()"#,
    r#"size(data.tags)"#,
    r#"size(data)"#,
    r#""a" in data.tags"#,
    r#""status" in data"#,
    r#"data.tags[0]"#,
    r#"data["path"]"#,
    r#"data.req.headers.ua"#,
    r#"data.req.headers["ua"] == "curl""#,
    r#"has(data.status)"#,
    r#"has(data.req.headers.ua)"#,
    r#"has(data.nothing)"#,
    r#"data.nothing == 1"#,
    r#"data.nothing == 1 && false"#,
    r#"false && data.nothing == 1"#,
    r#"data.nothing == 1 || true"#,
    r#"data.status > 100 ? "big" : "small""#,
    r#"data.path.endsWith("items")"#,
    r#"data.path.contains("pi/i")"#,
    r#"data.path.matches("^/api/[a-z]+$")"#,
    r#"data.tags.exists(t, t == "b")"#,
    r#"data.tags.all(t, t.size() == 1)"#,
    r#"data.tags.exists_one(t, t == "a")"#,
    r#"data.tags.map(t, t + "!")"#,
    r#"data.tags.filter(t, t != "a")"#,
    r#"[1, 2, 3].map(x, x * 2)"#,
    r#"{"a": 1}.a"#,
    r#"int(data.status) + 1"#,
    r#"string(data.status)"#,
    r#"double(data.bytes) / 1000.0"#,
    r#"int("42") == 42"#,
    r#"1 / 0"#,
    r#"9223372036854775807 + 1"#,
    r#"data.ok == false"#,
    r#"!data.ok"#,
    r#"data.ok && data.status == 200"#,
    r#"subject == "/api/items""#,
    r#"host == "web-01" && source.endsWith("/web")"#,
    r#"id"#,
    r#"ext.sampledrate == 10"#,
    r#"time > timestamp("2026-01-01T00:00:00Z")"#,
    r#"time - duration("1h") < time"#,
    r#"data.status in [500, 503]"#,
    r#"data.path == null"#,
    r#"null == null"#,
    r#"data.missing.deeper"#,
    r#"data.tags[5]"#,
    r#"uint(3) == 3"#,
    r#""abc" < "abd""#,
    r#"[1, 2] + [3]"#,
    r#"data.status == "404""#,
];

#[test]
fn agrees_with_the_reference_interpreter() {
    let mut compared = 0;
    for expr in EXPRESSIONS {
        for (i, e) in events().iter().enumerate() {
            let (mine, theirs) = (ours(expr, e), reference(expr, e));
            match (&mine, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "`{expr}` on event {i}"),
                (Err(_), Err(_)) => {}
                _ => panic!("`{expr}` on event {i}: ours {mine:?}, reference {theirs:?}"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, EXPRESSIONS.len() * 4);
}

#[test]
fn errors_and_positions() {
    let e = Expr::compile("data.status >= ").unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.line, 1);
    assert!(e.column > 1, "{e}");
    let e = Expr::compile("dta.status == 1").unwrap_err();
    assert!(e.message.contains("unknown name `dta`"), "{e}");
    let e = Expr::compile(r#"data.path.matches("(")"#).unwrap_err();
    assert!(e.message.contains("invalid pattern"), "{e}");
    let e = Expr::compile("frobnicate(1)").unwrap_err();
    assert!(e.message.contains("unknown function"), "{e}");

    let ev = &events()[3];
    let err = Expr::compile("data.status >= 500").unwrap().test(ev).unwrap_err();
    assert_eq!(err.reason, "no_such_field");
    let err = Expr::compile("data").unwrap().test(ev).unwrap_err();
    assert_eq!(err.reason, "not_a_condition");
}
