//! The AWS bill per order: the billable units the run caused, per order and per completed
//! order, and what they cost per million orders at published on-demand us-east-1 prices.
//!
//! Where the units come from:
//! - Kinesis PUT payload units: every record in the run's stream, each rounded up to 25 KB
//!   chunks (`TestStream::put_payload_units`, read back from the stream after the run; a record
//!   the relay put twice after a retry is in the stream twice and billed twice, as on AWS);
//! - Kinesis GetRecords calls: the projectors' `orderpipe_projector_get_records_total`;
//! - DynamoDB request units: the active-orders projection's
//!   `orderpipe_projector_dynamodb_milli_capacity_units_total`, summed from the
//!   `ConsumedCapacity` DynamoDB (or dynalite, which computes it from item sizes as AWS does)
//!   returns for each call. The projectors' lease, checkpoint and parked-record items are not
//!   counted: they cost per shard and second, not per order;
//! - SQS requests: the projectors' dead-letter sends (`orderpipe_projector_dlq_total`), one
//!   request per 64 KB chunk of a message of at most 64 KB. The run's pipeline has no other
//!   queue (the payment and notification flows are not part of it).

use serde::Serialize;

/// When the prices below were published (and last checked against AWS's pricing pages).
pub const PRICES_AS_OF: &str =
    "2024-11-01 (DynamoDB on-demand after that day's reduction; Kinesis and SQS unchanged since)";

/// One billable unit's price.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Price {
    /// What is billed.
    pub item: &'static str,
    /// The unit.
    pub unit: &'static str,
    /// US dollars per million units, on demand, us-east-1.
    pub dollars_per_million: f64,
}

/// Kinesis Data Streams (provisioned mode), PUT payload units of 25 KB.
pub const KINESIS_PUT_PAYLOAD: Price = Price {
    item: "Kinesis PUT payload units",
    unit: "25 KB of a record",
    dollars_per_million: 0.014,
};
/// Kinesis GetRecords calls: not billed per call in provisioned mode (shard hours are).
pub const KINESIS_GET_RECORDS: Price = Price {
    item: "Kinesis GetRecords calls",
    unit: "call (not billed per call)",
    dollars_per_million: 0.0,
};
/// DynamoDB on-demand write request units.
pub const DYNAMODB_WRITES: Price = Price {
    item: "DynamoDB write request units",
    unit: "1 KB written",
    dollars_per_million: 0.625,
};
/// DynamoDB on-demand read request units.
pub const DYNAMODB_READS: Price = Price {
    item: "DynamoDB read request units",
    unit: "4 KB read consistently",
    dollars_per_million: 0.125,
};
/// SQS standard queue requests.
pub const SQS_REQUESTS: Price = Price {
    item: "SQS requests",
    unit: "64 KB chunk of a request",
    dollars_per_million: 0.40,
};

/// The units a run caused, as counted at the end.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BillableUnits {
    /// Kinesis PUT payload units.
    pub kinesis_put_payload_units: f64,
    /// Kinesis GetRecords calls.
    pub kinesis_get_records_calls: f64,
    /// DynamoDB write request units.
    pub dynamodb_write_units: f64,
    /// Of them, by the kind of view item written (`ViewItem::label`, units).
    pub dynamodb_write_units_by_item: [(&'static str, f64); 4],
    /// DynamoDB read request units.
    pub dynamodb_read_units: f64,
    /// DynamoDB UpdateItem calls (not billed as such; for the units per call).
    pub dynamodb_write_calls: f64,
    /// DynamoDB GetItem calls.
    pub dynamodb_read_calls: f64,
    /// SQS requests.
    pub sqs_requests: f64,
}

/// One line of the bill.
#[derive(Debug, Clone, Serialize)]
pub struct BillLine {
    /// The price it is billed at.
    pub price: Price,
    /// Units in the whole run.
    pub units: f64,
    /// Units per order that ran to its end.
    pub per_order: f64,
    /// Units per completed order.
    pub per_completed_order: f64,
    /// Dollars per million orders (any fate, the run's mix).
    pub dollars_per_million_orders: f64,
}

/// The bill of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Bill {
    /// Orders that ran all their commands (any fate).
    pub orders: u64,
    /// Of them, completed.
    pub completed_orders: u64,
    /// The units counted.
    pub units: BillableUnits,
    /// One line per price.
    pub lines: Vec<BillLine>,
    /// When the prices were published.
    pub prices_as_of: &'static str,
}

