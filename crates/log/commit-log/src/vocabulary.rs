//! Which events a build reads: the aggregate types, their event types, and the newest version
//! of each event it understands.
//!
//! Rolling deploys ship writers before readers (BRIEF §5): the command API may append an event
//! type or version that the projectors and flows running at that moment do not know. Such an
//! envelope is well-formed, so it is not poison; it must not be passed either (a reader that
//! parses a newer version as the older one silently drops what the new version added). The
//! decoder therefore checks every event against a [`Vocabulary`] and reports the commit as
//! [`DecodeError::NotUnderstood`](crate::DecodeError::NotUnderstood), with its header, so the
//! reader can stop that aggregate until a build that knows the event resumes it.
//!
//! [`Vocabulary::this_build`] is read off the domain's event enums themselves (their serde
//! variant names), so it cannot fall out of step with them. An older build is this build's
//! vocabulary minus what was added since ([`Vocabulary::without_event`],
//! [`Vocabulary::reading_up_to`]): that is how the tests play the consumer that has not been
//! upgraded yet.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use cqrs_es::Aggregate;
use domain::inventory::{InventoryEvent, StoreInventory};
use domain::loyalty::{LoyaltyAccount, LoyaltyEvent};
use domain::{Menu, MenuEvent, Order, OrderEvent};
use serde::de::{self, Deserialize, Visitor};

/// The version of an event this build writes when the event's payload does not parse (so its
/// own `event_version()` cannot be asked): every event is at 1.0 except those listed. Only the
/// classification of unparsable payloads depends on it (newer than this: not understood; else
/// poison), and both outcomes stop the aggregate, so a stale entry cannot let a commit pass.
const WRITTEN_VERSIONS: &[(&str, &str, EventVersion)] = &[
    (
        Order::TYPE,
        "OrderPlaced",
        EventVersion { major: 1, minor: 1 },
    ),
    (
        StoreInventory::TYPE,
        "ReorderRequested",
        EventVersion { major: 1, minor: 1 },
    ),
];

/// An event version, `major.minor` (e.g. `1.1`); ordered as numbers, not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventVersion {
    /// A change no earlier reader can read.
    pub major: u32,
    /// A compatible addition (older readers would drop it silently).
    pub minor: u32,
}

impl EventVersion {
    /// Parses `major.minor`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('.')?;
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        };
        Some(Self {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl fmt::Display for EventVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The events a build reads, per aggregate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    /// (aggregate type, event type) -> the newest version read, or `None` for "whatever
    /// version this build's own event reports" (the real build).
    events: BTreeMap<(String, String), Option<EventVersion>>,
}

impl Vocabulary {
    /// Everything this build's domain defines, at the versions it writes.
    pub fn this_build() -> &'static Vocabulary {
        static THIS_BUILD: OnceLock<Vocabulary> = OnceLock::new();
        THIS_BUILD.get_or_init(|| {
            let mut events = BTreeMap::new();
            let mut add = |aggregate_type: &str, event_types: &[&str]| {
                for event_type in event_types {
                    events.insert(
                        ((*aggregate_type).to_owned(), (*event_type).to_owned()),
                        None,
                    );
                }
            };
            add(Order::TYPE, variant_names::<OrderEvent>());
            add(StoreInventory::TYPE, variant_names::<InventoryEvent>());
            add(LoyaltyAccount::TYPE, variant_names::<LoyaltyEvent>());
            add(Menu::TYPE, variant_names::<MenuEvent>());
            Vocabulary { events }
        })
    }

    /// This vocabulary without `event_type` of `aggregate_type`: a build from before it existed.
    pub fn without_event(mut self, aggregate_type: &str, event_type: &str) -> Self {
        self.events
            .remove(&(aggregate_type.to_owned(), event_type.to_owned()));
        self
    }

    /// This vocabulary reading `event_type` of `aggregate_type` only up to `version`: a build
    /// from before a newer version of it.
    pub fn reading_up_to(
        mut self,
        aggregate_type: &str,
        event_type: &str,
        version: EventVersion,
    ) -> Self {
        self.events.insert(
            (aggregate_type.to_owned(), event_type.to_owned()),
            Some(version),
        );
        self
    }

    /// Whether any event of `aggregate_type` is known.
    pub(crate) fn knows_aggregate(&self, aggregate_type: &str) -> bool {
        self.events
            .range((aggregate_type.to_owned(), String::new())..)
            .next()
            .is_some_and(|((kind, _), _)| kind == aggregate_type)
    }

    /// `None` when the event type is unknown; else the newest version read, `None` inside
    /// meaning "as this build writes it".
    pub(crate) fn event(
        &self,
        aggregate_type: &str,
        event_type: &str,
    ) -> Option<Option<EventVersion>> {
        self.events
            .get(&(aggregate_type.to_owned(), event_type.to_owned()))
            .copied()
    }
}

