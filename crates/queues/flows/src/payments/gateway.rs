//! The payment gateway port and its deterministic sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// A charge as the processor asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Unique per charge: the gateway does one charge per id, whatever the number of calls.
    pub idempotency_id: String,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// The customer's payment token.
    pub payment_token: String,
}

/// A refund as the processor asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Unique per refund.
    pub idempotency_id: String,
    /// The charge to give back (its idempotency id).
    pub charge_id: String,
    /// The amount, in cents.
    pub amount_cents: i64,
}

/// What the gateway decided about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The amount was captured.
    Captured {
        /// The gateway's payment id.
        payment_id: String,
    },
    /// The card was declined, with the gateway's explanation.
    Declined {
        /// Why.
        reason: String,
    },
}

/// Why a gateway call gave no answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// No answer in time: the charge may or may not have happened; retry with the same id.
    #[error("the payment gateway did not answer in time")]
    Timeout,
    /// The gateway is down or refused the call for a reason of its own; retry later.
    #[error("the payment gateway is unavailable: {0}")]
    Unavailable(String),
}

/// A card processor. Implementations must be idempotent per `idempotency_id`, as real gateways
/// are: a repeated call returns the first call's outcome and charges nothing more. A charge the
/// caller stopped waiting for still completes at the gateway (the caller's timeout is not the
/// gateway's), and a repeated call then returns its outcome.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges a payment token.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, GatewayError>;
    /// Cancels or refunds an earlier charge, whatever its state (as card processors' "cancel or
    /// refund" by the original reference does): a captured charge is refunded; a charge still
    /// in flight is refunded the moment it captures; a charge never made can no longer be made
    /// (a later charge call with its id is declined). Returns the refund's id (the same id for
    /// a repeated call; also `Ok` when nothing was or will be captured).
    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError>;
}

/// The sandbox's test cards (payment tokens), like a card processor's test mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// `4242424242424242`: approved.
    Approve,
    /// `4000000000000002`: declined, "card declined".
    Decline,
    /// `4000000000009995`: declined, "insufficient funds".
    InsufficientFunds,
    /// `4000000000000119`: never answers in time (every call times out).
    Timeout,
    /// `4000000000000077`: approved after the sandbox's slow delay (to exercise visibility
    /// extension of long calls, and captures that complete after the caller gave up).
    SlowApprove,
}

impl TestCard {
    /// Every test card with its token.
    pub const ALL: [(&'static str, TestCard); 5] = [
        ("4242424242424242", TestCard::Approve),
        ("4000000000000002", TestCard::Decline),
        ("4000000000009995", TestCard::InsufficientFunds),
        ("4000000000000119", TestCard::Timeout),
        ("4000000000000077", TestCard::SlowApprove),
    ];

    /// The card behind `token`; any other token is declined as unknown.
    pub fn from_token(token: &str) -> Option<TestCard> {
        Self::ALL
            .iter()
            .find(|(number, _)| *number == token)
            .map(|(_, card)| *card)
    }

    /// The card's token.
    pub fn token(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, card)| *card == self)
            .map_or("", |(number, _)| number)
    }
}

/// One charge the sandbox made, as its ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The charge's idempotency id.
    pub idempotency_id: String,
    /// The outcome every call with that id gets.
    pub outcome: ChargeOutcome,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// How many calls asked for this charge (redeliveries included).
    pub calls: u32,
    /// Whether it was refunded.
    pub refunded: bool,
    /// The distinct refund ids applied to it (one refund, however many calls).
    pub refund_ids: Vec<String>,
    /// How many refund calls named it (redeliveries included).
    pub refund_calls: u32,
}

/// A charge as the sandbox keeps it: possibly still in flight.
#[derive(Debug, Clone)]
struct SandboxCharge {
    entry: LedgerEntry,
    /// When the outcome becomes final (the slow card's capture); until then the charge is in
    /// flight and calls wait for it.
    completes_at: tokio::time::Instant,
}

