//! Webhook bodies -> [`Event`]s: the pure part of the webhook, with no HTTP, no async and
//! no `daemon` feature, so that a fuzz target can call [`decode`] directly.
//!
//! Accepted bodies (the formats log shippers and CI scripts send):
//!
//! - **JSON** (`application/json`, any `+json`): one event object, or an array of them
//!   (Vector's and Fluent Bit's `json` codecs). Several top-level values in a row are
//!   accepted as well.
//! - **NDJSON** (`application/x-ndjson` and its aliases): one value per line (Vector's
//!   `newline_delimited` framing, Fluent Bit's `json_lines`).
//! - **Text** (`text/plain`): every non-empty line is an event; bytes as they are, invalid
//!   UTF-8 included.
//! - No `Content-Type`, `application/x-www-form-urlencoded` (curl's `-d` default) or
//!   `application/octet-stream`: JSON if the body starts with `{` or `[`, else text.
//!
//! An event object's line is its `error` field, else `message`, else `msg`, else `log`
//! (Fluent Bit); a field that is not a string counts as its JSON text, and an object with
//! none of them is its own JSON text (the reference used the whole object). `log_key` (the
//! reference's name) or `pact_key` is the key used when the line carries none, and
//! `event_id` (a string or an integer) makes retries idempotent. A JSON string is also an
//! event (its text). Unknown fields are ignored.
//!
//! `Content-Encoding: gzip` (and `deflate`, zlib) bodies are decompressed as a stream with
//! a cap: the limit applies to the decompressed size, so a gzip bomb costs at most
//! [`Limits::max_body_bytes`] plus one chunk. JSON nesting is bounded by serde_json's
//! recursion limit (128).
//!
//! Every failure is a [`DecodeError`] naming the problem (line and column, which element),
//! with an HTTP status ([`DecodeError::status`]) and a stable code ([`DecodeError::code`]).
//!
//! Design: each top-level value (or array element) is first delimited as a
//! [`RawValue`] and then read field by field without building a `serde_json::Value`; strings
//! without escapes are borrowed from the body. The cost is one extra validation pass over
//! each value, which keeps the code free of position bookkeeping and gives the "whole object
//! as text" fallback for free.

use std::borrow::Cow;
use std::io::Read;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::aggregate::Event;

/// The default largest body, in bytes, after decompression.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The default largest number of events in one request.
pub const MAX_EVENTS: usize = 10_000;
/// The default longest `event_id`, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 256;
/// Decompression reads (and asks for memory) in steps of this many bytes.
pub const DECOMPRESS_CHUNK: usize = 64 << 10;

/// What one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest body, in bytes, after decompression (default [`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// The most events (default [`MAX_EVENTS`]).
    pub max_events: usize,
    /// The longest `event_id` in bytes (default [`MAX_EVENT_ID_BYTES`]).
    pub max_event_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: MAX_BODY_BYTES,
            max_events: MAX_EVENTS,
            max_event_id_bytes: MAX_EVENT_ID_BYTES,
        }
    }
}

impl Limits {
    /// The defaults with another body limit.
    pub fn with_max_body_bytes(mut self, n: usize) -> Limits {
        self.max_body_bytes = n;
        self
    }

    /// The defaults with another event limit.
    pub fn with_max_events(mut self, n: usize) -> Limits {
        self.max_events = n;
        self
    }
}

/// How a body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// JSON: an event, an array of events, or several of those in a row.
    Json,
    /// Newline-delimited JSON (read like [`Format::Json`]: whitespace separates values).
    Ndjson,
    /// Plain text: one event per non-empty line.
    Text,
    /// Unspecified: JSON if the body starts with `{` or `[`, text otherwise.
    Sniff,
}

