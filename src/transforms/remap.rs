//! `remap`: changes events: sets fields to computed values, renames and
//! removes fields, sets the type. Applied in that order.

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::{BuildError, Spanned};
use crate::event::path::FieldPath;
use crate::event::{Event, EventBatch, Map, Str, Value};
use crate::expr::{EvalError, Expr};
use crate::pipeline::metrics::DropReason;
use crate::transforms::common::{OnError, Outputs};

/// `type: remap`
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fields to set (`data.x`, `subject`, or an extension attribute) and
    /// the CEL expressions that compute them. Default: none.
    #[serde(default)]
    pub set: IndexMap<Spanned<String>, Spanned<String>>,
    /// Fields to move: `{data.old: data.new}`. Default: none.
    #[serde(default)]
    pub rename: IndexMap<Spanned<String>, Spanned<String>>,
    /// Fields to remove. Default: none.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
    /// A new CloudEvents `type`. Default: unchanged.
    #[serde(default, rename = "type")]
    pub new_type: Option<String>,
    /// When an expression of `set` cannot be evaluated: `keep` the event
    /// (without that field) or `drop` it. Default: `keep`.
    #[serde(default)]
    pub on_error: OnError,
}

/// Where a value can be written.
enum Target {
    Subject,
    Attr(Str),
    Data(Vec<Str>),
}

impl Target {
    fn parse(text: &Spanned<String>) -> Result<Target, BuildError> {
        let path = FieldPath::parse(&text.value).map_err(|e| BuildError::at(text.pos, e))?;
        Ok(match path {
            FieldPath::Subject => Target::Subject,
            FieldPath::Data(p) if !p.is_empty() => Target::Data(p.iter().map(|s| Str::interned(s)).collect()),
            FieldPath::Attr(a) if crate::event::decode::valid_extension_name(&a) => {
                Target::Attr(Str::interned(&a))
            }
            other => {
                return Err(BuildError::at(
                    text.pos,
                    format!(
                        "`{other}` cannot be changed here: use data.<field>, subject or an extension attribute"
                    ),
                ));
            }
        })
    }

    fn set(&self, event: &mut Event, value: Value) {
        match self {
            Target::Subject => event.subject = value.as_str().map(Str::from),
            Target::Attr(name) => {
                event.attrs.insert(name.clone(), value);
            }
            Target::Data(path) => {
                if !matches!(event.data, Value::Object(_)) {
                    event.data = Value::Object(Map::new());
                }
                let mut cur = &mut event.data;
                for (i, key) in path.iter().enumerate() {
                    let Value::Object(map) = cur else { return };
                    if i + 1 == path.len() {
                        map.insert(key.clone(), value);
                        return;
                    }
                    if !matches!(map.get(key), Some(Value::Object(_))) {
                        map.insert(key.clone(), Value::Object(Map::new()));
                    }
                    let Some(next) = map.get_mut(key) else { return };
                    cur = next;
                }
            }
        }
    }

    fn take(&self, event: &mut Event) -> Option<Value> {
        match self {
            Target::Subject => event.subject.take().map(Value::Str),
            Target::Attr(name) => event.attrs.remove(name),
            Target::Data(path) => {
                let (last, parents) = path.split_last()?;
                let mut cur = &mut event.data;
                for key in parents {
                    cur = cur.as_object_mut()?.get_mut(key)?;
                }
                cur.as_object_mut()?.remove(last)
            }
        }
    }
}

pub struct Remap {
    set: Vec<(Target, Expr)>,
    rename: Vec<(Target, Target)>,
    remove: Vec<Target>,
    new_type: Option<Str>,
    on_error: OnError,
}

impl Remap {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let mut set = Vec::new();
        for (target, expr) in &config.set {
            set.push((Target::parse(target)?, super::common::compile(expr)?));
        }
        let mut rename = Vec::new();
        for (from, to) in &config.rename {
            rename.push((Target::parse(from)?, Target::parse(to)?));
        }
        let remove = config.remove.iter().map(Target::parse).collect::<Result<_, _>>()?;
        Ok(Remap {
            set,
            rename,
            remove,
            new_type: config.new_type.as_deref().map(Str::interned),
            on_error: config.on_error,
        })
    }

    pub fn process(&mut self, mut batch: EventBatch, out: &mut Outputs) {
        let mut failed: Vec<bool> = Vec::new();
        let mut errors: Vec<EvalError> = Vec::new();
        batch.update(|events| {
            for event in events.iter_mut() {
                let mut ok = true;
                for (target, expr) in &self.set {
                    match expr.eval(event).and_then(|v| v.to_json()) {
                        Ok(value) => target.set(event, value),
                        Err(e) => {
                            errors.push(e);
                            ok = false;
                        }
                    }
                }
                for (from, to) in &self.rename {
                    if let Some(v) = from.take(event) {
                        to.set(event, v);
                    }
                }
                for target in &self.remove {
                    target.take(event);
                }
                if let Some(ty) = &self.new_type {
                    event.ty = ty.clone();
                }
                failed.push(!ok);
            }
        });
        for e in &errors {
            out.error(e);
        }
        if self.on_error == OnError::Drop && failed.contains(&true) {
            let before = batch.len();
            let mut i = 0;
            batch.retain(|_| {
                i += 1;
                !failed[i - 1]
            });
            out.metrics.add_dropped(DropReason::Filtered, before - batch.len());
        }
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use crate::event::Value;
    use crate::transforms::tests::{batch_of, refused, run0};

    #[test]
    fn sets_renames_removes_and_retypes() {
        let settings = r#"
set:
  data.kind: 'data.status >= 500 ? "error" : "ok"'
  data.request.line: 'data.method + " " + data.path'
  subject: 'data.path'
  ext.team: '"payments"'
rename:
  data.ms: data.duration_ms
remove: [data.secret]
type: http.summary
"#;
        let batch = batch_of(&[r#"{"status":503,"method":"GET","path":"/a","ms":7,"secret":"x"}"#]);
        let (events, _) = run0("remap", settings, batch);
        let e = &events[0];
        let data = e.data.as_object().unwrap();
        assert_eq!(data.get("kind"), Some(&Value::from("error")));
        assert_eq!(
            data.get("request").unwrap().as_object().unwrap().get("line"),
            Some(&Value::from("GET /a"))
        );
        assert_eq!(data.get("duration_ms"), Some(&Value::Int(7)));
        assert!(data.get("ms").is_none() && data.get("secret").is_none());
        assert_eq!(e.subject.as_deref(), Some("/a"));
        assert_eq!(e.attrs.get("team"), Some(&Value::from("payments")));
        assert_eq!(e.ty, "http.summary");
    }

    #[test]
    fn errors_keep_or_drop() {
        let (events, m) = run0("remap", "set:\n  data.x: 'data.nope + 1'", batch_of(&[r#"{"a":1}"#]));
        assert_eq!(events.len(), 1);
        assert_eq!(m.errors(), vec![("no_such_field", 1)]);
        let (events, _) =
            run0("remap", "set:\n  data.x: 'data.nope + 1'\non_error: drop", batch_of(&[r#"{"a":1}"#]));
        assert!(events.is_empty());
        assert!(refused("remap", "set:\n  type: '\"x\"'").contains("cannot be changed here"));
    }
}
