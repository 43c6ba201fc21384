//! Expressions: CEL (the Common Expression Language of Kubernetes and
//! Envoy) over events.
//!
//! The `cel` crate parses; this module compiles the parsed expression once
//! into a tree of closures that read hostwatch's own events directly: no
//! per-event conversion into the interpreter's values, no map built per
//! event, strings borrowed from the event. The names an expression sees are
//! the event's attributes: `id`, `type`, `source`, `subject`, `time`, `host`,
//! `data`, and `ext` (the extension attributes, e.g. `ext.sampledrate`).
//!
//! Supported: literals, lists and maps; `.` and `[]`; `has()`; the
//! operators `! - * / % + - < <= > >= == != in && || ?:`; `size`,
//! `startsWith`, `endsWith`, `contains`, `matches`, `lowerAscii`,
//! `upperAscii`, `trim`; conversions `int`, `uint`, `double`, `string`,
//! `bool`, `timestamp`, `duration`; and the macros `all`, `exists`,
//! `exists_one`, `map`, `filter`. Errors (a missing field, a type mismatch)
//! are values of their own, absorbed by `&&` and `||` as CEL says.

mod compile;
mod value;

use std::cell::RefCell;
use std::fmt;

pub use self::value::Val;
use crate::event::Event;

/// Why an expression could not be evaluated on an event. The reason is a
/// fixed word, for counting.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalError {
    pub reason: &'static str,
    pub detail: String,
}

impl EvalError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        EvalError { reason, detail: detail.into() }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

pub type Result<'a> = std::result::Result<Val<'a>, EvalError>;

/// What an expression is evaluated against.
pub struct Ctx<'a> {
    pub event: &'a Event,
    /// Variables of the macros (`x` in `list.all(x, x > 0)`), by slot.
    slots: RefCell<Vec<Val<'a>>>,
}

impl<'a> Ctx<'a> {
    pub fn new(event: &'a Event) -> Self {
        Ctx { event, slots: RefCell::new(Vec::new()) }
    }
}

type Node = Box<dyn for<'a> Fn(&Ctx<'a>) -> Result<'a> + Send + Sync>;

/// A compiled expression.
pub struct Expr {
    source: String,
    root: Node,
    slots: usize,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// An expression that does not compile: where in it, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileError {
    /// 1-based line and column inside the expression, when known.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {} of the expression: {}", self.line, self.column, self.message)
    }
}

impl Expr {
    pub fn compile(source: &str) -> std::result::Result<Expr, CompileError> {
        let ast = cel::parser::Parser::new().parse(source).map_err(|errors| {
            let first = errors.errors.into_iter().next();
            match first {
                Some(e) => CompileError {
                    line: e.pos.0.max(1) as usize,
                    column: e.pos.1.max(1) as usize,
                    message: e.msg,
                },
                None => CompileError { line: 1, column: 1, message: "invalid expression".to_string() },
            }
        })?;
        let mut compiler = compile::Compiler::default();
        let root = compiler.expr(&ast).map_err(|message| CompileError { line: 1, column: 1, message })?;
        Ok(Expr { source: source.to_string(), root, slots: compiler.slots })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates on an event.
    pub fn eval<'a>(&self, event: &'a Event) -> Result<'a> {
        let ctx = Ctx::new(event);
        if self.slots > 0 {
            ctx.slots.borrow_mut().resize(self.slots, Val::Null);
        }
        (self.root)(&ctx)
    }

    /// Evaluates a condition: true, false, or an error (also when the value
    /// is not a boolean).
    pub fn test(&self, event: &Event) -> std::result::Result<bool, EvalError> {
        match self.eval(event)? {
            Val::Bool(b) => Ok(b),
            other => Err(EvalError::new(
                "not_a_condition",
                format!("the expression gave {}, not a boolean", other.kind()),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