impl Format {
    /// The format of a `Content-Type` header value (parameters such as `charset` ignored).
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnsupportedMediaType`] for anything else (msgpack, protobuf, forms
    /// with a body that is not JSON are read as [`Format::Sniff`]).
    pub fn from_content_type(value: Option<&str>) -> Result<Format, DecodeError> {
        let Some(value) = value else {
            return Ok(Format::Sniff);
        };
        let essence = value.split(';').next().unwrap_or("").trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        Ok(
            if is("application/json") || ends_with_ignore_case(essence, "+json") {
                Format::Json
            } else if [
                "application/x-ndjson",
                "application/ndjson",
                "application/jsonl",
                "application/x-jsonl",
                "application/jsonlines",
                "application/x-jsonlines",
                "application/json-lines",
            ]
            .iter()
            .any(|n| is(n))
            {
                Format::Ndjson
            } else if is("text/plain") {
                Format::Text
            } else if essence.is_empty()
                || is("application/x-www-form-urlencoded")
                || is("application/octet-stream")
            {
                Format::Sniff
            } else {
                return Err(DecodeError::UnsupportedMediaType(truncate(value)));
            },
        )
    }
}

/// A body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// As sent.
    Identity,
    /// gzip (RFC 1952), several members allowed.
    Gzip,
    /// HTTP `deflate`: zlib (RFC 1950).
    Deflate,
}

impl Encoding {
    /// The encoding of a `Content-Encoding` header value.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnsupportedEncoding`] for anything else (zstd, br, snappy, chains).
    pub fn from_header(value: Option<&str>) -> Result<Encoding, DecodeError> {
        let v = value.unwrap_or("").trim();
        if v.is_empty() || v.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else if v.eq_ignore_ascii_case("deflate") {
            Ok(Encoding::Deflate)
        } else {
            Err(DecodeError::UnsupportedEncoding(truncate(v)))
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body, or what it decompresses to, is over [`Limits::max_body_bytes`].
    #[error("the body is larger than {limit} bytes{}", if *decompressed { " once decompressed" } else { "" })]
    TooLarge {
        /// The limit.
        limit: usize,
        /// Whether the decompressed size was over (the body itself was not).
        decompressed: bool,
    },
    /// More than [`Limits::max_events`] events.
    #[error("more than {limit} events in one request; split the batch")]
    TooManyEvents {
        /// The limit.
        limit: usize,
    },
    /// A `Content-Type` this decoder does not read.
    #[error(
        "unsupported Content-Type {0:?}: send application/json, application/x-ndjson or text/plain"
    )]
    UnsupportedMediaType(String),
    /// A `Content-Encoding` this decoder does not read.
    #[error("unsupported Content-Encoding {0:?}: send gzip, deflate or identity")]
    UnsupportedEncoding(String),
    /// The body is not valid compressed data.
    #[error("the body is not valid {encoding} data: {message}")]
    BadCompression {
        /// `gzip` or `deflate`.
        encoding: &'static str,
        /// What the decompressor said.
        message: String,
    },
    /// Malformed JSON, or valid JSON that is not an event (a number, a nested array, a
    /// key that is not a string ...).
    #[error(
        "{}{}: {message} at line {line} column {column}",
        if *syntax { "invalid JSON" } else { "not an event" },
        match element { Some(i) => format!(" (element {i})"), None => String::new() }
    )]
    Json {
        /// The 0-based index of the event the problem is in, once the value started.
        element: Option<usize>,
        /// 1-based line in the (decompressed) body.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// Malformed JSON (true) or the wrong shape (false).
        syntax: bool,
    },
    /// An `event_id` that is empty, too long, or neither a string nor an integer.
    #[error("event_id of element {element} {problem}")]
    EventId {
        /// The 0-based index of the event.
        element: usize,
        /// What is wrong.
        problem: String,
    },
    /// Nothing but whitespace.
    #[error("the body is empty")]
    Empty,
    /// The caller's memory budget refused the decompressed bytes.
    #[error("the ingest memory budget is exhausted; retry later")]
    OverBudget,
}

impl DecodeError {
    /// The HTTP status that answers it: 413, 415, 429 or 400.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::TooManyEvents { .. } => 413,
            DecodeError::UnsupportedMediaType(_) | DecodeError::UnsupportedEncoding(_) => 415,
            DecodeError::OverBudget => 429,
            _ => 400,
        }
    }

    /// A stable machine-readable code (the `error.code` of the JSON answer).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "payload_too_large",
            DecodeError::TooManyEvents { .. } => "too_many_events",
            DecodeError::UnsupportedMediaType(_) => "unsupported_media_type",
            DecodeError::UnsupportedEncoding(_) => "unsupported_encoding",
            DecodeError::BadCompression { .. } => "bad_compression",
            DecodeError::Json { syntax: true, .. } => "invalid_json",
            DecodeError::Json { syntax: false, .. } => "invalid_event",
            DecodeError::EventId { .. } => "invalid_event_id",
            DecodeError::Empty => "empty_body",
            DecodeError::OverBudget => "over_capacity",
        }
    }
}

