#!/usr/bin/env bash
# Shows what the read models hold for one store, the way their users see them: the barista
# board's open orders and the day's metrics (DynamoDB), the latest orders with their timeline
# (PostgreSQL history), and sales by item and hour (the analytics database).
#
#   scripts/views.sh [STORE_ID]     default store-1 (the demo store of scripts/up.sh)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
case "${1:-}" in -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
store="${1:-store-1}"
[[ "$store" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "not a store id: $store" >&2; exit 2; }
# shellcheck disable=SC1090,SC1091 # the env file is generated
source "$(scripts/stack.sh env --path)"

echo "== DynamoDB active orders: store $store, open orders oldest first"
"$ORDERPIPE_STACK_DIR/venv/bin/python" - "$store" <<'PY'
import os, sys
import boto3
store = sys.argv[1]
ddb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
orders = ddb.query(TableName=os.environ["ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE"],
                   IndexName="open-by-store", KeyConditionExpression="gsi2pk = :s",
                   ExpressionAttributeValues={":s": {"S": f"STORE#{store}"}})["Items"]
for item in orders:
    print(f'  {item["order_id"]["S"]}  {item["status"]["S"]:<10} customer {item["customer_id"]["S"]}'
          f'  note {item.get("note", {}).get("S", "")!r}')
if not orders:
    print("  (none)")
metrics = ddb.query(TableName=os.environ["ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE"],
                    KeyConditionExpression="pk = :s AND begins_with(sk, :d)",
                    ExpressionAttributeValues={":s": {"S": f"STORE#{store}"}, ":d": {"S": "DAY#"}},
                    ScanIndexForward=False, Limit=1)["Items"]
print("== DynamoDB store metrics (latest day)")
for item in metrics:
    fields = {k: v.get("N") for k, v in item.items() if k.startswith(("orders_", "prep_"))}
    print(f'  {item["sk"]["S"]}: {fields}')
if not metrics:
    print("  (none)")
PY

echo "== PostgreSQL history: latest orders of store $store"
psql "$ORDERPIPE_HISTORY__DATABASE__URL" -v store="$store" -X -q -P pager=off <<'SQL'
SELECT order_id, customer_id, status, total_cents, placed_at
FROM history.orders WHERE store_id = :'store' ORDER BY placed_at DESC LIMIT 10;
SQL

echo "== Analytics: sales by item and hour at store $store"
psql "$ORDERPIPE_ANALYTICS__DATABASE__URL" -v store="$store" -X -q -P pager=off <<'SQL'
SELECT i.sku, o.hour_key, sum(i.quantity) AS quantity, sum(i.line_total_cents) AS cents
FROM analytics.fact_order_items i JOIN analytics.fact_orders o ON o.order_id = i.order_id
WHERE o.store_id = :'store' GROUP BY i.sku, o.hour_key ORDER BY o.hour_key, i.sku;
SQL
