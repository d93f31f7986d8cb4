//! What each sink is sent for each logged event: pure functions from an [`Event`] to zero or
//! more JSON bodies, in the payload shapes of `reference/SPEC.md` §9 (Arbiter in the shape
//! the real Arbiter accepts, §9.1 interop note).
//!
//! Incident events carry the incident (`id, component_id, pact_key, severity, count,
//! sample, resolution, …`) in `data`; fix events carry the fix result (`id, incident_id,
//! component_id, status, spend_usd, contract_changed, pact_key, error_summary, …`). Missing
//! fields are tolerated: a string becomes `""`, a number `0`, a flag `false`.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::config::{ArbiterEventMap, TrustMapping};
use crate::store::{Event, EventKind};

/// How many characters of the first line make an `error_summary` / `error` (the reference's
/// `raw_text[:200]`).
pub const SUMMARY_CHARS: usize = 200;

/// What a sink wants, resolved from the config.
#[derive(Debug, Clone, PartialEq)]
pub enum Rules {
    /// Arbiter `POST /trust/event`.
    Arbiter {
        /// `arbiter.event_map`.
        map: ArbiterEventMap,
        /// `arbiter.trust_event_on_fix`.
        on_fix: bool,
    },
    /// Stigmergy `POST /signals`.
    Stigmergy,
    /// Chronicler `POST /events`.
    Chronicler {
        /// This store's salt of the event ids ([`event_uuid`]); set when delivery starts.
        salt: u64,
    },
    /// The notify webhook.
    Notify {
        /// `notify.on_error`: `error` on new incidents, `escalated` on escalations.
        on_error: bool,
        /// `notify.on_fix`: `fix` on fixes.
        on_fix: bool,
    },
}

impl Rules {
    /// The bodies to POST for `ev`, in order (often none).
    pub fn bodies(&self, ev: &Event) -> Vec<Value> {
        match self {
            Rules::Arbiter { map, on_fix } => arbiter(map, *on_fix, ev).into_iter().collect(),
            Rules::Stigmergy => stigmergy(ev),
            Rules::Chronicler { salt } => chronicler(*salt, ev).into_iter().collect(),
            Rules::Notify { on_error, on_fix } => {
                notify(*on_error, *on_fix, ev).into_iter().collect()
            }
        }
    }
}

fn text<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or("")
}

