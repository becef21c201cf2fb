//! The event envelope: the provenance every change in the log carries.
//!
//! One event is one Automerge change, and the change's commit message is the envelope encoded as
//! JSON by [`Envelope::encode`]. The message is replicated and immutable, so the envelope format
//! is a storage *and* wire format: it carries a version number `v`, [`Envelope::decode`] refuses
//! a newer version instead of guessing, and fields are only ever added as optional.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

use crate::hex;
use crate::record::RecordId;

/// The envelope version this build writes and the newest it reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// Declares an id that is a ULID: ordered by creation time, written as its 26-character text.
macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $parse_error:ident, $description:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ulid::Ulid);

        impl $name {
            /// A fresh id, created now.
            pub fn new() -> Self {
                Self(ulid::Ulid::new())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::envelope::ParseError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                ulid::Ulid::from_string(text)
                    .map(Self)
                    .map_err(|_| $crate::envelope::ParseError::$parse_error(text.to_owned()))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $crate::envelope::ulid_schema($description)
            }
        }
    };
}
pub(crate) use ulid_id;

ulid_id!(
    /// The id of one event: a ULID, so events sort by creation time.
    EventId,
    EventId,
    "The id of one event (ULID)."
);

/// For `#[schemars(schema_with = ...)]` on plain `Ulid` fields.
pub(crate) fn ulid_field(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    ulid_schema("A ULID.")
}

pub(crate) fn ulid_schema(description: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$",
        "description": description,
    })
}

/// A device of the workspace, named by its Ed25519 public key (which is also its iroh node key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 32]);

impl DeviceId {
    /// The first eight hex digits: enough to tell a person's devices apart on screen.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        hex::decode_array(text).map(Self).ok_or_else(|| ParseError::DeviceId(text.to_owned()))
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DeviceId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "A device's Ed25519 public key, hex.",
        })
    }
}

/// What kind of event this is: dot-separated lowercase words, e.g. `task.created`,
/// `plan.step.executed`, `grant.revoked`, `plugin.read`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventKind(String);