/// The default gateway: deterministic, in memory, no network. Outcomes depend only on the
/// token ([`TestCard`]); charges are idempotent per id, like a real gateway's. Its ledger lives
/// as long as the process (a real gateway's outlives any worker; tests share one sandbox between
/// a worker they kill and its successor).
///
/// The slow card's charge is in flight for the slow delay from its first call and completes
/// then whether or not anyone still waits (a caller's timeout does not stop a real gateway);
/// later calls wait for it (bounded by their caller's timeout) and get its outcome.
#[derive(Debug, Clone)]
pub struct SandboxGateway {
    ledger: Arc<Mutex<HashMap<String, SandboxCharge>>>,
    /// Charge ids cancelled before any charge was made: a later charge with one is declined.
    cancelled: Arc<Mutex<HashMap<String, String>>>,
    timeout_calls: Arc<Mutex<u32>>,
    slow_delay: Duration,
}

impl SandboxGateway {
    /// A sandbox whose slow card answers after `slow_delay`.
    pub fn new(slow_delay: Duration) -> Self {
        Self {
            ledger: Arc::default(),
            cancelled: Arc::default(),
            timeout_calls: Arc::default(),
            slow_delay,
        }
    }

    /// Every charge completed so far (in-flight ones appear once they complete), by
    /// idempotency id.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        let now = tokio::time::Instant::now();
        let mut entries: Vec<LedgerEntry> = self
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|charge| charge.completes_at <= now)
            .map(|charge| charge.entry.clone())
            .collect();
        entries.sort_by(|a, b| a.idempotency_id.cmp(&b.idempotency_id));
        entries
    }

    /// How many charges are still in flight (the slow card's, before they complete).
    pub fn charges_in_flight(&self) -> usize {
        let now = tokio::time::Instant::now();
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|charge| charge.completes_at > now)
            .count()
    }

    /// How many calls timed out.
    pub fn timeouts(&self) -> u32 {
        *self.timeout_calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of a payment or refund: derived from its idempotency id, so a repeated call gets
    /// the same one.
    fn payment_id(idempotency_id: &str) -> String {
        let digest = Sha256::digest(idempotency_id.as_bytes());
        format!("sandbox_{}", &hex::encode(digest)[..24])
    }
}

#[async_trait]
impl PaymentGateway for SandboxGateway {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, GatewayError> {
        let card = TestCard::from_token(&request.payment_token);
        if card == Some(TestCard::Timeout) {
            *self.timeout_calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            return Err(GatewayError::Timeout);
        }
        let cancelled = self
            .cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&request.idempotency_id)
            .cloned();
        let outcome = match card {
            Some(TestCard::Approve | TestCard::SlowApprove) => ChargeOutcome::Captured {
                payment_id: Self::payment_id(&request.idempotency_id),
            },
            Some(TestCard::Decline) => ChargeOutcome::Declined {
                reason: "card declined".to_owned(),
            },
            Some(TestCard::InsufficientFunds) => ChargeOutcome::Declined {
                reason: "insufficient funds".to_owned(),
            },
            Some(TestCard::Timeout) | None => ChargeOutcome::Declined {
                reason: "card not recognised by the sandbox".to_owned(),
            },
        };
        let outcome = match cancelled {
            Some(_) => ChargeOutcome::Declined {
                reason: "charge cancelled before it was made".to_owned(),
            },
            None => outcome,
        };
        let delay = match card {
            Some(TestCard::SlowApprove) => self.slow_delay,
            _ => Duration::ZERO,
        };
        let (outcome, completes_at) = {
            let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
            let charge = ledger
                .entry(request.idempotency_id.clone())
                .or_insert_with(|| SandboxCharge {
                    entry: LedgerEntry {
                        idempotency_id: request.idempotency_id.clone(),
                        outcome,
                        amount_cents: request.amount_cents,
                        calls: 0,
                        refunded: false,
                        refund_ids: Vec::new(),
                        refund_calls: 0,
                    },
                    completes_at: tokio::time::Instant::now() + delay,
                });
            charge.entry.calls += 1;
            (charge.entry.outcome.clone(), charge.completes_at)
        };
        // Dropped by a caller that stops waiting; the charge completes all the same.
        tokio::time::sleep_until(completes_at).await;
        Ok(outcome)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<String, GatewayError> {
        let refund_id = Self::payment_id(&request.idempotency_id);
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        match ledger.get_mut(&request.charge_id) {
            // Captured, or capturing: refunded (when it captures, for one in flight).
            Some(charge) => {
                let entry = &mut charge.entry;
                entry.refund_calls += 1;
                if matches!(entry.outcome, ChargeOutcome::Captured { .. }) {
                    entry.refunded = true;
                    if !entry.refund_ids.contains(&refund_id) {
                        entry.refund_ids.push(refund_id.clone());
                    }
                }
            }
            // Never made: it never will be.
            None => {
                self.cancelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(request.charge_id.clone(), refund_id.clone());
            }
        }
        Ok(refund_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn charge(id: &str, card: TestCard) -> ChargeRequest {
        ChargeRequest {
            idempotency_id: id.into(),
            amount_cents: 1275,
            payment_token: card.token().into(),
        }
    }

    #[tokio::test]
    async fn test_cards_approve_decline_and_time_out() {
        let sandbox = SandboxGateway::new(Duration::ZERO);
        assert!(matches!(
            sandbox.charge(&charge("a", TestCard::Approve)).await,
            Ok(ChargeOutcome::Captured { .. })
        ));
        assert_eq!(
            sandbox.charge(&charge("b", TestCard::Decline)).await,
            Ok(ChargeOutcome::Declined {
                reason: "card declined".into()
            })
        );
        assert_eq!(
            sandbox.charge(&charge("c", TestCard::Timeout)).await,
            Err(GatewayError::Timeout)
        );
        assert_eq!(sandbox.timeouts(), 1);
        let unknown = ChargeRequest {
            payment_token: "1234".into(),
            ..charge("d", TestCard::Approve)
        };
        assert!(matches!(
            sandbox.charge(&unknown).await,
            Ok(ChargeOutcome::Declined { .. })
        ));
    }

    #[tokio::test]
    async fn a_repeated_charge_returns_the_first_outcome_and_charges_once() {
        let sandbox = SandboxGateway::new(Duration::ZERO);
        let first = sandbox
            .charge(&charge("o-1/charge", TestCard::Approve))
            .await;
        let again = sandbox
            .charge(&charge("o-1/charge", TestCard::Approve))
            .await;
        assert_eq!(first, again);
        let ledger = sandbox.ledger();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].calls, 2);
        sandbox
            .refund(&RefundRequest {
                idempotency_id: "o-1/refund".into(),
                charge_id: "o-1/charge".into(),
                amount_cents: 1275,
            })
            .await
            .unwrap();
        assert!(sandbox.ledger()[0].refunded);
    }