/// Decodes a whole request body: decompresses it (with the size cap) and parses it.
///
/// # Errors
///
/// [`DecodeError`] naming the first problem; nothing of a refused body is returned.
///
/// # Example
///
/// ```
/// use sentinel::source::webhook::decode::{Limits, decode};
///
/// let body = b"{\"error\":\"ERROR PACT:auth:login failed\",\"event_id\":\"a1\"}\n{\"msg\":\"x\"}\n";
/// let events = decode(Some("application/x-ndjson"), None, body, &Limits::default())?;
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[0].line, b"ERROR PACT:auth:login failed");
/// assert_eq!(events[0].id.as_deref(), Some("a1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<Event>, DecodeError> {
    let format = Format::from_content_type(content_type)?;
    let encoding = Encoding::from_header(content_encoding)?;
    let plain = decompress(encoding, body, limits.max_body_bytes, &mut |_| true)?;
    parse(format, &plain, limits)
}

/// Decompresses `body`, refusing more than `limit` bytes of output. `reserve(n)` is asked
/// before the output grows by `n` bytes; when it says no, decompression stops with
/// [`DecodeError::OverBudget`] (the caller's memory budget).
///
/// # Errors
///
/// [`DecodeError::TooLarge`], [`DecodeError::BadCompression`], [`DecodeError::OverBudget`].
pub fn decompress<'a>(
    encoding: Encoding,
    body: &'a [u8],
    limit: usize,
    reserve: &mut dyn FnMut(usize) -> bool,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let (name, mut reader): (&'static str, Box<dyn Read + 'a>) = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::TooLarge {
                    limit,
                    decompressed: false,
                });
            }
            return Ok(Cow::Borrowed(body));
        }
        Encoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(body))),
        Encoding::Deflate => ("deflate", Box::new(flate2::read::ZlibDecoder::new(body))),
    };
    if body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Room for one more chunk, asked for before it is taken; the capacity never goes
        // past the limit plus one chunk (the chunk that detects an overrun).
        if out.capacity() - out.len() < DECOMPRESS_CHUNK {
            let want = out.len() + DECOMPRESS_CHUNK;
            let target = (out.capacity() * 2).max(want).min(limit + DECOMPRESS_CHUNK);
            let grow = target.max(want) - out.capacity();
            if !reserve(grow) {
                return Err(DecodeError::OverBudget);
            }
            out.reserve_exact(target.max(want) - out.len());
        }
        let start = out.len();
        out.resize(start + DECOMPRESS_CHUNK, 0);
        let n = match reader.read(&mut out[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => {
                return Err(DecodeError::BadCompression {
                    encoding: name,
                    message: e.to_string(),
                });
            }
        };
        out.truncate(start + n);
        if out.len() > limit {
            return Err(DecodeError::TooLarge {
                limit,
                decompressed: true,
            });
        }
        if n == 0 {
            return Ok(Cow::Owned(out));
        }
    }
}

/// Parses a decompressed body.
///
/// # Errors
///
/// See [`DecodeError`].
pub fn parse(format: Format, body: &[u8], limits: &Limits) -> Result<Vec<Event>, DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::TooLarge {
            limit: limits.max_body_bytes,
            decompressed: false,
        });
    }
    let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Err(DecodeError::Empty);
    };
    let json = match format {
        Format::Json | Format::Ndjson => true,
        Format::Text => false,
        Format::Sniff => matches!(body[first], b'{' | b'['),
    };
    if json {
        parse_json(body, limits)
    } else {
        parse_text(body, limits)
    }
}

fn parse_text(body: &[u8], limits: &Limits) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if events.len() == limits.max_events {
            return Err(DecodeError::TooManyEvents {
                limit: limits.max_events,
            });
        }
        events.push(Event {
            line: line.to_vec(),
            key: None,
            id: None,
        });
    }
    Ok(events)
}

fn parse_json(body: &[u8], limits: &Limits) -> Result<Vec<Event>, DecodeError> {
    let mut out = Out {
        body,
        limits,
        events: Vec::new(),
        problem: None,
    };
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>();
    loop {
        let index = out.events.len();
        let raw = match stream.next() {
            None => break,
            Some(Ok(raw)) => raw,
            Some(Err(e)) => {
                return Err(out.json_error(&e, 0, Some(index), e.is_syntax() || e.is_eof()));
            }
        };
        let text = raw.get();
        if text.starts_with('[') {
            let base = offset_in(body, text);
            let mut de = serde_json::Deserializer::from_str(text);
            if let Err(e) = de.deserialize_seq(ArrayVisitor { out: &mut out }) {
                return Err(match out.problem.take() {
                    Some(p) => p,
                    None => out.json_error(&e, base, None, e.is_syntax() || e.is_eof()),
                });
            }
        } else {
            let ev = out.read_element(raw, index)?;
            out.push(ev)?;
        }
    }
    Ok(out.events)
}

