//! Value objects: parsed once at the boundary, trusted everywhere after.
//!
//! Constructors (`parse`, `new`) enforce the rules. Deserialization deliberately does not:
//! serialized values come from events and snapshots that were valid when written, and a rule
//! tightened later must never make shipped history unreadable.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Mul};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;

/// Declares a string newtype with the accessors and traits every textual value object shares.
macro_rules! text_value {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_value!(
    /// A store's identifier: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    StoreId
);
text_value!(
    /// A customer's identifier: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    CustomerId
);
text_value!(
    /// A stock-keeping unit: 1 to 32 characters of `A-Z 0-9 -`, e.g. `LATTE-12`.
    Sku
);
text_value!(
    /// One customisation of an order line, e.g. "oat milk": 1 to 60 characters on one line.
    Customisation
);
text_value!(
    /// A customer's note on an order: up to 280 characters, kept exactly as written; it may
    /// span lines (`\n`, `\t`) but holds no other control character.
    Note
);
text_value!(
    /// Why something was done (a cancellation, a stock adjustment): 1 to 200 characters.
    Reason
);
text_value!(
    /// A menu item's display name: 1 to 80 characters on one line.
    ItemName
);
text_value!(
    /// An identifier issued by another system, such as a payment id from the gateway or a
    /// redemption reference: 1 to 64 characters on one line.
    ExternalRef
);
text_value!(
    /// How an order is to be paid: a token the payment gateway issued for the customer's card
    /// (never a card number in production; the sandbox gateway's test cards are tokens of their
    /// own): 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    PaymentToken
);

impl StoreId {
    /// Parses a store id.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        identifier("store_id", value).map(Self)
    }
}

impl CustomerId {
    /// Parses a customer id.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        identifier("customer_id", value).map(Self)
    }
}

impl Sku {
    /// Parses a SKU. Lowercase is refused rather than folded so that one product never has two
    /// spellings in the log.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let error = |message: String| Err(ValidationError::new("sku", message));
        let len = value.chars().count();
        if !(1..=32).contains(&len) {
            return error(format!("must be 1 to 32 characters, got {len}"));
        }
        if value.chars().any(|c| c.is_ascii_lowercase()) {
            return error(format!(
                "must be uppercase: got {value:?}, did you mean {:?}?",
                value.to_ascii_uppercase()
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|&c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'))
        {
            return error(format!(
                "may contain only A-Z, 0-9 and '-', found {c:?} in {value:?}"
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl Customisation {
    /// Parses a customisation.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        one_line("customisation", value, 60).map(Self)
    }
}

impl Note {
    /// Parses a note; the empty note means "no note". A note may span lines: `\n` and `\t` are
    /// kept, every other control character (NUL, `\r`, escape sequences, C1 controls) is
    /// refused.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let len = value.chars().count();
        if len > 280 {
            return Err(ValidationError::new(
                "note",
                format!("must be at most 280 characters, got {len}"),
            ));
        }
        no_control_characters("note", value, &['\n', '\t'])?;
        Ok(Self(value.to_owned()))
    }

    /// True when the customer left no note.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Reason {
    /// Parses a reason.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        one_line("reason", value, 200).map(Self)
    }
}

impl ItemName {
    /// Parses a menu item name.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        one_line("name", value, 80).map(Self)
    }
}

impl ExternalRef {
    /// Parses an external reference.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        one_line("reference", value, 64).map(Self)
    }
}

impl PaymentToken {
    /// Parses a payment token.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        identifier("payment_token", value).map(Self)
    }
}

/// Shared rule of store and customer ids: they end up in URLs, keys and partition keys.
fn identifier(field: &'static str, value: &str) -> Result<String, ValidationError> {
    let len = value.chars().count();
    if !(1..=64).contains(&len) {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to 64 characters, got {len}"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        return Err(ValidationError::new(
            field,
            format!("may contain only letters, digits, '_' and '-', found {c:?}"),
        ));
    }
    Ok(value.to_owned())
}

/// Shared rule of short labels shown on one line of a screen or a receipt.
fn one_line(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {max} characters, got {len}"),
        ));
    }
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be blank"));
    }
    no_control_characters(field, value, &[])?;
    Ok(value.to_owned())
}

