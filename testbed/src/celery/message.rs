//! Celery protocol v2 task messages as kombu's Redis transport stores them, and the result meta
//! Celery's Redis result backend writes. Pure: no sockets, so every shape is unit-tested.
//!
//! # A task message on the wire
//!
//! One JSON document per list element of the queue (key order as Celery 5 writes it; Python's
//! `json.dumps` separators `", "` and `": "`, non-ASCII escaped as `\uXXXX`, which
//! [`TaskMessage::to_json`] reproduces byte for byte):
//!
//! ```text
//! {"body": "<base64 of [args, kwargs, embed]>",
//!  "content-encoding": "utf-8",
//!  "content-type": "application/json",
//!  "headers": {"lang": "py", "task": "<task name>", "id": "<task id>", "shadow": null,
//!              "eta": null, "expires": null, "group": null, "group_index": null,
//!              "retries": 0, "timelimit": [null, null], "root_id": "<task id>",
//!              "parent_id": null, "argsrepr": "(2, 2)", "kwargsrepr": "{}",
//!              "origin": "gen<pid>@<host>", "ignore_result": false,
//!              "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}},
//!  "properties": {"correlation_id": "<task id>", "reply_to": "<uuid>", "delivery_mode": 2,
//!                 "delivery_info": {"exchange": "", "routing_key": "<queue>"},
//!                 "priority": 0, "body_encoding": "base64", "delivery_tag": "<uuid>"}}
//! ```
//!
//! - `body`: the JSON array `[args, kwargs, embed]`, base64-encoded because kombu's virtual
//!   transports encode bodies with their `body_encoding` (`base64`); `embed` is
//!   `{"callbacks", "errbacks", "chain", "chord"}` (workflow signatures, passed through untouched).
//! - `headers`: Celery's task metadata. `task` and `id` are required to decode; everything else
//!   has Celery's default when absent, and headers we do not model (kombu's `redelivered`, newer
//!   Celery fields) are kept in [`Headers::extra`] and written back unchanged.
//! - `properties`: kombu's AMQP emulation. `delivery_tag` is a fresh uuid per publish (it keys the
//!   `unacked` hash); `delivery_info.exchange` is `""` (the default exchange, so the routing key
//!   is the queue name) as Celery publishes to a named queue; `priority` 0..=9 picks the list
//!   (see [`queue_key`]).
//!
//! Not supported: protocol v1 bodies (`{"task", "id", "args", ...}` with no `task` header),
//! serializers other than JSON (pickle, msgpack, yaml), compressed bodies.
//!
//! # Result meta
//!
//! `celery-task-meta-<task id>`: a string holding
//! `{"status", "result", "traceback", "children", "date_done", "task_id"}` ([`ResultMeta`]),
//! written with `SETEX` for [`RESULT_EXPIRES`] (Celery's `result_expires`, 3600 s in the real
//! stack). No key means `PENDING` (unknown, queued or running), as in Celery.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The queue a task goes to when none is given (the real stack's `task_default_queue`).
pub const DEFAULT_QUEUE: &str = "default";

/// kombu's separator between a queue name and a priority step: `default\x06\x163`.
pub const PRIORITY_SEP: &str = "\x06\x16";

/// kombu's default `priority_steps`: a message's priority (0..=9) is rounded down to one of these,
/// and each step but 0 has its own list. Workers `BRPOP` step 0 first: on Redis, 0 is the
/// highest priority.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// Prefix of the result keys: `celery-task-meta-<task id>`.
pub const RESULT_KEY_PREFIX: &str = "celery-task-meta-";

/// How long a result is kept (Celery's `result_expires`; the real stack uses the default hour).
pub const RESULT_EXPIRES: Duration = Duration::from_secs(3600);

/// The only content type this module reads and writes (Celery's JSON serializer).
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// How long `argsrepr`/`kwargsrepr` may get before they are cut (Celery's `argsrepr_maxsize`).
const REPR_MAX_CHARS: usize = 1024;

/// The Redis list a message of `priority` on `queue` is pushed to, as kombu's `_q_for_pri`:
/// the queue name itself for priority 0..=2, else `<queue>\x06\x16<step>`.
pub fn queue_key(queue: &str, priority: u8) -> String {
    let step = PRIORITY_STEPS
        .iter()
        .rev()
        .find(|step| priority >= **step)
        .copied()
        .unwrap_or(0);
    if step == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{PRIORITY_SEP}{step}")
    }
}