impl EventKind {
    /// Checks the shape: at least two dot-separated words of `a-z`, `0-9` and `_`.
    pub fn new(kind: impl Into<String>) -> Result<Self, ParseError> {
        let kind = kind.into();
        let words: Vec<&str> = kind.split('.').collect();
        let word_ok = |word: &&str| {
            !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if words.len() >= 2 && words.iter().all(word_ok) && kind.len() <= 64 {
            Ok(Self(kind))
        } else {
            Err(ParseError::EventKind(kind))
        }
    }

    /// A kind written as a literal in code. Literals are checked by the tests that use them;
    /// a malformed one would be a bug in this codebase, never input.
    pub fn from_static(kind: &'static str) -> Self {
        debug_assert!(Self::new(kind).is_ok(), "malformed event kind literal {kind:?}");
        Self(kind.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for EventKind {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        Self::new(text)
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for EventKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventKind".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+)+$",
            "maxLength": 64,
            "description": "Dot-separated kind of event, e.g. task.created.",
        })
    }
}

/// Who did it. Its text form is `user`, `agent:NAME`, `plugin:NAME`, `plan:ID/step:N` or
/// `system`; names are non-empty and contain neither `:` nor `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Actor {
    /// The person, through the app or the command line.
    User,
    /// A chat agent, e.g. `agent:task`.
    Agent(String),
    /// A batch agent, e.g. `plugin:email-scanner`.
    Plugin(String),
    /// One step of an execution plan the user approved.
    PlanStep { plan: Ulid, step: u32 },
    /// The engine itself (workspace creation, compaction, migrations).
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad`, so tables can align actors with `{:<12}`.
        let text = match self {
            Actor::User => "user".to_owned(),
            Actor::Agent(name) => format!("agent:{name}"),
            Actor::Plugin(name) => format!("plugin:{name}"),
            Actor::PlanStep { plan, step } => format!("plan:{plan}/step:{step}"),
            Actor::System => "system".to_owned(),
        };
        f.pad(&text)
    }
}

impl FromStr for Actor {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let invalid = || ParseError::Actor(text.to_owned());
        let name_ok = |name: &str| {
            !name.is_empty() && name.len() <= 64 && !name.contains([':', '/']) && !name.contains(char::is_whitespace)
        };
        match text.split_once(':') {
            None if text == "user" => Ok(Actor::User),
            None if text == "system" => Ok(Actor::System),
            Some(("agent", name)) if name_ok(name) => Ok(Actor::Agent(name.to_owned())),
            Some(("plugin", name)) if name_ok(name) => Ok(Actor::Plugin(name.to_owned())),
            Some(("plan", rest)) => {
                let (plan, step) = rest.split_once("/step:").ok_or_else(invalid)?;
                let plan = Ulid::from_string(plan).map_err(|_| invalid())?;
                // Reject leading '+' and other forms `u32::from_str` tolerates: one text per actor.
                if step.is_empty()
                    || !step.bytes().all(|b| b.is_ascii_digit())
                    || (step.len() > 1 && step.starts_with('0'))
                {
                    return Err(invalid());
                }
                let step = step.parse().map_err(|_| invalid())?;
                Ok(Actor::PlanStep { plan, step })
            }
            _ => Err(invalid()),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Actor".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(user|system|agent:[^:/\\s]+|plugin:[^:/\\s]+|plan:[0-9A-HJKMNP-TV-Z]{26}/step:(0|[1-9][0-9]*))$",
            "description": "Who acted: user, agent:NAME, plugin:NAME, plan:ID/step:N or system.",
        })
    }
}

/// The record an event is about, when it is about one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Subject {
    /// The collection's document name, e.g. `tasks` or `activity/2026-11`.
    pub document: String,
    pub record: RecordId,
}

/// The provenance of one event. Together with the change's operations (its effect) it says who
/// did what, on which device, when, and as part of what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Envelope format version, see [`ENVELOPE_VERSION`].
    pub v: u32,
    pub id: EventId,
    pub kind: EventKind,
    pub actor: Actor,
    pub device: DeviceId,
    pub time: DateTime<Utc>,
    /// The chat turn, plan or plugin run this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_field")]
    pub correlation: Option<Ulid>,
    /// The event that led to this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
}

impl Envelope {
    /// The JSON text stored as the change's commit message.
    pub fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads a commit message. A newer version than [`ENVELOPE_VERSION`] is refused with
    /// [`EnvelopeError::UnsupportedVersion`], whatever its other fields say. One parse when
    /// the message is a valid envelope (`log`, imports and the audit read every event's).
    pub fn decode(message: &str) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        let supported = |v: u32| v != 0 && v <= ENVELOPE_VERSION;
        let parsed = serde_json::from_str::<Self>(message);
        if let Ok(envelope) = &parsed
            && supported(envelope.v)
        {
            return parsed.map_err(|e| EnvelopeError::Malformed(e.to_string()));
        }
        let version: VersionOnly =
            serde_json::from_str(message).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if !supported(version.v) {
            return Err(EnvelopeError::UnsupportedVersion { found: version.v, supported: ENVELOPE_VERSION });
        }
        parsed.map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

/// Why a commit message is not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("envelope version {found} is newer than this build supports ({supported}); update Adiuva")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

/// A text that is not a valid identifier of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("not an event id (ULID): {0:?}")]
    EventId(String),
    #[error("not a record id (ULID): {0:?}")]
    RecordId(String),
    #[error("not a device id (64 hex digits): {0:?}")]
    DeviceId(String),
    #[error("not an event kind (like task.created): {0:?}")]
    EventKind(String),
    #[error("not an actor (user, agent:NAME, plugin:NAME, plan:ID/step:N, system): {0:?}")]
    Actor(String),
    #[error("unknown collection: {0:?}")]
    Collection(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: EventId::new(),
            kind: EventKind::new("task.created").unwrap(),
            actor: Actor::PlanStep { plan: Ulid::new(), step: 2 },
            device: DeviceId([7; 32]),
            time: Utc::now(),
            correlation: Some(Ulid::new()),
            causation: Some(EventId::new()),
            subject: Some(Subject { document: "tasks".into(), record: RecordId::new() }),
        }
    }

    #[test]
    fn envelope_round_trips_through_its_message() {
        let envelope = sample();
        assert_eq!(Envelope::decode(&envelope.encode().unwrap()).unwrap(), envelope);
    }

    #[test]
    fn newer_envelope_version_is_refused_not_guessed() {
        let message = sample().encode().unwrap().replacen("\"v\":1", "\"v\":2", 1);
        assert_eq!(Envelope::decode(&message), Err(EnvelopeError::UnsupportedVersion { found: 2, supported: 1 }));
        // Also when the newer version's other fields are ones this build does not know.
        let message = message.replacen('{', "{\"added_later\":[1,2],", 1);
        assert_eq!(Envelope::decode(&message), Err(EnvelopeError::UnsupportedVersion { found: 2, supported: 1 }));
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        for message in ["", "{}", "[1]", "{\"v\":1}", "{\"v\":\"1\"}", "{\"v\":0}"] {
            assert!(Envelope::decode(message).is_err(), "{message}");
        }
    }

    #[test]
    fn actor_text_forms() {
        let plan = Ulid::new();
        for (text, actor) in [
            ("user".to_owned(), Actor::User),
            ("system".to_owned(), Actor::System),
            ("agent:task".to_owned(), Actor::Agent("task".into())),
            ("plugin:email-scanner".to_owned(), Actor::Plugin("email-scanner".into())),
            (format!("plan:{plan}/step:0"), Actor::PlanStep { plan, step: 0 }),
        ] {
            assert_eq!(text.parse::<Actor>().unwrap(), actor);
            assert_eq!(actor.to_string(), text);
        }
        for bad in [
            "",
            "agent:",
            "agent:a/b",
            "robot:x",
            "plan:x/step:1",
            &format!("plan:{plan}/step:+1"),
            &format!("plan:{plan}/step:01"),
            "user:x",
        ] {
            assert!(bad.parse::<Actor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn event_kinds() {
        for good in ["task.created", "plan.step.executed", "grant.revoked", "plugin.read"] {
            assert!(EventKind::new(good).is_ok(), "{good}");
        }
        for bad in ["task", "Task.created", "task..created", ".task", "task.created ", ""] {
            assert!(EventKind::new(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(message in ".*") {
            let _ = Envelope::decode(&message);
        }

        #[test]
        fn actor_parse_display_round_trip(text in "(user|system|agent:[a-z-]{1,8}|plugin:[a-z-]{1,8})") {
            let actor: Actor = text.parse().unwrap();
            prop_assert_eq!(actor.to_string(), text);
        }
    }
}
