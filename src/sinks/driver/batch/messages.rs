//! Events as broker messages (the CloudEvents protocol bindings): where
//! each message's value lies in a batch's body, with its key and, in binary
//! mode, its attributes.

use serde::Deserialize;

use super::each::EachCompressor;
use crate::event::encode::{self, Encoder};
use crate::event::path::FieldPath;
use crate::event::{Event, EventId, Value, id, time};

/// How a broker message carries an event (the CloudEvents protocol
/// bindings): the whole structured CloudEvent as the message body, or the
/// event's `data` as the body and its attributes as the message's headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Structured,
    Binary,
}

/// How a sink wants its events framed when it publishes each on its own.
#[derive(Clone, Debug)]
pub struct Framing {
    pub mode: Mode,
    /// A field whose text becomes each message's key.
    pub key: Option<FieldPath>,
}

/// The framing of a batch's messages. Values are concatenated in the body;
/// keys and attributes share one text buffer.
#[derive(Debug, Default)]
pub struct Messages {
    pub(super) items: Vec<Item>,
    pub(super) attrs: Vec<Attr>,
    pub(super) text: String,
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) value_end: u32,
    pub(super) key: Option<(u32, u32)>,
    pub(super) attrs_end: u32,
}

/// An attribute: name and value as ranges of the text buffer.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    name: (u32, u32),
    value: (u32, u32),
}

/// One event as a message.
pub struct Message<'a> {
    pub value: &'a [u8],
    pub key: Option<&'a str>,
    pub(super) attrs: &'a [Attr],
    pub(super) text: &'a str,
}

impl<'a> Message<'a> {
    /// Binary mode: the CloudEvents attributes by their names (`id`,
    /// `source`, `specversion`, `type`, `time`, `subject`, `datacontenttype`,
    /// extensions), as text. Each sink adds its binding's prefix.
    pub fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let text = self.text;
        self.attrs.iter().map(move |a| {
            (&text[a.name.0 as usize..a.name.1 as usize], &text[a.value.0 as usize..a.value.1 as usize])
        })
    }
}

/// The content type of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

impl Messages {
    pub(super) fn mark(&self) -> (usize, usize, usize) {
        (self.items.len(), self.attrs.len(), self.text.len())
    }

    pub(super) fn rollback(&mut self, (items, attrs, text): (usize, usize, usize)) {
        self.items.truncate(items);
        self.attrs.truncate(attrs);
        self.text.truncate(text);
    }

    fn attr(&mut self, name: &str, value: impl FnOnce(&mut String)) {
        let n0 = self.text.len() as u32;
        self.text.push_str(name);
        let n1 = self.text.len() as u32;
        value(&mut self.text);
        self.attrs.push(Attr { name: (n0, n1), value: (n1, self.text.len() as u32) });
    }

    /// Encodes one event: its value into `body`, the rest here.
    pub(super) fn add(
        &mut self,
        framing: &Framing,
        encoder: &mut Encoder,
        event: &Event,
        body: &mut Vec<u8>,
    ) {
        match framing.mode {
            Mode::Structured => encoder.structured(event, body),
            Mode::Binary => {
                let base64_data = binary_data(event, body);
                self.binary_attributes(event, base64_data);
            }
        }
        let key = framing.key.as_ref().and_then(|path| {
            let field = path.get(event)?;
            let start = self.text.len() as u32;
            field.write_to(&mut self.text);
            Some((start, self.text.len() as u32))
        });
        self.items.push(Item { value_end: body.len() as u32, key, attrs_end: self.attrs.len() as u32 });
    }

    /// `base64_data`: the event's `data_base64` went into the body, decoded.
    fn binary_attributes(&mut self, e: &Event, base64_data: bool) {
        // The id and time are formatted as bytes; one buffer serves every event.
        let mut scratch = std::mem::take(&mut self.scratch);
        self.attr("specversion", |t| t.push_str("1.0"));
        self.attr("id", |t| match &e.id {
            EventId::Generated(n) => {
                scratch.clear();
                id::format_id(*n, &mut scratch);
                t.push_str(std::str::from_utf8(&scratch).unwrap_or_default());
            }
            EventId::Given(s) => t.push_str(s),
        });
        self.attr("source", |t| t.push_str(&e.source));
        self.attr("type", |t| t.push_str(&e.ty));
        self.attr("time", |t| {
            scratch.clear();
            time::format_rfc3339(e.time, &mut scratch);
            t.push_str(std::str::from_utf8(&scratch).unwrap_or_default());
        });
        self.scratch = scratch;
        if let Some(subject) = &e.subject {
            self.attr("subject", |t| t.push_str(subject));
        }
        self.attr("host", |t| t.push_str(&e.host));
        if e.attrs.get("datacontenttype").is_none() && !matches!(e.data, Value::Null) {
            self.attr("datacontenttype", |t| t.push_str("application/json"));
        }
        for (k, v) in e.attrs.iter() {
            if base64_data && k.as_str() == "data_base64" {
                continue;
            }
            self.attr(k, |t| match v {
                Value::Str(s) => t.push_str(s),
                other => t.push_str(&serde_json::to_string(other).unwrap_or_default()),
            });
        }
    }
}

/// Writes a binary-mode message's body: the event's data as its
/// `datacontenttype` says, so JSON data as JSON, text as the text itself,
/// and `data_base64` as the bytes it stands for. Returns whether the body
/// holds `data_base64`'s bytes.
fn binary_data(event: &Event, body: &mut Vec<u8>) -> bool {
    let json = match event.attrs.get("datacontenttype") {
        Some(Value::Str(ct)) => {
            let ct = ct.split(';').next().unwrap_or_default().trim();
            ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
        }
        _ => true,
    };
    match (&event.data, event.attrs.get("data_base64")) {
        (Value::Null, Some(Value::Str(b64))) => {
            use base64::Engine as _;
            let before = body.len();
            let ok = base64::engine::general_purpose::STANDARD.decode_vec(b64.as_bytes(), body).is_ok();
            if !ok {
                // Not base64 after all: it stays an attribute.
                body.truncate(before);
            }
            ok
        }
        (Value::Null, _) => false,
        (Value::Str(text), _) if !json => {
            body.extend_from_slice(text.as_bytes());
            false
        }
        (data, _) => {
            encode::write_value(body, data);
            false
        }
    }
}

/// Compresses each message of a batch on its own; the messages' ends move
/// to where they lie in the new body.
pub(super) fn compress_each(
    each: &mut EachCompressor,
    m: &mut Messages,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    let mut ends = Vec::with_capacity(m.items.len());
    let mut start = 0usize;
    for item in &m.items {
        let end = item.value_end as usize;
        each.compress(&body[start..end], &mut out)?;
        start = end;
        ends.push(out.len() as u32);
    }
    // Only now: a failure above leaves the messages as they were, so that
    // the batch can go out uncompressed.
    for (item, end) in m.items.iter_mut().zip(ends) {
        item.value_end = end;
    }
    Ok(out)
}
