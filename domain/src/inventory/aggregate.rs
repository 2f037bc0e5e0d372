use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{InventoryCommand, InventoryError, InventoryEvent, StockLine};
use crate::values::{OrderId, Sku, StoreId};

/// Stock of one SKU at one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// Items physically in the store.
    pub on_hand: u32,
    /// Items held for accepted orders; never more than `on_hand`.
    pub reserved: u32,
    /// Available stock below this is low.
    pub low_stock_threshold: u32,
    /// A low-stock warning is raised and not yet cleared.
    pub warning_active: bool,
}

impl StockLevel {
    /// Items that new orders can still reserve.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// A purchase order the store has open for one SKU: requested, its delivery not yet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReorder {
    /// Its number at this store, from 1.
    pub reorder_number: u64,
    /// The quantity requested.
    pub suggested_quantity: u32,
}

/// The inventory aggregate of one store; its id is the store id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInventory {
    store_id: Option<StoreId>,
    stock: BTreeMap<Sku, StockLevel>,
    reservations: BTreeMap<OrderId, Vec<StockLine>>,
    /// Orders whose reservation was released or committed, oldest first, at most
    /// [`Self::RECENTLY_CLOSED_RESERVATIONS`]: an order reserves once, and a late or repeated
    /// `ReserveStock` (a redelivered saga step under a new key) must not take stock again.
    /// Bounded because it travels in every load and snapshot of the store; a linear search over
    /// it costs less than the load itself.
    #[serde(default)]
    closed_reservations: VecDeque<OrderId>,
    /// The reorder open per SKU: at most one, so a SKU that keeps falling below its threshold
    /// never orders twice before the delivery arrives.
    #[serde(default)]
    open_reorders: BTreeMap<Sku, OpenReorder>,
    /// How many reorders the store requested: the last reorder number.
    #[serde(default)]
    reorders_requested: u64,
}

impl StoreInventory {
    /// The schema version of this aggregate's snapshots: bump it whenever the serialised state or
    /// `apply` changes, so the event store replays snapshots an older build wrote instead of
    /// trusting them. Version 2: closed reservations are remembered. Version 3: open reorders.
    pub const SNAPSHOT_VERSION: u32 = 3;

    /// How many released or committed reservations a store remembers, so an order cannot reserve
    /// again once its reservation closed. A store closes ~170 reservations a day at the brief's
    /// average (5M orders over 30k stores) and ~1,000 at a busy one: days of memory, where a
    /// repeated reservation arrives within minutes (a saga step redelivered). About 40 bytes a
    /// closure in the snapshot.
    pub const RECENTLY_CLOSED_RESERVATIONS: usize = 1024;

    /// The most lines one reservation may have: an order's lines.
    pub const MAX_RESERVATION_LINES: usize = crate::order::Order::MAX_LINES;

    /// The store, once its inventory exists.
    pub fn store_id(&self) -> Option<&StoreId> {
        self.store_id.as_ref()
    }

    /// The stock of one SKU, if the store stocks it.
    pub fn stock(&self, sku: &Sku) -> Option<&StockLevel> {
        self.stock.get(sku)
    }

    /// Every SKU the store stocks, in SKU order.
    pub fn levels(&self) -> impl Iterator<Item = (&Sku, &StockLevel)> {
        self.stock.iter()
    }

    /// What an order holds reserved here, if anything.
    pub fn reservation(&self, order_id: &OrderId) -> Option<&[StockLine]> {
        self.reservations.get(order_id).map(Vec::as_slice)
    }

    /// Whether `order_id`'s reservation here was released or committed (among the
    /// [`Self::RECENTLY_CLOSED_RESERVATIONS`] most recent closures).
    pub fn reservation_closed(&self, order_id: &OrderId) -> bool {
        self.closed_reservations.contains(order_id)
    }

    /// The reorder open for `sku`, if any.
    pub fn open_reorder(&self, sku: &Sku) -> Option<&OpenReorder> {
        self.open_reorders.get(sku)
    }