    fn refund_of(charge_id: &str) -> RefundRequest {
        RefundRequest {
            idempotency_id: format!("{charge_id}-refund"),
            charge_id: charge_id.into(),
            amount_cents: 1275,
        }
    }

    #[tokio::test]
    async fn a_slow_capture_completes_after_its_caller_gave_up_and_a_cancel_refunds_it_once() {
        let sandbox = SandboxGateway::new(Duration::from_millis(600));
        let slow = charge("o-2/charge", TestCard::SlowApprove);
        let gave_up = tokio::time::timeout(Duration::from_millis(100), sandbox.charge(&slow)).await;
        assert!(gave_up.is_err(), "the caller stopped waiting");
        assert!(sandbox.ledger().is_empty(), "still in flight");
        // Cancelled while in flight, twice: refunded when it captures, once.
        sandbox.refund(&refund_of("o-2/charge")).await.unwrap();
        sandbox.refund(&refund_of("o-2/charge")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ledger = sandbox.ledger();
        assert_eq!(ledger.len(), 1);
        assert!(matches!(ledger[0].outcome, ChargeOutcome::Captured { .. }));
        assert!(ledger[0].refunded);
        assert_eq!(ledger[0].refund_ids.len(), 1);
        assert_eq!(ledger[0].refund_calls, 2);
        // Asked again, the gateway answers with the completed charge and charges nothing more.
        assert!(matches!(
            sandbox.charge(&slow).await,
            Ok(ChargeOutcome::Captured { .. })
        ));
        assert_eq!(sandbox.ledger()[0].calls, 2);
    }

    #[tokio::test]
    async fn a_charge_cancelled_before_it_was_made_is_declined() {
        let sandbox = SandboxGateway::new(Duration::ZERO);
        sandbox.refund(&refund_of("o-3/charge")).await.unwrap();
        assert!(matches!(
            sandbox
                .charge(&charge("o-3/charge", TestCard::Approve))
                .await,
            Ok(ChargeOutcome::Declined { .. })
        ));
    }
}