/// The state of one JSON parse.
struct Out<'b, 'l> {
    body: &'b [u8],
    limits: &'l Limits,
    events: Vec<Event>,
    /// A problem found inside a serde visitor that deserves its own error (a custom serde
    /// error only carries a message).
    problem: Option<DecodeError>,
}

impl Out<'_, '_> {
    /// Reads one event from its raw JSON text.
    fn read_element(&self, raw: &RawValue, index: usize) -> Result<Event, DecodeError> {
        let text = raw.get();
        let mut de = serde_json::Deserializer::from_str(text);
        let mut id_problem = None;
        let seed = ElementSeed {
            max_id: self.limits.max_event_id_bytes,
            id_problem: &mut id_problem,
        };
        let fields = match seed.deserialize(&mut de) {
            Ok(f) => f,
            Err(e) => {
                if let Some(problem) = id_problem {
                    return Err(DecodeError::EventId {
                        element: index,
                        problem,
                    });
                }
                let base = offset_in(self.body, text);
                return Err(self.json_error(&e, base, Some(index), e.is_syntax() || e.is_eof()));
            }
        };
        let line = match fields.text {
            Some(t) => t.into_owned(),
            None => text.trim().as_bytes().to_vec(),
        };
        Ok(Event {
            line,
            key: fields.key.map(|k| k.into_owned().into_bytes()),
            id: fields.id.map(Cow::into_owned),
        })
    }

    fn push(&mut self, ev: Event) -> Result<(), DecodeError> {
        if self.events.len() == self.limits.max_events {
            return Err(DecodeError::TooManyEvents {
                limit: self.limits.max_events,
            });
        }
        self.events.push(ev);
        Ok(())
    }

    /// A serde_json error at a position relative to the value starting at byte `base`, as
    /// a position in the body.
    fn json_error(
        &self,
        e: &serde_json::Error,
        base: usize,
        element: Option<usize>,
        syntax: bool,
    ) -> DecodeError {
        let (base_line, base_col) = line_col(self.body, base);
        let (line, column) = if e.line() <= 1 {
            (base_line, base_col + e.column().saturating_sub(1))
        } else {
            (base_line + e.line() - 1, e.column())
        };
        DecodeError::Json {
            element,
            line,
            column,
            message: strip_position(&e.to_string()),
            syntax,
        }
    }
}

/// Reads the elements of a top-level array one by one: the event limit is checked as they
/// come, so `[{},{},...]` cannot allocate past it.
struct ArrayVisitor<'o, 'b, 'l> {
    out: &'o mut Out<'b, 'l>,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            let index = self.out.events.len();
            let pushed = self
                .out
                .read_element(raw, index)
                .and_then(|ev| self.out.push(ev));
            if let Err(e) = pushed {
                self.out.problem = Some(e);
                return Err(de::Error::custom("refused"));
            }
        }
        Ok(())
    }
}

/// The fields of one event object, borrowed from the body where possible.
struct Fields<'de> {
    /// None: the object has no text field; its JSON text is the line.
    text: Option<Cow<'de, [u8]>>,
    key: Option<Cow<'de, str>>,
    id: Option<Cow<'de, str>>,
}