    /// Every open reorder, in SKU order.
    pub fn open_reorders(&self) -> impl Iterator<Item = (&Sku, &OpenReorder)> {
        self.open_reorders.iter()
    }

    /// The event `command` produces; low-stock signals are derived afterwards from the new state.
    fn decide(&self, command: InventoryCommand) -> Result<InventoryEvent, InventoryError> {
        match command {
            InventoryCommand::SetStock {
                store_id,
                sku,
                on_hand,
                low_stock_threshold,
            } => {
                if let Some(expected) = &self.store_id {
                    if *expected != store_id {
                        return Err(InventoryError::WrongStore {
                            expected: expected.clone(),
                            got: store_id,
                        });
                    }
                }
                let reserved = self.stock.get(&sku).map_or(0, |level| level.reserved);
                if on_hand < reserved {
                    return Err(InventoryError::BelowReserved {
                        sku,
                        on_hand,
                        reserved,
                    });
                }
                Ok(InventoryEvent::StockSet {
                    store_id,
                    sku,
                    on_hand,
                    low_stock_threshold,
                })
            }
            InventoryCommand::Restock { sku, quantity } => {
                let level = self.level(&sku)?;
                if quantity == 0 {
                    return Err(InventoryError::NoStockChange { sku });
                }
                if level.on_hand.checked_add(quantity).is_none() {
                    return Err(InventoryError::StockOverflow { sku });
                }
                Ok(InventoryEvent::StockRestocked { sku, quantity })
            }
            InventoryCommand::AdjustStock { sku, delta, reason } => {
                let level = self.level(&sku)?;
                if delta == 0 {
                    return Err(InventoryError::NoStockChange { sku });
                }
                let Some(on_hand) = level.on_hand.checked_add_signed(delta) else {
                    return Err(if delta < 0 {
                        InventoryError::NegativeStock {
                            sku,
                            on_hand: level.on_hand,
                            delta,
                        }
                    } else {
                        InventoryError::StockOverflow { sku }
                    });
                };
                if on_hand < level.reserved {
                    return Err(InventoryError::BelowReserved {
                        sku,
                        on_hand,
                        reserved: level.reserved,
                    });
                }
                Ok(InventoryEvent::StockAdjusted { sku, delta, reason })
            }
            InventoryCommand::ReserveStock { order_id, lines } => {
                let store_id = self.store_id.as_ref().ok_or(InventoryError::NotFound)?;
                if lines.is_empty() {
                    return Err(InventoryError::EmptyReservation);
                }
                if lines.len() > Self::MAX_RESERVATION_LINES {
                    return Err(InventoryError::TooManyLines {
                        count: lines.len(),
                        max: Self::MAX_RESERVATION_LINES,
                    });
                }
                if self.reservations.contains_key(&order_id) {
                    return Err(InventoryError::AlreadyReserved { order_id });
                }
                if self.reservation_closed(&order_id) {
                    return Err(InventoryError::ReservationClosed { order_id });
                }
                // Several lines may share a SKU (different customisations): check their sum.
                let mut requested: BTreeMap<&Sku, u32> = BTreeMap::new();
                for line in &lines {
                    let total = requested.entry(&line.sku).or_default();
                    *total = total.saturating_add(line.quantity.get());
                }
                for (sku, requested) in requested {
                    let available = self.level(sku)?.available();
                    if available < requested {
                        return Err(InventoryError::InsufficientStock {
                            store_id: store_id.clone(),
                            sku: sku.clone(),
                            available,
                            requested,
                        });
                    }
                }
                Ok(InventoryEvent::StockReserved { order_id, lines })
            }
            InventoryCommand::ReleaseReservation { order_id, reason } => {
                Ok(InventoryEvent::ReservationReleased {
                    lines: self.reserved_lines(order_id)?,
                    order_id,
                    reason,
                })
            }
            InventoryCommand::CommitReservation { order_id } => {
                Ok(InventoryEvent::ReservationCommitted {
                    lines: self.reserved_lines(order_id)?,
                    order_id,
                })
            }
            InventoryCommand::ReceiveDelivery {
                reorder_number,
                sku,
                quantity,
            } => self.receive_delivery(reorder_number, sku, quantity),
        }
    }