/// Refuses every control character (Unicode category Cc: U+0000 to U+001F and U+007F to
/// U+009F) except those in `allowed`. Free text reaches events, the log and the dashboard: a NUL
/// cannot be stored in PostgreSQL's `jsonb` at all (a group commit carrying one is refused by
/// the database), and the others are terminal escapes or invisible breaks no reader expects.
fn no_control_characters(
    field: &'static str,
    value: &str,
    allowed: &[char],
) -> Result<(), ValidationError> {
    match value
        .chars()
        .find(|c| c.is_control() && !allowed.contains(c))
    {
        None => Ok(()),
        Some(c) => {
            let allowed = match allowed {
                [] => "no control characters (it is a single line)".to_owned(),
                some => format!(
                    "no control characters other than {}",
                    some.iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            };
            Err(ValidationError::new(
                field,
                format!("may contain {allowed}, found U+{:04X}", u32::from(c)),
            ))
        }
    }
}

/// An order's identifier, chosen by the caller (a UUID) so that retries address the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// Parses an order id from any textual UUID form; the nil UUID is refused because it is
    /// what an unset field decodes to.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let uuid = Uuid::parse_str(value).map_err(|e| {
            ValidationError::new("order_id", format!("must be a UUID, got {value:?}: {e}"))
        })?;
        if uuid.is_nil() {
            return Err(ValidationError::new("order_id", "must not be the nil UUID"));
        }
        Ok(Self(uuid))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for OrderId {
    /// Hyphenated lowercase, the form used as the aggregate id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// How many of one item an order line asks for: 1 to 99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity one order line may ask for.
    pub const MAX: u32 = 99;

    /// A quantity of 1 to [`Quantity::MAX`].
    pub fn new(value: u32) -> Result<Self, ValidationError> {
        if !(1..=Self::MAX).contains(&value) {
            return Err(ValidationError::new(
                "quantity",
                format!("must be 1 to {}, got {value}", Self::MAX),
            ));
        }
        Ok(Self(value))
    }

    /// The quantity as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An amount of money in cents (integer minor units, never floating point).
///
/// Any i64 is representable; the rules that need a sign or a bound check it where the money
/// enters: menu prices are positive and capped (see `menu::MAX_PRICE`), which keeps any order
/// total (at most 50 lines of 99) many orders of magnitude inside i64.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);

    /// An amount of `cents` cents.
    pub const fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// True when the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl Add for Money {
    type Output = Money;

    fn add(self, other: Money) -> Money {
        Money(self.0 + other.0)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl Mul<Quantity> for Money {
    type Output = Money;

    fn mul(self, quantity: Quantity) -> Money {
        Money(self.0 * i64::from(quantity.get()))
    }
}

impl fmt::Display for Money {
    /// Dollars and cents, e.g. `$4.50` or `-$0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let cents = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:02}", cents / 100, cents % 100)
    }
}

/// A number of loyalty points.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Points(pub u64);

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} points", self.0)
    }
}