/// The queue name of a list key, without kombu's priority suffix (what `BRPOP` answered with).
pub fn queue_of_key(key: &str) -> &str {
    match key.rsplit_once(PRIORITY_SEP) {
        Some((queue, step)) if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) => {
            queue
        }
        _ => key,
    }
}

/// The key holding a task's result meta: `celery-task-meta-<task id>`.
pub fn result_key(task_id: &str) -> String {
    format!("{RESULT_KEY_PREFIX}{task_id}")
}

/// Why bytes read from a queue are not a task message we can run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not a kombu message envelope (not JSON, or a required field has the wrong type).
    #[error("not a kombu message envelope")]
    Envelope(#[source] serde_json::Error),
    /// The body is serialized with something other than JSON (pickle, msgpack, ...).
    #[error("unsupported content type {0:?} (only application/json)")]
    ContentType(String),
    /// The body is encoded with something other than base64 or plain UTF-8.
    #[error("unsupported body encoding {0:?} (only base64 and utf-8)")]
    BodyEncoding(String),
    /// The body says base64 but is not.
    #[error("the body is not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// The decoded body is not `[args, kwargs, embed]`.
    #[error("the body is not [args, kwargs, embed]")]
    Body(#[source] serde_json::Error),
    /// A header protocol v2 requires is missing or empty (a protocol v1 message has none).
    #[error("header {0:?} is missing (a protocol v1 message?)")]
    MissingHeader(&'static str),
}

/// Celery's task headers (protocol v2), in the order Celery writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Headers {
    /// The language the task is written in; always `py` for Celery.
    #[serde(deserialize_with = "null_as_default")]
    pub lang: String,
    /// The task name, e.g. `app.resilience.tasks.periodic_health_check`.
    #[serde(deserialize_with = "null_as_default")]
    pub task: String,
    /// The task id (a uuid); the result key and the duplicate detector use it.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// An alias name to log instead of `task`.
    pub shadow: Option<String>,
    /// Do not run before this time (ISO 8601).
    pub eta: Option<String>,
    /// Do not run after this time (ISO 8601); an expired task is `REVOKED`.
    pub expires: Option<String>,
    /// The group id, when the task is part of a group.
    pub group: Option<String>,
    /// The task's position in its group.
    pub group_index: Option<u64>,
    /// How many times the task has been retried.
    #[serde(deserialize_with = "null_as_default")]
    pub retries: u32,
    /// Soft and hard time limits in seconds (`[null, null]`: none).
    #[serde(deserialize_with = "null_as_default")]
    pub timelimit: (Option<f64>, Option<f64>),
    /// The id of the first task of the workflow (the task's own id when it is alone).
    pub root_id: Option<String>,
    /// The id of the task that sent this one.
    pub parent_id: Option<String>,
    /// Python `repr` of the args, for logs and monitoring.
    pub argsrepr: Option<String>,
    /// Python `repr` of the kwargs, for logs and monitoring.
    pub kwargsrepr: Option<String>,
    /// Who sent the task: `gen<pid>@<hostname>`.
    pub origin: Option<String>,
    /// Whether the worker should skip storing the result (`null` from `send_task`: no).
    pub ignore_result: Option<bool>,
    /// How many times the task was replaced (`Task.replace`).
    #[serde(deserialize_with = "null_as_default")]
    pub replaced_task_nesting: u32,
    /// Names of stamped headers (Celery 5.3 stamping).
    pub stamped_headers: Option<Vec<String>>,
    /// Stamps (Celery 5.3 stamping).
    #[serde(deserialize_with = "null_as_default")]
    pub stamps: Map<String, Value>,
    /// Headers not modelled above (kombu's `redelivered`, newer Celery fields), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Headers {
    fn default() -> Headers {
        Headers {
            lang: "py".to_owned(),
            task: String::new(),
            id: String::new(),
            shadow: None,
            eta: None,
            expires: None,
            group: None,
            group_index: None,
            retries: 0,
            timelimit: (None, None),
            root_id: None,
            parent_id: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: Some(false),
            replaced_task_nesting: 0,
            stamped_headers: None,
            stamps: Map::new(),
            extra: Map::new(),
        }
    }
}

/// Where kombu routed a message: the exchange and the routing key it was published with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryInfo {
    /// The exchange; `""` is the default exchange, which routes to the queue named by the key.
    #[serde(deserialize_with = "null_as_default")]
    pub exchange: String,
    /// The routing key; the queue name when `exchange` is `""`.
    #[serde(deserialize_with = "null_as_default")]
    pub routing_key: String,
    /// Fields not modelled above (kombu's `redelivered`), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// kombu's message properties (its AMQP emulation), in the order kombu writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Properties {
    /// The task id again (protocol v2 reuses AMQP's correlation id).
    #[serde(deserialize_with = "null_as_default")]
    pub correlation_id: String,
    /// Where an RPC result backend would answer; unused with the Redis backend.
    pub reply_to: Option<String>,
    /// 2 = persistent (AMQP); kombu's Redis transport ignores it.
    #[serde(deserialize_with = "null_as_default")]
    pub delivery_mode: u8,
    /// Exchange and routing key.
    #[serde(deserialize_with = "null_as_default")]
    pub delivery_info: DeliveryInfo,
    /// 0..=9; on Redis, lower runs first (see [`PRIORITY_STEPS`]).
    #[serde(deserialize_with = "null_as_default")]
    pub priority: u8,
    /// How `body` is encoded: `base64` (kombu's default for virtual transports); none means
    /// the body is the serialized text itself.
    #[serde(default)]
    pub body_encoding: Option<String>,
    /// A uuid per publish; the field of the `unacked` hash and member of `unacked_index`.
    #[serde(deserialize_with = "null_as_default")]
    pub delivery_tag: String,
    /// Properties not modelled above, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Properties {
    fn default() -> Properties {
        Properties {
            correlation_id: String::new(),
            reply_to: None,
            delivery_mode: 2,
            delivery_info: DeliveryInfo::default(),
            priority: 0,
            body_encoding: Some("base64".to_owned()),
            delivery_tag: String::new(),
            extra: Map::new(),
        }
    }
}