/// The version this build writes of an event whose payload did not parse.
pub(crate) fn written_version(aggregate_type: &str, event_type: &str) -> EventVersion {
    WRITTEN_VERSIONS
        .iter()
        .find(|(kind, name, _)| *kind == aggregate_type && *name == event_type)
        .map_or(EventVersion { major: 1, minor: 0 }, |(_, _, version)| {
            *version
        })
}

/// The variant names of an externally tagged enum, as serde sees them: the `event_type` of
/// every event it defines.
fn variant_names<T: Deserialize<'static>>() -> &'static [&'static str] {
    let mut probe = VariantProbe(&[]);
    // The probe always fails: it only records what `deserialize_enum` was asked for.
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that answers nothing and records the variant names an enum asks for.
struct VariantProbe(&'static [&'static str]);

impl<'de> de::Deserializer<'de> for &mut VariantProbe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("the probe only reads enum variant names"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = variants;
        Err(de::Error::custom("variant names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::DomainEvent as _;

    #[test]
    fn this_build_knows_every_event_of_every_aggregate() {
        let vocabulary = Vocabulary::this_build();
        for (kind, event) in [
            (Order::TYPE, "OrderPlaced"),
            (Order::TYPE, "PaymentRefunded"),
            (StoreInventory::TYPE, "StockReserved"),
            (LoyaltyAccount::TYPE, "TierUpgraded"),
            (Menu::TYPE, "MenuItemAvailabilityChanged"),
        ] {
            assert_eq!(vocabulary.event(kind, event), Some(None), "{kind} {event}");
        }
        assert_eq!(vocabulary.event(Order::TYPE, "StockReserved"), None);
        assert!(vocabulary.knows_aggregate(Menu::TYPE));
        assert!(!vocabulary.knows_aggregate("voucher"));
        assert_eq!(variant_names::<OrderEvent>().len(), 10);
    }

    #[test]
    fn versions_order_as_numbers() {
        let v = |text| EventVersion::parse(text).expect("a version");
        assert!(v("1.10") > v("1.9"));
        assert!(v("2.0") > v("1.99"));
        assert_eq!(v("1.1").to_string(), "1.1");
        for bad in ["", "1", "1.", ".1", "1.1.1", "a.b", "-1.0", "1.+2"] {
            assert_eq!(EventVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_written_versions_table_matches_the_domain() {
        let placed: OrderEvent = serde_json::from_str(
            r#"{"OrderPlaced": {"order_id": "5cab9d76-5e8f-4dc8-b04b-3c054cbb5a9b",
                "store_id": "store-2", "customer_id": "customer-1", "lines": [], "note": "",
                "total": 0}}"#,
        )
        .expect("an OrderPlaced payload");
        assert_eq!(
            written_version(Order::TYPE, "OrderPlaced").to_string(),
            placed.event_version()
        );
        let accepted = OrderEvent::OrderAccepted {};
        assert_eq!(
            written_version(Order::TYPE, "OrderAccepted").to_string(),
            accepted.event_version()
        );
    }
}