/// Who sends a command, as established by the API layer from the caller's credentials.
///
/// What an actor may do to an aggregate depends on the aggregate's state (whose order is it,
/// which store), so the check is a business rule and lives in the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A customer acting for themselves.
    Customer(CustomerId),
    /// A member of staff of one store.
    StoreStaff(StoreId),
    /// A trusted internal service (payment processor, delivery-platform intake, sagas).
    Service,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Customer(id) => write!(f, "customer {id}"),
            Actor::StoreStaff(store) => write!(f, "staff of store {store}"),
            Actor::Service => f.write_str("an internal service"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_accept_letters_digits_underscore_and_dash() {
        assert_eq!(StoreId::parse("s1_North-2").unwrap().as_str(), "s1_North-2");
        assert!(CustomerId::parse(&"c".repeat(64)).is_ok());
    }

    #[test]
    fn identifiers_refuse_empty_too_long_and_other_characters() {
        for bad in ["", &"c".repeat(65), "a b", "s1/2", "café"] {
            let err = CustomerId::parse(bad).unwrap_err();
            assert_eq!(err.field, "customer_id", "{bad:?}");
        }
    }

    #[test]
    fn payment_tokens_are_identifiers() {
        assert!(PaymentToken::parse("4242424242424242").is_ok());
        assert!(PaymentToken::parse("tok_visa-1").is_ok());
        assert!(PaymentToken::parse("").is_err());
        assert!(PaymentToken::parse("4242 4242").is_err());
        assert!(PaymentToken::parse(&"4".repeat(65)).is_err());
    }

    #[test]
    fn sku_refuses_lowercase_with_a_suggestion() {
        let err = Sku::parse("latte-12").unwrap_err();
        assert_eq!(err.field, "sku");
        assert!(err.message.contains("\"LATTE-12\""), "{}", err.message);
    }

    #[test]
    fn sku_length_and_alphabet() {
        assert!(Sku::parse("LATTE-12").is_ok());
        assert!(Sku::parse(&"A".repeat(32)).is_ok());
        assert!(Sku::parse(&"A".repeat(33)).is_err());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("LATTE_12").is_err());
    }

    #[test]
    fn quantity_is_one_to_ninety_nine() {
        assert!(Quantity::new(0).is_err());
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(99).unwrap().get(), 99);
        assert!(Quantity::new(100).is_err());
    }

    #[test]
    fn money_adds_multiplies_and_displays_dollars() {
        let price = Money::from_cents(450);
        assert_eq!(price * Quantity::new(3).unwrap(), Money::from_cents(1350));
        assert_eq!(price + Money::from_cents(5), Money::from_cents(455));
        assert_eq!(price.to_string(), "$4.50");
        assert_eq!(Money::from_cents(5).to_string(), "$0.05");
        assert_eq!(Money::from_cents(-5).to_string(), "-$0.05");
        let total: Money = [price, price].into_iter().sum();
        assert_eq!(total, Money::from_cents(900));
    }

    #[test]
    fn note_is_kept_verbatim_and_may_be_empty() {
        let text = "  extra hot\nplease  ";
        assert_eq!(Note::parse(text).unwrap().as_str(), text);
        assert!(Note::parse("").unwrap().is_empty());
        assert!(Note::parse(&"é".repeat(280)).is_ok());
        assert!(Note::parse(&"é".repeat(281)).is_err());
    }

    #[test]
    fn a_nul_in_a_note_is_refused_naming_the_note() {
        // PostgreSQL's jsonb cannot hold U+0000: a NUL that got into an event would make the
        // database refuse the whole group commit it travels in.
        let err = Note::parse("extra hot\u{0}").unwrap_err();
        assert_eq!(err.field, "note");
        assert!(err.message.contains("U+0000"), "{}", err.message);
    }

    #[test]
    fn notes_allow_newlines_and_tabs_but_no_other_control_characters() {
        assert!(Note::parse("line one\nline two\tindented").is_ok());
        for bad in ["\r", "\u{7}", "\u{1b}[2J", "\u{7f}", "\u{85}", "\u{9b}"] {
            let err = Note::parse(&format!("hot{bad}")).unwrap_err();
            assert_eq!(err.field, "note", "{bad:?}");
        }
    }

    #[test]
    fn every_free_text_value_refuses_a_nul_naming_its_field() {
        let nul = "oat\u{0}milk";
        assert_eq!(
            Customisation::parse(nul).unwrap_err().field,
            "customisation"
        );
        assert_eq!(Reason::parse(nul).unwrap_err().field, "reason");
        assert_eq!(ItemName::parse(nul).unwrap_err().field, "name");
        assert_eq!(ExternalRef::parse(nul).unwrap_err().field, "reference");
        assert_eq!(Note::parse(nul).unwrap_err().field, "note");
    }

    #[test]
    fn one_line_texts_refuse_blank_too_long_and_control_characters() {
        assert!(Customisation::parse("oat milk").is_ok());
        assert!(Customisation::parse(&"x".repeat(61)).is_err());
        assert!(Customisation::parse("   ").is_err());
        assert!(Reason::parse("").is_err());
        assert!(Reason::parse("line\nbreak").is_err());
        assert!(Reason::parse(&"r".repeat(200)).is_ok());
        assert!(ItemName::parse(&"n".repeat(81)).is_err());
        assert!(ExternalRef::parse(&"p".repeat(65)).is_err());
    }

    #[test]
    fn order_id_parses_uuids_but_not_nil_or_garbage() {
        let id = OrderId::parse("0190b5a2-7c1e-7000-8000-000000000001").unwrap();
        assert_eq!(id.to_string(), "0190b5a2-7c1e-7000-8000-000000000001");
        assert!(OrderId::parse("00000000-0000-0000-0000-000000000000").is_err());
        assert_eq!(OrderId::parse("order-1").unwrap_err().field, "order_id");
    }

    #[test]
    fn validation_error_can_be_relabelled_to_a_request_path() {
        let err = Sku::parse("").unwrap_err().at("lines[2].sku");
        assert_eq!(err.field, "lines[2].sku");
        assert!(err.to_string().starts_with("lines[2].sku: "));
    }

    #[test]
    fn value_objects_serialize_transparently() {
        let json =
            serde_json::to_string(&(Sku::parse("ESPRESSO").unwrap(), Money::from_cents(300)))
                .unwrap();
        assert_eq!(json, r#"["ESPRESSO",300]"#);
    }
}