/// The keys of an event object that mean something.
enum Field {
    Error,
    Message,
    Msg,
    Log,
    LogKey,
    PactKey,
    EventId,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Field, E> {
                Ok(match s {
                    "error" => Field::Error,
                    "message" => Field::Message,
                    "msg" => Field::Msg,
                    "log" => Field::Log,
                    "log_key" => Field::LogKey,
                    "pact_key" => Field::PactKey,
                    "event_id" => Field::EventId,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Reads one element: an event object or a string.
struct ElementSeed<'p> {
    max_id: usize,
    /// Set when the `event_id` is refused (the error then names the element).
    id_problem: &'p mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = Fields<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object or a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Fields<'de>, E> {
        Ok(Fields {
            text: Some(Cow::Borrowed(s.as_bytes())),
            key: None,
            id: None,
        })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Fields<'de>, E> {
        Ok(Fields {
            text: Some(Cow::Owned(s.as_bytes().to_vec())),
            key: None,
            id: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        // error, message, msg, log: the first one present and not null wins.
        let mut texts: [Option<&'de RawValue>; 4] = [None; 4];
        let (mut log_key, mut pact_key, mut id) = (None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Error => texts[0] = Some(map.next_value()?),
                Field::Message => texts[1] = Some(map.next_value()?),
                Field::Msg => texts[2] = Some(map.next_value()?),
                Field::Log => texts[3] = Some(map.next_value()?),
                Field::LogKey => log_key = map.next_value::<OptStr<'de>>()?.0,
                Field::PactKey => pact_key = map.next_value::<OptStr<'de>>()?.0,
                Field::EventId => id = map.next_value::<IdValue<'de>>()?.0,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let mut text = None;
        for raw in texts.into_iter().flatten() {
            if let Some(t) = text_of(raw).map_err(de::Error::custom)? {
                text = Some(t);
                break;
            }
        }
        let key = log_key
            .filter(|k: &Cow<'_, str>| !k.trim().is_empty())
            .or(pact_key.filter(|k| !k.trim().is_empty()));
        if let Some(i) = &id {
            let problem = if i.is_empty() {
                Some("is empty".to_string())
            } else if i.len() > self.max_id {
                Some(format!(
                    "is {} bytes long; the limit is {}",
                    i.len(),
                    self.max_id
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                let msg = p.clone();
                *self.id_problem = Some(p);
                return Err(de::Error::custom(msg));
            }
        }
        Ok(Fields { text, key, id })
    }
}

/// The text of a message field: a string's contents, nothing for null, else the JSON text.
fn text_of(raw: &RawValue) -> Result<Option<Cow<'_, [u8]>>, serde_json::Error> {
    let t = raw.get().trim();
    match t.as_bytes().first() {
        Some(b'"') => {
            let s: BorrowCow<'_> = serde_json::from_str(t)?;
            Ok(Some(match s.0 {
                Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            }))
        }
        Some(b'n') => Ok(None),
        _ => Ok(Some(Cow::Borrowed(t.as_bytes()))),
    }
}

/// A string, borrowed when it has no escapes.
#[derive(serde::Deserialize)]
struct BorrowCow<'a>(#[serde(borrow)] Cow<'a, str>);

/// A string or null.
struct OptStr<'de>(Option<Cow<'de, str>>);

impl<'de> serde::Deserialize<'de> for OptStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OptStr<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<OptStr<'de>, E> {
                Ok(OptStr(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OptStr<'de>, E> {
                Ok(OptStr(Some(Cow::Owned(s.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OptStr<'de>, E> {
                Ok(OptStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An `event_id`: a string or an integer (as its decimal text), or null.
struct IdValue<'de>(Option<Cow<'de, str>>);

impl<'de> serde::Deserialize<'de> for IdValue<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IdValue<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event_id (a string or an integer)")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<IdValue<'de>, E> {
                Ok(IdValue(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IdValue<'de>, E> {
                Ok(IdValue(Some(Cow::Owned(s.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<IdValue<'de>, E> {
                Ok(IdValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<IdValue<'de>, E> {
                Ok(IdValue(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<IdValue<'de>, E> {
                Ok(IdValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where `inner` (a sub-slice of `body`) starts in it.
fn offset_in(body: &[u8], inner: &str) -> usize {
    (inner.as_ptr() as usize)
        .saturating_sub(body.as_ptr() as usize)
        .min(body.len())
}

/// 1-based line and column of byte `offset`.
fn line_col(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let col = 1 + before.len() - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    (line, col)
}

/// serde_json's message without its " at line L column C" suffix (positions are reported
/// relative to the body instead).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// A header value quoted back in an error, at most 100 bytes of it.
fn truncate(v: &str) -> String {
    let mut end = v.len().min(100);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ok(ct: Option<&str>, body: &[u8]) -> Vec<Event> {
        decode(ct, None, body, &Limits::default())
            .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(body)))
    }

    fn err(ct: Option<&str>, body: &[u8]) -> DecodeError {
        match decode(ct, None, body, &Limits::default()) {
            Ok(events) => panic!("accepted ({} events), should be refused", events.len()),
            Err(e) => e,
        }
    }

    fn lines(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    const JSON: Option<&str> = Some("application/json");
    const NDJSON: Option<&str> = Some("application/x-ndjson");
    const TEXT: Option<&str> = Some("text/plain; charset=utf-8");

    #[test]
    fn a_json_object_takes_error_then_message_then_msg_then_log() {
        let e = ok(
            JSON,
            br#"{"error":"E","message":"M","msg":"m","log_key":"PACT:a:b","event_id":"x1"}"#,
        );
        assert_eq!(lines(&e), ["E"]);
        assert_eq!(e[0].key.as_deref(), Some(&b"PACT:a:b"[..]));
        assert_eq!(e[0].id.as_deref(), Some("x1"));
        assert_eq!(lines(&ok(JSON, br#"{"message":"M","msg":"m"}"#)), ["M"]);
        assert_eq!(lines(&ok(JSON, br#"{"msg":"m","log":"l"}"#)), ["m"]);
        assert_eq!(lines(&ok(JSON, br#"{"log":"l"}"#)), ["l"]);
        // null falls through to the next field; other values are their JSON text
        assert_eq!(lines(&ok(JSON, br#"{"error":null,"message":"M"}"#)), ["M"]);
        assert_eq!(
            lines(&ok(JSON, br#"{"error":{"type":"Boom","n":1}}"#)),
            [r#"{"type":"Boom","n":1}"#]
        );
        // no text field: the object itself (the reference used str(data))
        assert_eq!(
            lines(&ok(JSON, br#" {"foo": "bar"} "#)),
            [r#"{"foo": "bar"}"#]
        );
        // pact_key when there is no log_key; integer ids
        let e = ok(JSON, br#"{"error":"E","pact_key":"a:b","event_id":42}"#);
        assert_eq!(e[0].key.as_deref(), Some(&b"a:b"[..]));
        assert_eq!(e[0].id.as_deref(), Some("42"));
        // escapes are decoded, unknown fields ignored whatever their shape
        let e = ok(
            JSON,
            br#"{"x":[1,{"y":[]}],"error":"line\none \"q\" \u00e9"}"#,
        );
        assert_eq!(lines(&e), ["line\none \"q\" é"]);
    }

    #[test]
    fn arrays_ndjson_and_streams() {
        let body = br#"[{"error":"a","event_id":"1"},"plain string",{"message":"c"}]"#;
        let e = ok(JSON, body);
        assert_eq!(lines(&e), ["a", "plain string", "c"]);
        let body = b"{\"error\":\"a\"}\n\n{\"message\":\"b\"}\r\n{\"msg\":\"c\"}";
        assert_eq!(lines(&ok(NDJSON, body)), ["a", "b", "c"]);
        // application/json with several values in a row is read as a stream too
        assert_eq!(
            lines(&ok(JSON, b"{\"error\":\"a\"} {\"error\":\"b\"}")),
            ["a", "b"]
        );
        assert!(ok(JSON, b"[]").is_empty());
        // Vector and Fluent Bit content types
        for ct in [
            "application/x-ndjson",
            "application/jsonlines",
            "application/json; charset=utf-8",
            "application/vnd.foo+json",
        ] {
            assert_eq!(lines(&ok(Some(ct), b"{\"error\":\"a\"}")), ["a"], "{ct}");
        }
    }

    #[test]
    fn text_lines_keep_their_bytes() {
        let body = b"ERROR one\r\n\n   \nERROR \xff\xfe two\nlast without newline";
        let e = ok(TEXT, body);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].line, b"ERROR \xff\xfe two");
        assert_eq!(e[2].line, b"last without newline");
        assert!(e.iter().all(|e| e.key.is_none() && e.id.is_none()));
    }

    #[test]
    fn sniffing_without_a_content_type() {
        assert_eq!(lines(&ok(None, b"  {\"error\":\"a\"}")), ["a"]);
        assert_eq!(lines(&ok(None, b"[\"a\",\"b\"]")), ["a", "b"]);
        assert_eq!(lines(&ok(None, b"ERROR plain")), ["ERROR plain"]);
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(lines(&ok(form, b"{\"error\":\"curl -d\"}")), ["curl -d"]);
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = err(JSON, b"{\"error\":\"a\"}\n{\"error\": }");
        assert_eq!(e.code(), "invalid_json");
        assert_eq!(e.status(), 400);
        match &e {
            DecodeError::Json {
                line,
                column,
                element,
                ..
            } => {
                assert_eq!((*line, *element), (2, Some(1)), "{e}");
                assert_eq!(*column, 11, "{e}");
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("line 2 column 11") && msg.contains("element 1"),
            "{msg}"
        );

        // A position inside an array element, on a later line.
        let e = err(
            JSON,
            b"[\n  {\"error\":\"a\"},\n  {\"error\":\"b\", \"pact_key\": 5}\n]",
        );
        assert_eq!(e.code(), "invalid_event");
        match &e {
            DecodeError::Json { line, element, .. } => assert_eq!((*line, *element), (3, Some(1))),
            other => panic!("{other:?}"),
        }
        assert_eq!(err(JSON, b"[1]").code(), "invalid_event");
        assert_eq!(err(JSON, b"[[{\"error\":\"a\"}]]").code(), "invalid_event");
        assert_eq!(err(JSON, b"42").code(), "invalid_event");
        assert_eq!(err(JSON, b"{\"error\":\"a\"").code(), "invalid_json");
        assert_eq!(err(JSON, b"").code(), "empty_body");
        assert_eq!(err(TEXT, b" \n \n").code(), "empty_body");
        assert_eq!(
            err(JSON, b"{\"error\":\"a\",\"event_id\":\"\"}").code(),
            "invalid_event_id"
        );
        assert_eq!(
            err(JSON, b"{\"error\":\"a\",\"event_id\":true}").code(),
            "invalid_event"
        );
        let long = format!(
            "[{{\"error\":\"a\"}},{{\"error\":\"b\",\"event_id\":\"{}\"}}]",
            "x".repeat(257)
        );
        match err(JSON, long.as_bytes()) {
            DecodeError::EventId { element, problem } => {
                assert_eq!(element, 1);
                assert!(problem.contains("257"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        let ok256 = format!("{{\"error\":\"a\",\"event_id\":\"{}\"}}", "x".repeat(256));
        assert_eq!(ok(JSON, ok256.as_bytes()).len(), 1);
        assert_eq!(err(Some("application/msgpack"), b"x").status(), 415);
        assert_eq!(
            decode(JSON, Some("br"), b"{}", &Limits::default())
                .unwrap_err()
                .status(),
            415
        );
    }

    #[test]
    fn invalid_utf8_in_json_is_refused_with_a_position() {
        let e = err(JSON, b"{\"error\":\"bad \xff byte\"}");
        assert_eq!(e.code(), "invalid_json");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        // Skipped values are walked without recursion (serde_json's ignore_value): an
        // ignored field may nest deeply, and a deep `error` value is its JSON text.
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(ok(JSON, deep.as_bytes()).len(), 1);
        let deep = format!("{{\"error\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(ok(JSON, deep.as_bytes())[0].line.len(), 10_001);
        // Unbalanced or nested in an event position: refused.
        let deep = "[".repeat(1 << 20);
        assert_eq!(err(JSON, deep.as_bytes()).code(), "invalid_json");
        let deep = format!("{}{{}}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(err(JSON, deep.as_bytes()).code(), "invalid_event");
        let deep = format!("{}{{}}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert_eq!(ok(JSON, deep.as_bytes()).len(), 1);
    }

    #[test]
    fn limits_on_events_and_size() {
        let limits = Limits::default().with_max_events(3);
        let four = b"{\"error\":\"a\"}\n{\"error\":\"a\"}\n{\"error\":\"a\"}\n{\"error\":\"a\"}";
        assert_eq!(
            decode(NDJSON, None, four, &limits).unwrap_err(),
            DecodeError::TooManyEvents { limit: 3 }
        );
        let arr = b"[{},{},{},{}]";
        assert_eq!(decode(JSON, None, arr, &limits).unwrap_err().status(), 413);
        assert_eq!(
            decode(TEXT, None, b"a\nb\nc\nd", &limits)
                .unwrap_err()
                .status(),
            413
        );
        assert_eq!(decode(TEXT, None, b"a\nb\nc\n", &limits).unwrap().len(), 3);
        // 10 000 events by default, and not one more.
        let body = "{\"error\":\"a\"}\n".repeat(MAX_EVENTS);
        assert_eq!(ok(NDJSON, body.as_bytes()).len(), MAX_EVENTS);
        let body = "{}\n".repeat(MAX_EVENTS + 1);
        assert_eq!(err(NDJSON, body.as_bytes()).code(), "too_many_events");
        // size
        let small = Limits::default().with_max_body_bytes(10);
        assert_eq!(
            decode(TEXT, None, b"0123456789A", &small).unwrap_err(),
            DecodeError::TooLarge {
                limit: 10,
                decompressed: false
            }
        );
    }

    #[test]
    fn gzip_and_deflate_bodies() {
        let body = b"{\"error\":\"a\"}\n{\"error\":\"b\"}\n";
        let e = decode(NDJSON, Some("gzip"), &gzip(body), &Limits::default()).unwrap();
        assert_eq!(lines(&e), ["a", "b"]);
        // two gzip members in a row
        let mut two = gzip(b"{\"error\":\"a\"}\n");
        two.extend(gzip(b"{\"error\":\"b\"}\n"));
        assert_eq!(
            decode(NDJSON, Some("x-gzip"), &two, &Limits::default())
                .unwrap()
                .len(),
            2
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"ERROR x\n").unwrap();
        let e = decode(
            TEXT,
            Some("deflate"),
            &z.finish().unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(lines(&e), ["ERROR x"]);
        let bad = decode(NDJSON, Some("gzip"), b"not gzip at all", &Limits::default());
        assert_eq!(bad.unwrap_err().code(), "bad_compression");
        let mut truncated = gzip(body);
        truncated.truncate(truncated.len() - 10);
        let bad = decode(NDJSON, Some("gzip"), &truncated, &Limits::default());
        assert_eq!(bad.unwrap_err().code(), "bad_compression");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros in ~64 KiB of gzip.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'\n'; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let mut asked = 0usize;
        let r = decompress(Encoding::Gzip, &bomb, MAX_BODY_BYTES, &mut |n| {
            asked += n;
            true
        });
        assert_eq!(
            r.unwrap_err(),
            DecodeError::TooLarge {
                limit: MAX_BODY_BYTES,
                decompressed: true
            }
        );
        assert!(asked <= MAX_BODY_BYTES + 2 * DECOMPRESS_CHUNK, "{asked}");
        // and a budget that says no stops it earlier
        let mut left = 1usize << 20;
        let r = decompress(Encoding::Gzip, &bomb, MAX_BODY_BYTES, &mut |n| {
            if n > left {
                return false;
            }
            left -= n;
            true
        });
        assert_eq!(r.unwrap_err(), DecodeError::OverBudget);
        assert_eq!(DecodeError::OverBudget.status(), 429);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn event() -> impl Strategy<Value = (String, Option<String>, Option<String>)> {
            (
                "[ -~\\n\\t\"\\\\é€😀]{0,40}",
                proptest::option::of("(PACT:)?[a-z]{1,5}:[a-z]{1,5}"),
                proptest::option::of("[a-zA-Z0-9_-]{1,20}"),
            )
        }

        fn json_of(e: &(String, Option<String>, Option<String>)) -> String {
            let mut o = serde_json::Map::new();
            o.insert("error".into(), e.0.clone().into());
            if let Some(k) = &e.1 {
                o.insert("log_key".into(), k.clone().into());
            }
            if let Some(i) = &e.2 {
                o.insert("event_id".into(), i.clone().into());
            }
            serde_json::Value::Object(o).to_string()
        }

        proptest! {
            #[test]
            fn every_format_round_trips(events in proptest::collection::vec(event(), 1..20), gz in any::<bool>()) {
                let want: Vec<Event> = events.iter().map(|e| Event {
                    line: e.0.as_bytes().to_vec(),
                    key: e.1.as_ref().map(|k| k.as_bytes().to_vec()),
                    id: e.2.clone(),
                }).collect();
                let ndjson: String = events.iter().map(|e| json_of(e) + "\n").collect();
                let array = format!("[{}]", events.iter().map(json_of).collect::<Vec<_>>().join(","));
                for (ct, body) in [(NDJSON, ndjson.into_bytes()), (JSON, array.into_bytes())] {
                    let (enc, body) = if gz { (Some("gzip"), gzip(&body)) } else { (None, body) };
                    let got = decode(ct, enc, &body, &Limits::default()).unwrap();
                    prop_assert_eq!(&got, &want);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), which in 0usize..5) {
                let ct = [JSON, NDJSON, TEXT, None, Some("application/x-www-form-urlencoded")][which];
                let limits = Limits::default().with_max_events(50);
                match decode(ct, None, &body, &limits) {
                    Ok(events) => prop_assert!(events.len() <= 50),
                    Err(e) => prop_assert!(matches!(e.status(), 400 | 413)),
                }
                let _ = decode(ct, Some("gzip"), &body, &limits);
            }

            #[test]
            fn text_events_are_the_non_blank_lines(lines_in in proptest::collection::vec("[^\\n\\r]{0,30}", 1..30)) {
                let body = lines_in.join("\n");
                let want: Vec<&String> = lines_in.iter().filter(|l| !l.trim_ascii().is_empty()).collect();
                match decode(TEXT, None, body.as_bytes(), &Limits::default()) {
                    Ok(got) => {
                        prop_assert_eq!(got.len(), want.len());
                        for (g, w) in got.iter().zip(want) {
                            prop_assert_eq!(&g.line, &w.as_bytes().to_vec());
                        }
                    }
                    Err(e) => prop_assert!(want.is_empty() && e == DecodeError::Empty),
                }
            }
        }
    }
}
