//! Printing a report: an aligned table for people (money in dollars), CSV and JSON for tools
//! (money in integer cents, times in seconds with one decimal).

use serde_json::json;

use super::{Format, GroupBy, Report, ReportRow};

/// `report` in `format`, ending with a newline.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Csv => csv(report),
        Format::Json => json_document(report),
    }
}

/// `1205` tenths -> `120.5`.
fn tenths(value: i64) -> String {
    format!("{}.{}", value / 10, value % 10)
}

/// `83750` cents -> `$837.50`.
fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}${}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn key_header(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Item => "item",
        GroupBy::Hour => "hour (UTC)",
        GroupBy::Store => "store",
        GroupBy::Tier => "tier",
    }
}

fn table(report: &Report) -> String {
    let request = &report.request;
    let by_item = request.by() == GroupBy::Item;
    let mut header = vec![key_header(request.by())];
    if by_item {
        header.push("name");
    }
    header.extend(["orders", "units", "sales", "avg ticket", "avg prep (s)"]);
    let cells = |row: &ReportRow| {
        let mut cells = vec![row.key.clone()];
        if by_item {
            cells.push(row.name.clone());
        }
        cells.extend([
            row.orders.to_string(),
            row.units.to_string(),
            dollars(row.sales_cents),
            row.average_ticket_cents().map_or("-".into(), dollars),
            row.average_prep_tenths().map_or("-".into(), tenths),
        ]);
        cells
    };
    let lines: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
        .chain(report.rows.iter().map(cells))
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Text columns align left, figures right.
    let text_columns = if by_item { 2 } else { 1 };
    let mut out = format!(
        "Sales by {} from {} to {} (UTC days, inclusive), {}; orders not cancelled or rejected; schema {}\n",
        request.by(),
        request.from(),
        request.to(),
        request
            .store()
            .map_or("every store".to_owned(), |store| format!("store {store}")),
        report.schema
    );
    for line in &lines {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column < text_columns {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    if report.rows.is_empty() {
        out.push_str("(no orders in this range)\n");
    }
    out
}

/// RFC 4180: quoted when it holds a comma, quote or line break; quotes doubled.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn csv(report: &Report) -> String {
    let by = report.request.by();
    let mut out = format!(
        "{},name,orders,units,sales_cents,avg_ticket_cents,avg_prep_seconds\n",
        by
    );
    for row in &report.rows {
        let fields = [
            csv_field(&row.key),
            csv_field(&row.name),
            row.orders.to_string(),
            row.units.to_string(),
            row.sales_cents.to_string(),
            row.average_ticket_cents()
                .map_or(String::new(), |c| c.to_string()),
            row.average_prep_tenths().map_or(String::new(), tenths),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn json_document(report: &Report) -> String {
    let request = &report.request;
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "key": row.key,
                "name": row.name,
                "orders": row.orders,
                "units": row.units,
                "sales_cents": row.sales_cents,
                "avg_ticket_cents": row.average_ticket_cents(),
                "prep_seconds_total": row.prep_seconds_total,
                "prepared_orders": row.prep_count,
                "avg_prep_seconds": row.average_prep_tenths().map(|t| t as f64 / 10.0),
            })
        })
        .collect();
    let document = json!({
        "by": request.by().to_string(),
        "from": request.from().to_string(),
        "to": request.to().to_string(),
        "store": request.store(),
        "schema": report.schema,
        "rows": rows,
    });
    format!("{document:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_fields_are_formatted_without_floats_or_broken_quoting() {
        assert_eq!(dollars(83_750), "$837.50");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(-125), "-$1.25");
        assert_eq!(tenths(1205), "120.5");
        assert_eq!(csv_field("Latte 12oz"), "Latte 12oz");
        assert_eq!(csv_field("Tea, \"chai\""), "\"Tea, \"\"chai\"\"\"");
    }
}