/// The workflow part of the body: signatures to run after the task. Passed through, never run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Embed {
    /// Signatures to call with the result on success.
    pub callbacks: Option<Value>,
    /// Signatures to call on failure.
    pub errbacks: Option<Value>,
    /// The rest of a chain.
    pub chain: Option<Value>,
    /// The chord callback.
    pub chord: Option<Value>,
}

/// A Celery protocol v2 task message: what a producer pushes and a worker pops.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Celery's task headers.
    pub headers: Headers,
    /// kombu's message properties.
    pub properties: Properties,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Workflow signatures (passed through).
    pub embed: Embed,
}

/// `null` read as the type's default: Celery writes `null` for some fields it does not set
/// (`"ignore_result": null` from `send_task`), and a worker must not refuse such a message.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The envelope exactly as it is stored in the list, field order included.
#[derive(Serialize, Deserialize)]
struct Envelope {
    body: String,
    #[serde(rename = "content-encoding", default)]
    content_encoding: Option<String>,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    properties: Properties,
}

impl TaskMessage {
    /// A new message for `task` on [`DEFAULT_QUEUE`]: fresh task id (also the root id and the
    /// correlation id), fresh delivery tag and `reply_to`, this process as the origin, priority 0.
    pub fn new(task: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> TaskMessage {
        let id = uuid::Uuid::new_v4().to_string();
        let headers = Headers {
            task: task.to_owned(),
            id: id.clone(),
            root_id: Some(id.clone()),
            argsrepr: Some(truncate(&python_args_repr(&args), REPR_MAX_CHARS)),
            kwargsrepr: Some(truncate(
                &python_repr(&Value::Object(kwargs.clone())),
                REPR_MAX_CHARS,
            )),
            origin: Some(default_origin()),
            ..Headers::default()
        };
        let properties = Properties {
            correlation_id: id,
            reply_to: Some(uuid::Uuid::new_v4().to_string()),
            delivery_info: DeliveryInfo {
                exchange: String::new(),
                routing_key: DEFAULT_QUEUE.to_owned(),
                extra: Map::new(),
            },
            delivery_tag: uuid::Uuid::new_v4().to_string(),
            ..Properties::default()
        };
        TaskMessage {
            headers,
            properties,
            args,
            kwargs,
            embed: Embed::default(),
        }
    }

    /// Routes the message to `queue` (the routing key on the default exchange).
    pub fn with_queue(mut self, queue: &str) -> TaskMessage {
        queue.clone_into(&mut self.properties.delivery_info.routing_key);
        self
    }

    /// Sets the priority, clamped to 0..=9 as kombu does.
    pub fn with_priority(mut self, priority: u8) -> TaskMessage {
        self.properties.priority = priority.min(9);
        self
    }

    /// Replaces the task id (and the root and correlation ids that copy it).
    pub fn with_id(mut self, id: &str) -> TaskMessage {
        id.clone_into(&mut self.headers.id);
        self.headers.root_id = Some(id.to_owned());
        id.clone_into(&mut self.properties.correlation_id);
        self
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.headers.id
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.headers.task
    }

    /// The queue the message is routed to (its routing key).
    pub fn queue(&self) -> &str {
        &self.properties.delivery_info.routing_key
    }

    /// The Redis list the message goes to: the queue, or its priority list ([`queue_key`]).
    pub fn list_key(&self) -> String {
        queue_key(self.queue(), self.properties.priority)
    }

    /// The delivery tag (the `unacked` hash field).
    pub fn delivery_tag(&self) -> &str {
        &self.properties.delivery_tag
    }

    /// Whether kombu marked the message as redelivered (restored from `unacked`).
    pub fn redelivered(&self) -> bool {
        self.headers.extra.get("redelivered") == Some(&Value::Bool(true))
            || self.properties.delivery_info.extra.get("redelivered") == Some(&Value::Bool(true))
    }

    /// The message as kombu's Redis transport stores it, byte-compatible with Python's
    /// `json.dumps` (what `LPUSH` sends).
    pub fn to_json(&self) -> String {
        // A tuple, not `json!`: the embed's keys stay in Celery's order.
        let body = python_json(&(&self.args, &self.kwargs, &self.embed));
        python_json(&Envelope {
            body: BASE64.encode(body),
            content_encoding: Some("utf-8".to_owned()),
            content_type: Some(CONTENT_TYPE_JSON.to_owned()),
            headers: self.headers.clone(),
            properties: self.properties.clone(),
        })
    }

    /// Decodes a list element written by kombu (Celery's producer) or by [`TaskMessage::to_json`].
    pub fn from_json(raw: &[u8]) -> Result<TaskMessage, MessageError> {
        let envelope: Envelope = serde_json::from_slice(raw).map_err(MessageError::Envelope)?;
        if let Some(content_type) = &envelope.content_type
            && content_type != CONTENT_TYPE_JSON
        {
            return Err(MessageError::ContentType(content_type.clone()));
        }
        let encoding = envelope.properties.body_encoding.as_deref().unwrap_or("");
        let body = match encoding.to_ascii_lowercase().as_str() {
            "base64" => BASE64
                .decode(envelope.body.as_bytes())
                .map_err(MessageError::Base64)?,
            "" | "utf-8" | "utf8" => envelope.body.into_bytes(),
            other => return Err(MessageError::BodyEncoding(other.to_owned())),
        };
        let (args, kwargs, embed): (Vec<Value>, Map<String, Value>, Option<Embed>) =
            serde_json::from_slice(&body).map_err(MessageError::Body)?;
        if envelope.headers.task.is_empty() {
            return Err(MessageError::MissingHeader("task"));
        }
        if envelope.headers.id.is_empty() {
            return Err(MessageError::MissingHeader("id"));
        }
        Ok(TaskMessage {
            headers: envelope.headers,
            properties: envelope.properties,
            args,
            kwargs,
            embed: embed.unwrap_or_default(),
        })
    }
}

/// A task's state, as Celery names them. A result key only ever holds a ready state here
/// (`SUCCESS`, `FAILURE`, `REVOKED`); no key reads as `PENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Unknown, queued, or running without `track_started` (no result key).
    Pending,
    /// Received by a worker (Celery events only).
    Received,
    /// Running (Celery with `task_track_started`).
    Started,
    /// Finished; `result` is the return value.
    Success,
    /// Raised; `result` is `{exc_type, exc_message, exc_module}`.
    Failure,
    /// Will be retried.
    Retry,
    /// Revoked or expired before it ran.
    Revoked,
}