impl Bill {
    /// The bill of `units` spread over `orders`, of which `completed_orders` completed.
    pub fn new(units: BillableUnits, orders: u64, completed_orders: u64) -> Bill {
        let per = |value: f64, count: u64| {
            if count == 0 {
                0.0
            } else {
                value / count as f64
            }
        };
        let lines = [
            (KINESIS_PUT_PAYLOAD, units.kinesis_put_payload_units),
            (KINESIS_GET_RECORDS, units.kinesis_get_records_calls),
            (DYNAMODB_WRITES, units.dynamodb_write_units),
            (DYNAMODB_READS, units.dynamodb_read_units),
            (SQS_REQUESTS, units.sqs_requests),
        ]
        .into_iter()
        .map(|(price, total)| BillLine {
            price,
            units: total,
            per_order: per(total, orders),
            per_completed_order: per(total, completed_orders),
            // Units per order x 1M orders x dollars per 1M units / 1M units.
            dollars_per_million_orders: per(total, orders) * price.dollars_per_million,
        })
        .collect();
        Bill {
            orders,
            completed_orders,
            units,
            lines,
            prices_as_of: PRICES_AS_OF,
        }
    }

    /// Dollars per million orders, all lines.
    pub fn dollars_per_million_orders(&self) -> f64 {
        self.lines
            .iter()
            .map(|l| l.dollars_per_million_orders)
            .sum()
    }

    /// The bill as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "AWS bill: {} orders ran to their end, {} of them completed; prices on demand, \
             us-east-1, as of {}.\n\n\
             | billed | unit | units | per order | per completed order | $ per 1M units | $ per 1M orders |\n\
             |---|---|---:|---:|---:|---:|---:|\n",
            self.orders, self.completed_orders, self.prices_as_of
        );
        for line in &self.lines {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.2} |\n",
                line.price.item,
                line.price.unit,
                line.units,
                line.per_order,
                line.per_completed_order,
                line.price.dollars_per_million,
                line.dollars_per_million_orders
            ));
        }
        let by_item: Vec<String> = self
            .units
            .dynamodb_write_units_by_item
            .iter()
            .map(|(item, units)| {
                let per_completed = if self.completed_orders == 0 {
                    0.0
                } else {
                    units / self.completed_orders as f64
                };
                format!("{item} {per_completed:.2}")
            })
            .collect();
        let calls = self.units.dynamodb_write_calls + self.units.dynamodb_read_calls;
        out.push_str(&format!(
            "| total | | | | | | {:.2} |\n\nDynamoDB: {:.0} UpdateItem and {:.0} GetItem calls \
             ({:.2} calls per order); write units per completed order by item: {}.\n",
            self.dollars_per_million_orders(),
            self.units.dynamodb_write_calls,
            self.units.dynamodb_read_calls,
            if self.orders == 0 {
                0.0
            } else {
                calls / self.orders as f64
            },
            by_item.join(", ")
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_per_million_orders_follow_units_per_order() {
        let units = BillableUnits {
            dynamodb_write_units: 8_000.0,
            kinesis_put_payload_units: 2_000.0,
            ..BillableUnits::default()
        };
        let bill = Bill::new(units, 1_000, 800);
        let writes = &bill.lines[2];
        assert_eq!(writes.per_order, 8.0);
        assert_eq!(writes.per_completed_order, 10.0);
        assert!((writes.dollars_per_million_orders - 5.0).abs() < 1e-9);
        assert!((bill.dollars_per_million_orders() - (5.0 + 0.028)).abs() < 1e-9);
    }
}