fn flag(data: &Value, key: &str) -> bool {
    data.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

/// The event's component: the event's own field, else the one in its data.
pub(crate) fn component(ev: &Event) -> &str {
    if ev.component_id.is_empty() {
        text(&ev.data, "component_id")
    } else {
        &ev.component_id
    }
}

/// The fix id of a fix event: the event's own field, else the fix result's `id`.
fn fix_id(ev: &Event) -> &str {
    if ev.fix_id.is_empty() {
        text(&ev.data, "id")
    } else {
        &ev.fix_id
    }
}

fn incident_id(ev: &Event) -> &str {
    if ev.incident_id.is_empty() {
        text(&ev.data, "incident_id")
    } else {
        &ev.incident_id
    }
}

/// The first [`SUMMARY_CHARS`] characters of `s`.
fn summary(s: &str) -> String {
    s.chars().take(SUMMARY_CHARS).collect()
}

/// The error summary of an event: an incident's first line, or a fix result's
/// `error_summary`.
fn error_summary(ev: &Event) -> String {
    match text(&ev.data, "error_summary") {
        "" => summary(text(&ev.data, "sample")),
        s => summary(s),
    }
}

/// Arbiter: a new (or regressed) incident of a component is `production_error`; a proven fix
/// `sentinel_fix` and a failed one `sentinel_fix_failure` (those two only with
/// `trust_event_on_fix`). Events without a component are not sent (Arbiter requires a
/// non-empty `node_id`).
pub fn arbiter(map: &ArbiterEventMap, on_fix: bool, ev: &Event) -> Option<Value> {
    let (m, run_id): (TrustMapping, &str) = match ev.kind {
        EventKind::IncidentDetected | EventKind::IncidentRegressed => {
            (map.production_error, incident_id(ev))
        }
        EventKind::FixCompleted if on_fix => (map.sentinel_fix, fix_id(ev)),
        EventKind::FixFailed if on_fix => (map.sentinel_fix_failure, fix_id(ev)),
        _ => return None,
    };
    let node = component(ev);
    if node.is_empty() || run_id.is_empty() {
        return None;
    }
    Some(json!({
        "node_id": node,
        "event": m.event.as_str(),
        "weight": m.weight.clamp(-1.0, 1.0),
        "run_id": run_id,
        "timestamp": rfc3339(ev.at),
    }))
}

/// Stigmergy (§9.2): `production_error` for a new incident of a component, `fix_applied` (and
/// `contract_tightened` when the contract changed) for a proven fix, `fix_failed` for a
/// failed one.
pub fn stigmergy(ev: &Event) -> Vec<Value> {
    let actor = component(ev);
    if actor.is_empty() {
        return Vec::new();
    }
    let pact_key = text(&ev.data, "pact_key");
    let signal = |kind: &str, content: Value| {
        json!({
            "source": "sentinel",
            "type": kind,
            "actor": actor,
            "content": content,
            "weight": 1.0,
            "timestamp": rfc3339(ev.at),
        })
    };
    match ev.kind {
        EventKind::IncidentDetected => vec![signal(
            "production_error",
            json!({"pact_key": pact_key, "error_summary": error_summary(ev)}),
        )],
        EventKind::FixCompleted => {
            let changed = flag(&ev.data, "contract_changed");
            let mut out = vec![signal(
                "fix_applied",
                json!({
                    "pact_key": pact_key,
                    "error_summary": error_summary(ev),
                    "fix_applied": true,
                    "contract_changed": changed,
                }),
            )];
            if changed {
                out.push(signal(
                    "contract_tightened",
                    json!({"pact_key": pact_key, "contract_changed": true}),
                ));
            }
            out
        }
        EventKind::FixFailed => vec![signal(
            "fix_failed",
            json!({
                "pact_key": pact_key,
                "error_summary": error_summary(ev),
                "fix_applied": false,
            }),
        )],
        _ => Vec::new(),
    }
}

/// Chronicler: one `Event` per lifecycle step that really happened, in the shape its webhook
/// receiver validates (jmcentire/chronicler `sources/webhook.py`): `event_id` (a UUID4,
/// [`event_uuid`]: the same for every attempt at the same outbox event), `event_kind`
/// (`sentinel.incident.detected`, `.remediating` when a fixer took it, `.resolved`,
/// `.escalated`), `timestamp` (RFC 3339, UTC), `source: "sentinel"`, `payload` (the fields
/// the reference sent: incident, component, PACT key, severity, signal count, spend, its
/// `incident.*` name and timestamp) and `correlation_keys`, the `{name: value}` strings
/// Chronicler's stories group by (`incident_id`, `component_id`, `pact_key`; empty ones left
/// out, as Chronicler's model refuses empty values). Unlike the reference, no
/// `triaging` / `remediating` step is invented for an incident escalated without a fix attempt.
pub fn chronicler(salt: u64, ev: &Event) -> Option<Value> {
    let step = match ev.kind {
        EventKind::IncidentDetected => "detected",
        EventKind::FixStarted => "remediating",
        EventKind::IncidentResolved => "resolved",
        EventKind::IncidentEscalated => "escalated",
        _ => return None,
    };
    let d = &ev.data;
    let at = rfc3339(ev.at);
    let pact_key = text(d, "pact_key");
    let mut keys = serde_json::Map::new();
    for (k, v) in [
        ("incident_id", incident_id(ev)),
        ("component_id", component(ev)),
        ("pact_key", pact_key),
    ] {
        if !v.is_empty() {
            keys.insert(k.into(), v.into());
        }
    }
    Some(json!({
        "event_id": event_uuid(salt, ev.seq),
        "event_kind": format!("sentinel.incident.{step}"),
        "timestamp": at,
        "source": "sentinel",
        "payload": {
            "incident_id": incident_id(ev),
            "component_id": component(ev),
            "pact_key": pact_key,
            "severity": text(d, "severity"),
            "signal_count": d.get("count").and_then(Value::as_u64).unwrap_or(0),
            "spend_usd": d.get("spend_usd").and_then(Value::as_f64).unwrap_or(0.0),
            "event": format!("incident.{step}"),
            "timestamp": at,
        },
        "correlation_keys": keys,
    }))
}

/// The id of outbox event `seq` of the store whose event-id salt is `salt`, as a UUID of
/// version 4 (random) format, lowercase: 122 bits of xxh3-128 over the two. The same event
/// always gets the same id, so a retried delivery is the same Chronicler event; another
/// event, or the same sequence number of another store (another salt), another id.
pub fn event_uuid(salt: u64, seq: u64) -> String {
    let mut b = xxhash_rust::xxh3::xxh3_128_with_seed(&seq.to_le_bytes(), salt).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10xx
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The notify webhook (§9.5 envelope): `error` for a new incident and `escalated` for an
/// escalation (with `on_error`; the reference sent nothing on escalation), `fix` for a proven
/// fix (with `on_fix`).
pub fn notify(on_error: bool, on_fix: bool, ev: &Event) -> Option<Value> {
    let d = &ev.data;
    let (kind, payload) = match ev.kind {
        EventKind::IncidentDetected if on_error => (
            "error",
            json!({
                "incident_id": incident_id(ev),
                "component_id": component(ev),
                "severity": text(d, "severity"),
                "error": error_summary(ev),
            }),
        ),
        EventKind::IncidentEscalated if on_error => (
            "escalated",
            json!({
                "incident_id": incident_id(ev),
                "component_id": component(ev),
                "severity": text(d, "severity"),
                "resolution": text(d, "resolution"),
                "error": error_summary(ev),
            }),
        ),
        EventKind::FixCompleted if on_fix => (
            "fix",
            json!({
                "incident_id": incident_id(ev),
                "component_id": component(ev),
                "fix_id": fix_id(ev),
            }),
        ),
        _ => return None,
    };
    let mut body = json!({
        "event_type": kind,
        "timestamp": rfc3339(ev.at),
        "source": "sentinel",
    });
    if let (Some(b), Value::Object(p)) = (body.as_object_mut(), payload) {
        b.extend(p);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustEventType;

    const AT: &str = "2026-11-30T12:00:00Z";

    fn incident_event(kind: EventKind, component: &str) -> Event {
        Event {
            seq: 7,
            at: AT.parse().unwrap(),
            kind,
            incident_id: "0123456789ab".into(),
            fix_id: String::new(),
            component_id: component.into(),
            data: json!({
                "id": "0123456789ab",
                "component_id": component,
                "pact_key": "PACT:auth:login",
                "severity": "high",
                "status": "detected",
                "count": 3,
                "sample": format!("ERROR [PACT:auth:login] {}", "x".repeat(300)),
                "resolution": "auto_remediate_disabled",
            }),
        }
    }

    fn fix_event(kind: EventKind, contract_changed: bool) -> Event {
        Event {
            seq: 9,
            at: AT.parse().unwrap(),
            kind,
            incident_id: "0123456789ab".into(),
            fix_id: "fix-1".into(),
            component_id: "auth".into(),
            data: json!({
                "id": "fix-1",
                "incident_id": "0123456789ab",
                "component_id": "auth",
                "status": if kind == EventKind::FixCompleted { "success" } else { "failure" },
                "spend_usd": 0.42,
                "contract_changed": contract_changed,
                "pact_key": "PACT:auth:login",
                "error_summary": "login failed",
            }),
        }
    }

    fn arb(on_fix: bool) -> Rules {
        Rules::Arbiter {
            map: ArbiterEventMap::default(),
            on_fix,
        }
    }

    #[test]
    fn arbiter_sends_what_arbiter_accepts() {
        let b = arb(true).bodies(&incident_event(EventKind::IncidentDetected, "auth"));
        assert_eq!(
            b,
            vec![json!({
                "node_id": "auth",
                "event": "AUDIT_FAIL",
                "weight": -0.3,
                "run_id": "0123456789ab",
                "timestamp": AT,
            })]
        );
        let b = arb(true).bodies(&fix_event(EventKind::FixCompleted, false));
        assert_eq!(
            b,
            vec![json!({
                "node_id": "auth", "event": "AUDIT_PASS", "weight": 1.0,
                "run_id": "fix-1", "timestamp": AT,
            })]
        );
        let b = arb(true).bodies(&fix_event(EventKind::FixFailed, false));
        assert_eq!(b[0]["event"], "AUDIT_FAIL");
        assert_eq!(b[0]["weight"], -0.5);
        // Every event type sent is one of Arbiter's, every weight in range.
        for body in &b {
            let e = body["event"].as_str().unwrap();
            assert!(TrustEventType::from_name(e).is_some(), "{e}");
            assert!((-1.0..=1.0).contains(&body["weight"].as_f64().unwrap()));
        }
    }

    #[test]
    fn arbiter_skips_what_it_must() {
        // No component: Arbiter requires node_id.
        assert!(
            arb(true)
                .bodies(&incident_event(EventKind::IncidentDetected, ""))
                .is_empty()
        );
        // Fix events only with trust_event_on_fix.
        assert!(
            arb(false)
                .bodies(&fix_event(EventKind::FixCompleted, false))
                .is_empty()
        );
        assert!(
            arb(false)
                .bodies(&fix_event(EventKind::FixFailed, false))
                .is_empty()
        );
        for kind in [
            EventKind::IncidentUpdated,
            EventKind::IncidentEscalated,
            EventKind::IncidentResolved,
            EventKind::FixStarted,
        ] {
            assert!(arb(true).bodies(&incident_event(kind, "auth")).is_empty());
        }
    }

    #[test]
    fn arbiter_mapping_is_configurable() {
        let map = ArbiterEventMap {
            production_error: TrustMapping {
                event: TrustEventType::CanaryTriggered,
                weight: -0.9,
            },
            ..ArbiterEventMap::default()
        };
        let b = Rules::Arbiter { map, on_fix: true }
            .bodies(&incident_event(EventKind::IncidentDetected, "auth"));
        assert_eq!(b[0]["event"], "CANARY_TRIGGERED");
        assert_eq!(b[0]["weight"], -0.9);
    }

    #[test]
    fn stigmergy_signals() {
        let b = Rules::Stigmergy.bodies(&incident_event(EventKind::IncidentDetected, "auth"));
        assert_eq!(b.len(), 1);
        let summary = b[0]["content"]["error_summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), SUMMARY_CHARS);
        assert!(summary.starts_with("ERROR [PACT:auth:login] xxx"));
        assert_eq!(
            b[0],
            json!({
                "source": "sentinel", "type": "production_error", "actor": "auth",
                "content": {"pact_key": "PACT:auth:login", "error_summary": summary},
                "weight": 1.0, "timestamp": AT,
            })
        );
        let b = Rules::Stigmergy.bodies(&fix_event(EventKind::FixCompleted, true));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["type"], "fix_applied");
        assert_eq!(
            b[0]["content"],
            json!({"pact_key": "PACT:auth:login", "error_summary": "login failed",
                   "fix_applied": true, "contract_changed": true})
        );
        assert_eq!(b[1]["type"], "contract_tightened");
        assert_eq!(
            b[1]["content"],
            json!({"pact_key": "PACT:auth:login", "contract_changed": true})
        );
        let b = Rules::Stigmergy.bodies(&fix_event(EventKind::FixCompleted, false));
        assert_eq!(b.len(), 1);
        let b = Rules::Stigmergy.bodies(&fix_event(EventKind::FixFailed, false));
        assert_eq!(
            b[0]["content"],
            json!({"pact_key": "PACT:auth:login", "error_summary": "login failed",
                   "fix_applied": false})
        );
        assert!(
            Rules::Stigmergy
                .bodies(&incident_event(EventKind::IncidentDetected, ""))
                .is_empty()
        );
    }

    const CHRONICLER: Rules = Rules::Chronicler { salt: 42 };

    /// Chronicler's `Event.event_id` check (`sources/webhook.py`).
    fn is_uuid4(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                14 => c == '4',
                19 => matches!(c, '8' | '9' | 'a' | 'b'),
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            })
    }

    #[test]
    fn chronicler_events_only_for_what_happened() {
        let b = CHRONICLER.bodies(&incident_event(EventKind::IncidentDetected, "auth"));
        assert_eq!(b.len(), 1);
        let id = b[0]["event_id"].as_str().unwrap().to_string();
        assert!(is_uuid4(&id), "{id}");
        assert_eq!(
            b[0],
            json!({
                "event_id": id,
                "event_kind": "sentinel.incident.detected",
                "timestamp": AT,
                "source": "sentinel",
                "payload": {
                    "incident_id": "0123456789ab", "component_id": "auth",
                    "pact_key": "PACT:auth:login", "severity": "high", "signal_count": 3,
                    "spend_usd": 0.0, "event": "incident.detected", "timestamp": AT,
                },
                "correlation_keys": {
                    "incident_id": "0123456789ab", "component_id": "auth",
                    "pact_key": "PACT:auth:login",
                },
            })
        );
        let kind = |k| {
            CHRONICLER
                .bodies(&incident_event(k, "auth"))
                .first()
                .map(|b| b["event_kind"].as_str().unwrap().to_string())
        };
        assert_eq!(
            kind(EventKind::IncidentEscalated).as_deref(),
            Some("sentinel.incident.escalated")
        );
        assert_eq!(
            kind(EventKind::IncidentResolved).as_deref(),
            Some("sentinel.incident.resolved")
        );
        assert_eq!(
            kind(EventKind::FixStarted).as_deref(),
            Some("sentinel.incident.remediating")
        );
        assert_eq!(kind(EventKind::IncidentUpdated), None);
        // A fix result carries the spend.
        let b = CHRONICLER.bodies(&Event {
            kind: EventKind::FixStarted,
            ..fix_event(EventKind::FixStarted, false)
        });
        assert_eq!(b[0]["payload"]["spend_usd"], 0.42);
        // An unattributed incident: no empty correlation key (Chronicler refuses them).
        let b = CHRONICLER.bodies(&Event {
            data: json!({"id": "0123456789ab", "count": 1}),
            ..incident_event(EventKind::IncidentDetected, "")
        });
        assert_eq!(
            b[0]["correlation_keys"],
            json!({"incident_id": "0123456789ab"})
        );
    }

    #[test]
    fn chronicler_event_ids_are_stable_per_event_and_store() {
        let a = event_uuid(7, 1);
        assert_eq!(a, event_uuid(7, 1), "a retry is the same event");
        assert_ne!(a, event_uuid(7, 2));
        assert_ne!(a, event_uuid(8, 1), "another store, another id");
        let mut seen = std::collections::HashSet::new();
        for seq in 0..10_000 {
            let id = event_uuid(0xdead_beef, seq);
            assert!(is_uuid4(&id), "{id}");
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn notify_envelopes() {
        let rules = Rules::Notify {
            on_error: true,
            on_fix: true,
        };
        let b = rules.bodies(&incident_event(EventKind::IncidentDetected, "auth"));
        assert_eq!(b[0]["event_type"], "error");
        assert_eq!(b[0]["source"], "sentinel");
        assert_eq!(b[0]["timestamp"], AT);
        assert_eq!(b[0]["incident_id"], "0123456789ab");
        assert_eq!(b[0]["component_id"], "auth");
        assert_eq!(b[0]["severity"], "high");
        assert_eq!(
            b[0]["error"].as_str().unwrap().chars().count(),
            SUMMARY_CHARS
        );
        let b = rules.bodies(&incident_event(EventKind::IncidentEscalated, "auth"));
        assert_eq!(b[0]["event_type"], "escalated");
        assert_eq!(b[0]["resolution"], "auto_remediate_disabled");
        let b = rules.bodies(&fix_event(EventKind::FixCompleted, false));
        assert_eq!(
            b,
            vec![json!({
                "event_type": "fix", "timestamp": AT, "source": "sentinel",
                "incident_id": "0123456789ab", "component_id": "auth", "fix_id": "fix-1",
            })]
        );
        assert!(
            rules
                .bodies(&fix_event(EventKind::FixFailed, false))
                .is_empty()
        );
        let off = Rules::Notify {
            on_error: false,
            on_fix: false,
        };
        assert!(
            off.bodies(&incident_event(EventKind::IncidentDetected, "auth"))
                .is_empty()
        );
        assert!(
            off.bodies(&incident_event(EventKind::IncidentEscalated, "auth"))
                .is_empty()
        );
        assert!(
            off.bodies(&fix_event(EventKind::FixCompleted, false))
                .is_empty()
        );
    }
}