    /// A delivery closes the open reorder it names, of that reorder's SKU, with a countable
    /// quantity; a reorder never requested and one already delivered are told apart.
    fn receive_delivery(
        &self,
        reorder_number: u64,
        sku: Sku,
        quantity: u32,
    ) -> Result<InventoryEvent, InventoryError> {
        let store_id = self.store_id.as_ref().ok_or(InventoryError::NotFound)?;
        if reorder_number == 0 || reorder_number > self.reorders_requested {
            return Err(InventoryError::NoSuchReorder {
                store_id: store_id.clone(),
                reorder_number,
            });
        }
        let Some((reorder_sku, _)) = self
            .open_reorders
            .iter()
            .find(|(_, open)| open.reorder_number == reorder_number)
        else {
            return Err(InventoryError::ReorderAlreadyDelivered { reorder_number });
        };
        if *reorder_sku != sku {
            return Err(InventoryError::DeliveryOfWrongSku {
                reorder_number,
                expected: reorder_sku.clone(),
                got: sku,
            });
        }
        if quantity == 0 {
            return Err(InventoryError::NoStockChange { sku });
        }
        if self.level(&sku)?.on_hand.checked_add(quantity).is_none() {
            return Err(InventoryError::StockOverflow { sku });
        }
        Ok(InventoryEvent::DeliveryReceived {
            reorder_number,
            sku,
            quantity,
        })
    }

    fn level(&self, sku: &Sku) -> Result<&StockLevel, InventoryError> {
        let store_id = self.store_id.as_ref().ok_or(InventoryError::NotFound)?;
        self.stock
            .get(sku)
            .ok_or_else(|| InventoryError::UnknownSku {
                store_id: store_id.clone(),
                sku: sku.clone(),
            })
    }

    fn reserved_lines(&self, order_id: OrderId) -> Result<Vec<StockLine>, InventoryError> {
        self.reservations
            .get(&order_id)
            .cloned()
            .ok_or(InventoryError::NoSuchReservation { order_id })
    }

    /// The warning and reorder events the current state of `sku` calls for. Comparing with
    /// `warning_active` rather than with the previous level is what makes the warning fire
    /// exactly once per crossing, whatever moved the stock. A reorder is wanted whenever stock
    /// is low and none is open: once per crossing while deliveries keep up, again after a
    /// delivery that left the stock low, and never a second one while one is open, however
    /// often the stock crosses the threshold meanwhile.
    fn low_stock_signals(&self, sku: &Sku) -> Vec<InventoryEvent> {
        let Some(level) = self.stock.get(sku) else {
            return Vec::new();
        };
        let available = level.available();
        let threshold = level.low_stock_threshold;
        let low = available < threshold;
        let mut signals = match (level.warning_active, low) {
            (false, true) => vec![InventoryEvent::LowStockWarningRaised {
                sku: sku.clone(),
                available,
                threshold,
            }],
            (true, false) => vec![InventoryEvent::LowStockWarningCleared {
                sku: sku.clone(),
                available,
            }],
            _ => Vec::new(),
        };
        if low && !self.open_reorders.contains_key(sku) {
            signals.push(InventoryEvent::ReorderRequested {
                sku: sku.clone(),
                suggested_quantity: threshold.saturating_mul(2).saturating_sub(available),
                reorder_number: self.reorders_requested + 1,
            });
        }
        signals
    }

    /// Ends `order_id`'s reservation and remembers that it ended.
    fn close_reservation(&mut self, order_id: OrderId) {
        self.reservations.remove(&order_id);
        if self.closed_reservations.len() >= Self::RECENTLY_CLOSED_RESERVATIONS {
            self.closed_reservations.pop_front();
        }
        self.closed_reservations.push_back(order_id);
    }

    fn update(&mut self, sku: &Sku, change: impl FnOnce(&mut StockLevel)) {
        if let Some(level) = self.stock.get_mut(sku) {
            change(level);
        }
    }
}

