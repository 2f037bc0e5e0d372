//! Fuzzing `commit_log::decode` on stable Rust: random bytes, and envelopes with random fields
//! and mutated event payloads. Whatever arrives on the log, decode answers Ok or a DecodeError
//! (poison for the dead-letter queue), never a panic. `ORDERPIPE_FUZZ_ITERATIONS` (default
//! 20,000) and `ORDERPIPE_FUZZ_SEED` set the length and the seed of a run; docs/reliability.md
//! has the longer runs.
#![allow(clippy::unwrap_used)]

use prost::Message;
use proto::v1 as pb;

/// Real events as the store writes them (type, payload), mutated or mismatched at random.
const SAMPLES: [(&str, &str); 8] = [
    ("OrderAccepted", r#"{"OrderAccepted": {}}"#),
    ("OrderCompleted", r#"{"OrderCompleted": {}}"#),
    (
        "OrderCancelled",
        r#"{"OrderCancelled": {"reason": "left", "refund_due": false, "stock_reserved": false}}"#,
    ),
    (
        "PaymentCaptured",
        r#"{"PaymentCaptured": {"amount": 1225, "payment_id": "pay_5b4eff10"}}"#,
    ),
    (
        "StockReserved",
        r#"{"StockReserved": {"lines": [{"sku": "LATTE-12", "quantity": 2}], "order_id": "5cab9d76-5e8f-4dc8-b04b-3c054cbb5a9b"}}"#,
    ),
    (
        "StockSet",
        r#"{"StockSet": {"sku": "LATTE-12", "on_hand": 10, "store_id": "store-2", "low_stock_threshold": 5}}"#,
    ),
    (
        "TierUpgraded",
        r#"{"TierUpgraded": {"to": "Gold", "from": "Silver"}}"#,
    ),
    (
        "MenuItemAdded",
        r#"{"MenuItemAdded": {"sku": "CROISSANT", "name": "Croissant", "price": 325, "category": "Drink"}}"#,
    ),
];

fn settings() -> (u64, u64) {
    let read = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        read("ORDERPIPE_FUZZ_ITERATIONS", 20_000),
        read("ORDERPIPE_FUZZ_SEED", fastrand::u64(..)),
    )
}

fn mutate(rng: &mut fastrand::Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.usize(0..4) {
        match rng.u8(0..4) {
            0 if !bytes.is_empty() => {
                let at = rng.usize(..bytes.len());
                bytes[at] ^= 1 << rng.u8(0..8);
            }
            1 if !bytes.is_empty() => bytes.truncate(rng.usize(..bytes.len())),
            2 => {
                let at = rng.usize(..=bytes.len());
                bytes.insert(at, rng.u8(..));
            }
            _ => bytes.extend_from_slice(&bytes.clone()),
        }
    }
    bytes
}

/// A sequence or position to start from: mostly small, sometimes at the edges of the ranges the
/// store (BIGINT) and the envelope (uint64) can hold, where adding one overflows.
fn random_start(rng: &mut fastrand::Rng) -> u64 {
    match rng.u8(0..8) {
        0 => u64::MAX - rng.u64(0..3),
        1 => i64::MAX as u64 - rng.u64(0..2),
        _ => rng.u64(0..4).max(u64::from(rng.u8(0..8) != 0)),
    }
}

fn random_envelope(rng: &mut fastrand::Rng) -> pb::CommitEnvelope {
    let first_sequence = random_start(rng);
    let first_position = random_start(rng);
    let events = (0..rng.usize(0..4).max(usize::from(rng.u8(0..8) != 0)))
        .map(|n| {
            let sample = rng.usize(..SAMPLES.len());
            pb::LoggedEvent {
                sequence: first_sequence
                    .wrapping_add(n as u64)
                    .wrapping_add(u64::from(rng.u8(0..8) == 0)),
                position: first_position.wrapping_add(n as u64),
                event_type: SAMPLES[sample].0.into(),
                event_version: ["1.0", "1.0", "1.0", "2.0", "", "x"][rng.usize(..6)].into(),
                payload_json: {
                    // Mostly the type's own payload, intact or mutated; sometimes another type's.
                    let payload = SAMPLES[if rng.u8(0..8) == 0 {
                        rng.usize(..SAMPLES.len())
                    } else {
                        sample
                    }]
                    .1;
                    let payload = payload.as_bytes().to_vec();
                    if rng.bool() {
                        payload
                    } else {
                        mutate(rng, payload)
                    }
                },
                recorded_at: (rng.u8(0..8) != 0).then(|| prost_types::Timestamp {
                    seconds: if rng.bool() {
                        1_795_000_000
                    } else {
                        rng.i64(..)
                    },
                    nanos: if rng.bool() { 0 } else { rng.i32(..) },
                }),
            }
        })
        .collect::<Vec<_>>();
    pb::CommitEnvelope {
        envelope_version: [1, 1, 1, 1, 0, 2][rng.usize(..6)],
        aggregate_type: ["order", "inventory", "loyalty", "menu", ""][rng.usize(..5)].into(),
        aggregate_id: ["5f0c2d1e-0000-4000-8000-000000000000", "store-1", "", "c-1"]
            [rng.usize(..4)]
        .into(),
        first_sequence,
        last_sequence: first_sequence.wrapping_add(events.len().saturating_sub(1) as u64),
        first_position,
        last_position: first_position.wrapping_add(events.len().saturating_sub(1) as u64),
        committed_at: (rng.u8(0..8) != 0).then(|| prost_types::Timestamp {
            seconds: rng.i64(-100_000_000_000..100_000_000_000),
            nanos: if rng.bool() { 0 } else { rng.i32(..) },
        }),
        correlation_id: "c".into(),
        causation_id: String::new(),
        actor: String::new(),
        traceparent: String::new(),
        events,
    }
}

#[test]
fn unpack_answers_every_input_without_panicking_and_keeps_every_commit_it_packed() {
    let (iterations, seed) = settings();
    println!("fuzzing commit_log::unpack: {iterations} iterations, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..iterations {
        let mut container = commit_log::Container::new();
        let commits: Vec<Vec<u8>> = (0..rng.usize(1..6))
            .map(|_| random_envelope(&mut rng).encode_to_vec())
            .filter(|commit| !commit.is_empty())
            .collect();
        for commit in &commits {
            container.push(commit.clone());
        }
        let record = container.into_record();
        if !commits.is_empty() && !commit_log::container::is_container(&commits[0]) {
            assert_eq!(
                commit_log::unpack(&record).unwrap(),
                commits.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                "seed {seed}"
            );
        }
        // Broken framing answers an error, never a panic or a commit beyond the record.
        let mutated = mutate(&mut rng, record);
        if let Ok(unpacked) = commit_log::unpack(&mutated) {
            assert!(unpacked.iter().map(|c| c.len()).sum::<usize>() <= mutated.len());
        }
    }
}

#[test]
fn decode_answers_every_input_without_panicking() {
    let (iterations, seed) = settings();
    println!("fuzzing commit_log::decode: {iterations} iterations, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut decoded = 0u64;
    for _ in 0..iterations {
        let bytes = match rng.u8(0..3) {
            0 => (0..rng.usize(0..256)).map(|_| rng.u8(..)).collect(),
            1 => random_envelope(&mut rng).encode_to_vec(),
            _ => {
                let envelope = random_envelope(&mut rng).encode_to_vec();
                mutate(&mut rng, envelope)
            }
        };
        if let Ok(commit) = commit_log::decode(&bytes) {
            // What decode accepts is a commit a projection can apply.
            assert!(
                !commit.events.is_empty(),
                "seed {seed}: an empty commit was accepted"
            );
            assert!(
                commit.first_sequence() <= commit.last_sequence(),
                "seed {seed}"
            );
            assert!(
                commit.last_sequence() <= i64::MAX as u64
                    && commit.last_position() <= i64::MAX as u64,
                "seed {seed}: a sequence or position the store cannot hold was accepted"
            );
            decoded += 1;
        }
    }
    println!("{decoded} of {iterations} inputs decoded; the rest were refused as poison");
}

/// An envelope of `count` intact `OrderAccepted` events from `first_sequence` / `first_position`.
fn envelope_at(first_sequence: u64, first_position: u64, count: u64) -> pb::CommitEnvelope {
    let at = || prost_types::Timestamp {
        seconds: 1_795_000_000,
        nanos: 0,
    };
    let events = (0..count)
        .map(|n| pb::LoggedEvent {
            sequence: first_sequence.wrapping_add(n),
            position: first_position.wrapping_add(n),
            event_type: "OrderAccepted".into(),
            event_version: "1.0".into(),
            payload_json: br#"{"OrderAccepted": {}}"#.to_vec(),
            recorded_at: Some(at()),
        })
        .collect();
    pb::CommitEnvelope {
        envelope_version: 1,
        aggregate_type: "order".into(),
        aggregate_id: "5f0c2d1e-0000-4000-8000-000000000000".into(),
        first_sequence,
        last_sequence: first_sequence.wrapping_add(count - 1),
        first_position,
        last_position: first_position.wrapping_add(count - 1),
        committed_at: Some(at()),
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: String::new(),
        traceparent: String::new(),
        events,
    }
}

#[test]
fn a_sequence_or_position_at_the_end_of_its_range_is_refused_not_a_panic() {
    // A crafted envelope whose next sequence (or position) would overflow u64: in a debug build
    // the unchecked `+ 1` panicked, in release it wrapped to 0 and compared.
    for (sequence, position) in [(u64::MAX, 1), (1, u64::MAX)] {
        let record = envelope_at(sequence, position, 2).encode_to_vec();
        let refused =
            std::panic::catch_unwind(|| commit_log::decode(&record)).unwrap_or_else(|_| {
                panic!("decode panicked at sequence {sequence}, position {position}")
            });
        assert!(
            matches!(refused, Err(commit_log::DecodeError::Inconsistent(_))),
            "sequence {sequence}, position {position}: {refused:?}"
        );
    }
    // Beyond what the store's BIGINT columns (and every projection's checkpoint) can hold.
    let beyond = envelope_at(i64::MAX as u64 + 1, 1, 1).encode_to_vec();
    assert!(matches!(
        commit_log::decode(&beyond),
        Err(commit_log::DecodeError::Inconsistent(_))
    ));
    // The last value the store can hold still decodes.
    let last = envelope_at(i64::MAX as u64, i64::MAX as u64, 1).encode_to_vec();
    let commit = commit_log::decode(&last).unwrap();
    assert_eq!(commit.last_sequence(), i64::MAX as u64);
}