impl TaskState {
    /// Whether the task is done (Celery's `READY_STATES`).
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }
}

/// What Celery's Redis result backend stores under `celery-task-meta-<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// The task's state.
    pub status: TaskState,
    /// The return value, or the exception on failure.
    pub result: Value,
    /// A traceback (text) on failure.
    pub traceback: Option<String>,
    /// Results of subtasks (always empty here).
    #[serde(default)]
    pub children: Vec<Value>,
    /// When the task finished, ISO 8601 in UTC.
    #[serde(default)]
    pub date_done: Option<String>,
    /// The task id (Celery always writes it; a meta without one still reads).
    #[serde(default)]
    pub task_id: String,
}

impl ResultMeta {
    /// What Celery reports for a task with no result key: `PENDING`, no result, not done.
    pub fn pending(task_id: &str) -> ResultMeta {
        ResultMeta {
            status: TaskState::Pending,
            result: Value::Null,
            traceback: None,
            children: Vec::new(),
            date_done: None,
            task_id: task_id.to_owned(),
        }
    }

    /// A `SUCCESS` meta with the task's return value, finished now.
    pub fn success(task_id: &str, result: Value) -> ResultMeta {
        ResultMeta::ready(task_id, TaskState::Success, result, None)
    }

    /// A `FAILURE` meta as Celery serializes an exception: `{"exc_type", "exc_message": [..],
    /// "exc_module"}` (a Python client re-raises it as `exc_module.exc_type(*exc_message)`).
    pub fn failure(task_id: &str, exc_type: &str, exc_module: &str, message: &str) -> ResultMeta {
        let result = json!({
            "exc_type": exc_type,
            "exc_message": [message],
            "exc_module": exc_module,
        });
        let traceback = format!(
            "Traceback (most recent call last):\n  (chaos-testbed worker)\n{exc_type}: {message}\n"
        );
        ResultMeta::ready(task_id, TaskState::Failure, result, Some(traceback))
    }