/// The SKUs whose available stock `event` may change.
fn touched_skus(event: &InventoryEvent) -> BTreeSet<Sku> {
    match event {
        InventoryEvent::StockSet { sku, .. }
        | InventoryEvent::StockRestocked { sku, .. }
        | InventoryEvent::StockAdjusted { sku, .. }
        | InventoryEvent::DeliveryReceived { sku, .. } => BTreeSet::from([sku.clone()]),
        InventoryEvent::StockReserved { lines, .. }
        | InventoryEvent::ReservationReleased { lines, .. } => {
            lines.iter().map(|line| line.sku.clone()).collect()
        }
        // Committing moves items from reserved to gone: available stock does not change.
        InventoryEvent::ReservationCommitted { .. }
        | InventoryEvent::LowStockWarningRaised { .. }
        | InventoryEvent::ReorderRequested { .. }
        | InventoryEvent::LowStockWarningCleared { .. } => BTreeSet::new(),
    }
}

impl Aggregate for StoreInventory {
    const TYPE: &'static str = "inventory";
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Error = InventoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InventoryCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InventoryError> {
        let event = self.decide(command)?;
        let touched = touched_skus(&event);
        sink.write(event, self).await;
        for sku in touched {
            for signal in self.low_stock_signals(&sku) {
                sink.write(signal, self).await;
            }
        }
        Ok(())
    }

    // `handle` proved every change stays within 0..=u32::MAX and keeps reserved <= on_hand;
    // saturating arithmetic only keeps a replay of corrupt history from panicking.
    fn apply(&mut self, event: InventoryEvent) {
        match event {
            InventoryEvent::StockSet {
                store_id,
                sku,
                on_hand,
                low_stock_threshold,
            } => {
                self.store_id.get_or_insert(store_id);
                let level = self.stock.entry(sku).or_default();
                level.on_hand = on_hand;
                level.low_stock_threshold = low_stock_threshold;
            }
            InventoryEvent::StockRestocked { sku, quantity } => {
                self.update(&sku, |level| {
                    level.on_hand = level.on_hand.saturating_add(quantity)
                });
            }
            InventoryEvent::StockAdjusted { sku, delta, .. } => {
                self.update(&sku, |level| {
                    level.on_hand = level.on_hand.saturating_add_signed(delta);
                });
            }
            InventoryEvent::StockReserved { order_id, lines } => {
                for line in &lines {
                    self.update(&line.sku, |level| {
                        level.reserved = level.reserved.saturating_add(line.quantity.get());
                    });
                }
                self.reservations.insert(order_id, lines);
            }
            InventoryEvent::ReservationReleased {
                order_id, lines, ..
            } => {
                self.close_reservation(order_id);
                for line in &lines {
                    self.update(&line.sku, |level| {
                        level.reserved = level.reserved.saturating_sub(line.quantity.get());
                    });
                }
            }
            InventoryEvent::ReservationCommitted { order_id, lines } => {
                self.close_reservation(order_id);
                for line in &lines {
                    self.update(&line.sku, |level| {
                        level.on_hand = level.on_hand.saturating_sub(line.quantity.get());
                        level.reserved = level.reserved.saturating_sub(line.quantity.get());
                    });
                }
            }
            InventoryEvent::LowStockWarningRaised { sku, .. } => {
                self.update(&sku, |level| level.warning_active = true);
            }
            InventoryEvent::LowStockWarningCleared { sku, .. } => {
                self.update(&sku, |level| level.warning_active = false);
            }
            InventoryEvent::ReorderRequested {
                sku,
                suggested_quantity,
                reorder_number,
            } => {
                // Number 0: a 1.0 suggestion from before reorders were tracked; it opened nothing.
                if reorder_number > 0 {
                    self.reorders_requested = self.reorders_requested.max(reorder_number);
                    self.open_reorders.insert(
                        sku,
                        OpenReorder {
                            reorder_number,
                            suggested_quantity,
                        },
                    );
                }
            }
            InventoryEvent::DeliveryReceived { sku, quantity, .. } => {
                self.update(&sku, |level| {
                    level.on_hand = level.on_hand.saturating_add(quantity)
                });
                self.open_reorders.remove(&sku);
            }
        }
    }
}