    /// A `REVOKED` meta (an expired task), with Celery's `TaskRevokedError`.
    pub fn revoked(task_id: &str, reason: &str) -> ResultMeta {
        let mut meta =
            ResultMeta::failure(task_id, "TaskRevokedError", "celery.exceptions", reason);
        meta.status = TaskState::Revoked;
        meta.traceback = None;
        meta
    }

    fn ready(
        task_id: &str,
        status: TaskState,
        result: Value,
        traceback: Option<String>,
    ) -> ResultMeta {
        ResultMeta {
            status,
            result,
            traceback,
            children: Vec::new(),
            date_done: Some(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            ),
            task_id: task_id.to_owned(),
        }
    }

    /// The failure message (`exc_type: exc_message`), when the task failed or was revoked.
    pub fn error(&self) -> Option<String> {
        if self.status == TaskState::Success {
            return None;
        }
        let exc_type = self.result.get("exc_type")?.as_str()?;
        let message = match self.result.get("exc_message") {
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|part| {
                    part.as_str()
                        .map_or_else(|| part.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(", "),
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        };
        Some(format!("{exc_type}: {message}"))
    }

    /// The meta as Celery writes it (Python `json.dumps` style).
    pub fn to_json(&self) -> String {
        python_json(self)
    }

    /// Decodes a result key's value.
    pub fn from_json(raw: &[u8]) -> Result<ResultMeta, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// `gen<pid>@<hostname>`: how Celery names the process that sent a task.
pub fn default_origin() -> String {
    format!("gen{}@{}", std::process::id(), hostname())
}

/// This machine's host name (`/proc/sys/kernel/hostname`, `$HOSTNAME`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Serializes as Python's `json.dumps` does by default (kombu's and Celery's `dumps`): `", "`
/// between items, `": "` after keys, every character outside printable ASCII escaped.
pub(crate) fn python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut serializer)
        .expect("serializing plain data to memory does not fail");
    String::from_utf8(out).expect("the formatter writes ASCII")
}

/// serde_json's compact output with Python's separators and `ensure_ascii`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for (start, ch) in fragment.char_indices() {
            if (' '..='~').contains(&ch) {
                writer.write_all(&fragment.as_bytes()[start..start + 1])?;
            } else {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `repr` of the args tuple: `()`, `(1,)`, `(1, 'a')`.
fn python_args_repr(args: &[Value]) -> String {
    let items: Vec<String> = args.iter().map(python_repr).collect();
    match items.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", items.join(", ")),
    }
}

/// Python's `repr` of a JSON value once loaded: `None`, `True`, `'text'`, `[1, 2]`, `{'k': 1}`.
fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => python_str_repr(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", python_str_repr(key), python_repr(value)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Python's `repr` of a `str`: single quotes unless the text has `'` and no `"`.
fn python_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if ch == quote => {
                out.push('\\');
                out.push(ch);
            }
            ch if ch.is_control() => {
                let _ = write!(out, "\\x{:02x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push(quote);
    out
}

/// Cuts `text` to `max` characters, marking the cut with `...`.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_follow_kombu_priority_steps() {
        assert_eq!(queue_key("default", 0), "default");
        assert_eq!(queue_key("default", 2), "default");
        assert_eq!(queue_key("default", 3), "default\x06\x163");
        assert_eq!(queue_key("default", 8), "default\x06\x166");
        assert_eq!(queue_key("default", 9), "default\x06\x169");
        assert_eq!(queue_of_key("default\x06\x169"), "default");
        assert_eq!(queue_of_key("default"), "default");
        assert_eq!(queue_of_key("odd\x06\x16name"), "odd\x06\x16name");
        assert_eq!(result_key("abc"), "celery-task-meta-abc");
    }

    #[test]
    fn python_json_uses_python_separators_and_escapes() {
        let value = json!([[4, 3], {}, {"a": null, "b": "é\u{1F600}\n"}]);
        assert_eq!(
            python_json(&value),
            r#"[[4, 3], {}, {"a": null, "b": "\u00e9\ud83d\ude00\n"}]"#
        );
        // Still JSON: serde reads it back unchanged.
        let back: Value = serde_json::from_str(&python_json(&value)).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn python_repr_matches_python() {
        assert_eq!(python_args_repr(&[]), "()");
        assert_eq!(python_args_repr(&[json!(1)]), "(1,)");
        assert_eq!(python_args_repr(&[json!(2), json!(2)]), "(2, 2)");
        assert_eq!(
            python_repr(&json!({"ok": true, "none": null, "list": [1.5, "x"]})),
            "{'list': [1.5, 'x'], 'none': None, 'ok': True}"
        );
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("a'\"b"), "'a\\'\"b'");
        assert_eq!(truncate("abcdef", 3), "abc...");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn new_message_has_celery_defaults() {
        let message = TaskMessage::new("proj.add", vec![json!(2), json!(2)], Map::new())
            .with_queue("resilience")
            .with_priority(12);
        assert_eq!(message.headers.lang, "py");
        assert_eq!(message.headers.root_id.as_deref(), Some(message.id()));
        assert_eq!(message.properties.correlation_id, message.id());
        assert_eq!(message.headers.argsrepr.as_deref(), Some("(2, 2)"));
        assert_eq!(message.headers.kwargsrepr.as_deref(), Some("{}"));
        assert!(
            message
                .headers
                .origin
                .as_deref()
                .unwrap()
                .starts_with("gen")
        );
        assert_eq!(message.properties.priority, 9);
        assert_eq!(message.list_key(), "resilience\x06\x169");
        assert_ne!(message.delivery_tag(), message.id());
        assert!(!message.redelivered());
    }

    #[test]
    fn encode_decode_round_trips() {
        let mut kwargs = Map::new();
        kwargs.insert("name".to_owned(), json!("ü"));
        let message = TaskMessage::new("proj.echo", vec![json!({"x": [1, 2]})], kwargs);
        let raw = message.to_json();
        assert!(raw.is_ascii());
        assert!(raw.starts_with("{\"body\": \""), "{raw}");
        assert_eq!(TaskMessage::from_json(raw.as_bytes()).unwrap(), message);
    }

    #[test]
    fn unknown_headers_survive_a_round_trip() {
        let mut message = TaskMessage::new("proj.echo", vec![], Map::new());
        message
            .headers
            .extra
            .insert("redelivered".to_owned(), json!(true));
        let decoded = TaskMessage::from_json(message.to_json().as_bytes()).unwrap();
        assert!(decoded.redelivered());
        assert_eq!(decoded, message);
    }

    #[test]
    fn decode_rejects_what_it_cannot_run() {
        let message = TaskMessage::new("proj.echo", vec![], Map::new());
        let mut envelope: Value = serde_json::from_str(&message.to_json()).unwrap();
        envelope["content-type"] = json!("application/x-python-serialize");
        let err = TaskMessage::from_json(envelope.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, MessageError::ContentType(_)), "{err}");

        let mut envelope: Value = serde_json::from_str(&message.to_json()).unwrap();
        envelope["headers"].as_object_mut().unwrap().remove("task");
        let err = TaskMessage::from_json(envelope.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, MessageError::MissingHeader("task")), "{err}");

        let mut envelope: Value = serde_json::from_str(&message.to_json()).unwrap();
        envelope["body"] = json!("%%%");
        let err = TaskMessage::from_json(envelope.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, MessageError::Base64(_)), "{err}");

        let err = TaskMessage::from_json(b"not json").unwrap_err();
        assert!(matches!(err, MessageError::Envelope(_)), "{err}");
    }

    #[test]
    fn nulls_celery_writes_for_unset_fields_are_accepted() {
        let message = TaskMessage::new("proj.echo", vec![], Map::new());
        let mut envelope: Value = serde_json::from_str(&message.to_json()).unwrap();
        for field in ["ignore_result", "retries", "timelimit", "stamps", "lang"] {
            envelope["headers"][field] = Value::Null;
        }
        envelope["properties"]["priority"] = Value::Null;
        envelope["properties"]["delivery_mode"] = Value::Null;
        let decoded = TaskMessage::from_json(envelope.to_string().as_bytes()).unwrap();
        assert_eq!(decoded.headers.ignore_result, None);
        assert_eq!(decoded.headers.retries, 0);
        assert_eq!(decoded.headers.timelimit, (None, None));
        assert_eq!(decoded.properties.priority, 0);
        // `null` stays `null` when written back: a re-encoded message says what it said.
        assert!(decoded.to_json().contains("\"ignore_result\": null"));
    }

    #[test]
    fn plain_utf8_bodies_decode_too() {
        let raw = json!({
            "body": "[[1], {\"k\": 2}, null]",
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "proj.echo", "id": "t1"},
            "properties": {"body_encoding": "utf-8", "delivery_tag": "d1",
                           "delivery_info": {"exchange": "", "routing_key": "q"}}
        });
        let message = TaskMessage::from_json(raw.to_string().as_bytes()).unwrap();
        assert_eq!(message.args, vec![json!(1)]);
        assert_eq!(message.kwargs.get("k"), Some(&json!(2)));
        assert_eq!(message.embed, Embed::default());
        assert_eq!(message.queue(), "q");
    }

    #[test]
    fn result_meta_has_celery_shape() {
        let meta = ResultMeta::success("t1", json!(7));
        let value: Value = serde_json::from_str(&meta.to_json()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "status",
            "result",
            "traceback",
            "children",
            "date_done",
            "task_id",
        ] {
            assert!(keys.contains(&key), "{key} missing from {value}");
        }
        assert_eq!(value["status"], "SUCCESS");
        assert!(
            meta.to_json()
                .starts_with("{\"status\": \"SUCCESS\", \"result\": 7")
        );
        assert!(meta.error().is_none());

        let failed = ResultMeta::failure("t2", "RuntimeError", "builtins", "boom");
        assert_eq!(failed.status, TaskState::Failure);
        assert_eq!(failed.error().as_deref(), Some("RuntimeError: boom"));
        assert_eq!(
            ResultMeta::from_json(failed.to_json().as_bytes()).unwrap(),
            failed
        );
        assert!(ResultMeta::revoked("t3", "expired").status.is_ready());
        assert!(!TaskState::Pending.is_ready());
    }
}
