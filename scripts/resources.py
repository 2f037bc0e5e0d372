#!/usr/bin/env python3
"""The AWS resources of the orderpipe local stack, in ONE place.

Add a stream, table or queue here and `scripts/stack.sh up` creates it (idempotently) on the
local emulators and exports its name / URL in `.stack/env`.

Usage (stack.sh runs it with the venv's python and the stack's endpoints in the environment):

    resources.py ensure [--env-out FILE]   create what is missing; write `export` lines
    resources.py check                     exit 1 and list what is missing

Endpoints come from AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_SQS
and ORDERPIPE_MOTO_URL (the DynamoDB tables are created on moto as well, for code that needs
transactions or TTL). Static test credentials and a region are forced unless set, and the
instance-metadata lookup is always disabled, so nothing ever probes 169.254.169.254.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

# Never let botocore look for cloud credentials or metadata: set before importing boto3.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
    os.environ.pop(_var, None)
os.environ.setdefault("AWS_CONFIG_FILE", os.devnull)
os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


# ============================================================== the resource list
@dataclass(frozen=True)
class Stream:
    name: str
    shards: int
    env: str  # variable that carries the stream name


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    hash_key: str
    range_key: str | None
    env: str  # variable that carries the table name
    gsis: tuple[Index, ...] = field(default_factory=tuple)
    range_key_type: str = "S"  # "N" for numeric sort keys


@dataclass(frozen=True)
class Queue:
    name: str  # without ".fifo"
    env: str  # variable prefix: <env>_QUEUE_URL, <env>_DLQ_URL, <env>_QUEUE_NAME, <env>_DLQ_NAME
    fifo: bool = False
    max_receive_count: int = 5
    # Only the dead-letter queue exists: a worker sends to it directly (the projectors' poison
    # records), no main queue redrives into it.
    dead_letter_only: bool = False

    @property
    def queue_name(self) -> str:
        return self.name + (".fifo" if self.fifo else "")

    @property
    def dlq_name(self) -> str:
        return self.name + "-dlq" + (".fifo" if self.fifo else "")


STREAMS: tuple[Stream, ...] = (
    Stream("orderpipe-events", shards=2, env="ORDERPIPE_KINESIS__STREAM_NAME"),
)

TABLES: tuple[Table, ...] = (
    # The barista dashboard's view (crates/read/read-models/src/active_orders): one item per order
    # (pk ORDER#<id>, sk ORDER); sparse indexes hold open orders only. TTL on `expires_at` is
    # enabled by the deployment (dynalite has no UpdateTimeToLive).
    Table("orderpipe-active-orders", "pk", "sk", env="ORDERPIPE_DYNAMODB__ACTIVE_ORDERS_TABLE",
          gsis=(Index("by-status", "gsi1pk", "gsi1sk"),
                Index("open-by-store", "gsi2pk", "gsi2sk"))),
    Table("orderpipe-projector-leases", "lease_key", None, env="ORDERPIPE_DYNAMODB__LEASES_TABLE"),
    # Per store (pk STORE#<id>): daily metrics (sk DAY#<date>), stock per SKU (sk SKU#<sku>), the
    # inventory marker (sk INVENTORY).
    Table("orderpipe-store-metrics", "pk", "sk", env="ORDERPIPE_DYNAMODB__STORE_METRICS_TABLE"),
    # Records parked behind a poison record of their aggregate
    # (crates/log/kinesis-consumer/src/parked.rs): pk <projection>#<aggregate type>#<aggregate
    # id>, sk the global position.
    # The live active-orders tables once replay has swapped a rebuilt view in (item
    # alias#active_orders), and replay's progress on DynamoDB targets (rebuild#<orders table>).
    Table("orderpipe-views", "name", None, env="ORDERPIPE_DYNAMODB__VIEWS_TABLE"),
    Table("orderpipe-projector-parked", "parked_key", "position", range_key_type="N",
          env="ORDERPIPE_DYNAMODB__PARKED_TABLE"),
)

QUEUES: tuple[Queue, ...] = (
    Queue("orderpipe-intake", env="ORDERPIPE_SQS__INTAKE"),
    Queue("orderpipe-payments", env="ORDERPIPE_SQS__PAYMENTS", fifo=True),
    Queue("orderpipe-notifications", env="ORDERPIPE_SQS__NOTIFICATIONS"),
    Queue("orderpipe-purchase-orders", env="ORDERPIPE_SQS__PURCHASE_ORDERS", fifo=True),
    Queue("orderpipe-projector", env="ORDERPIPE_SQS__PROJECTOR", dead_letter_only=True),
)


# ============================================================== clients
def _client(service: str, endpoint: str):
    import boto3
    from botocore.config import Config

    cfg = Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client(service, endpoint_url=endpoint, config=cfg)


def _endpoint(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        sys.exit(f"resources.py: {var} is not set")
    if "127.0.0.1" not in value and "localhost" not in value:
        sys.exit(f"resources.py: refusing non-local endpoint {var}={value}")
    return value


def _code(err) -> str:
    return err.response.get("Error", {}).get("Code", "")


# ============================================================== kinesis
def ensure_streams(kinesis, create: bool) -> list[str]:
    from botocore.exceptions import ClientError

    missing = []
    for s in STREAMS:
        try:
            desc = kinesis.describe_stream_summary(StreamName=s.name)["StreamDescriptionSummary"]
            if desc["OpenShardCount"] != s.shards:
                print(f"note: stream {s.name} has {desc['OpenShardCount']} open shards "
                      f"(configured {s.shards}); left as it is", file=sys.stderr)
            continue
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":
                raise
        if not create:
            missing.append(f"kinesis stream {s.name}")
            continue
        try:
            kinesis.create_stream(StreamName=s.name, ShardCount=s.shards)
        except ClientError as e:
            if _code(e) != "ResourceInUseException":
                raise
        _wait(lambda: kinesis.describe_stream_summary(StreamName=s.name)
              ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", f"stream {s.name}")
        print(f"created kinesis stream {s.name} ({s.shards} shards)", file=sys.stderr)
    return missing


# ============================================================== dynamodb
def _table_spec(t: Table) -> dict:
    attrs = {t.hash_key: "S"}
    schema = [{"AttributeName": t.hash_key, "KeyType": "HASH"}]
    if t.range_key:
        attrs[t.range_key] = t.range_key_type
        schema.append({"AttributeName": t.range_key, "KeyType": "RANGE"})
    gsis = []
    for g in t.gsis:
        attrs[g.hash_key] = "S"
        ks = [{"AttributeName": g.hash_key, "KeyType": "HASH"}]
        if g.range_key:
            attrs[g.range_key] = "S"
            ks.append({"AttributeName": g.range_key, "KeyType": "RANGE"})
        gsis.append({"IndexName": g.name, "KeySchema": ks, "Projection": {"ProjectionType": "ALL"}})
    spec = {
        "TableName": t.name,
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": v} for k, v in attrs.items()],
        "KeySchema": schema,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if gsis:
        spec["GlobalSecondaryIndexes"] = gsis
    return spec


def ensure_tables(ddb, where: str, create: bool) -> list[str]:
    from botocore.exceptions import ClientError

    existing: set[str] = set()
    for page in ddb.get_paginator("list_tables").paginate():
        existing.update(page.get("TableNames", []))
    missing = []
    for t in TABLES:
        if t.name in existing:
            continue
        if not create:
            missing.append(f"{where} table {t.name}")
            continue
        try:
            ddb.create_table(**_table_spec(t))
        except ClientError as e:
            if _code(e) != "ResourceInUseException":
                raise
        _wait(lambda: ddb.describe_table(TableName=t.name)["Table"]["TableStatus"] == "ACTIVE",
              f"{where} table {t.name}")
        print(f"created {where} table {t.name}", file=sys.stderr)
    return missing


# ============================================================== sqs
def _queue_url(sqs, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as e:
        if "NonExistentQueue" in _code(e) or _code(e) == "QueueDoesNotExist":
            return None
        raise


def ensure_queues(sqs, create: bool) -> tuple[list[str], dict[str, str]]:
    import json

    missing: list[str] = []
    env: dict[str, str] = {}
    for q in QUEUES:
        fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if q.fifo else {}
        dlq_url = _queue_url(sqs, q.dlq_name)
        if dlq_url is None:
            if not create:
                missing.append(f"sqs queue {q.dlq_name}")
            else:
                dlq_url = sqs.create_queue(QueueName=q.dlq_name, Attributes=dict(fifo_attrs))["QueueUrl"]
                print(f"created sqs queue {q.dlq_name}", file=sys.stderr)
        env[f"{q.env}_DLQ_NAME"] = q.dlq_name
        if dlq_url:
            env[f"{q.env}_DLQ_URL"] = dlq_url
        if q.dead_letter_only:
            continue
        url = _queue_url(sqs, q.queue_name)
        if url is None:
            if not create:
                missing.append(f"sqs queue {q.queue_name}")
            else:
                url = sqs.create_queue(QueueName=q.queue_name, Attributes=dict(fifo_attrs))["QueueUrl"]
                print(f"created sqs queue {q.queue_name}", file=sys.stderr)
        if url and dlq_url:
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            want = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.max_receive_count}
            have = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get(
                "Attributes", {}).get("RedrivePolicy")
            have_policy = json.loads(have) if have else None
            if not have_policy or have_policy.get("deadLetterTargetArn") != dlq_arn or \
                    int(have_policy.get("maxReceiveCount", 0)) != q.max_receive_count:
                if not create:
                    missing.append(f"sqs redrive policy on {q.queue_name}")
                else:
                    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(want)})
                    print(f"set redrive policy {q.queue_name} -> {q.dlq_name} "
                          f"(maxReceiveCount {q.max_receive_count})", file=sys.stderr)
        env[f"{q.env}_QUEUE_NAME"] = q.queue_name
        if url:
            env[f"{q.env}_QUEUE_URL"] = url
    return missing, env


# ============================================================== main
def _wait(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - the resource may not be visible yet
            pass
        if time.monotonic() > deadline:
            sys.exit(f"resources.py: timed out waiting for {what}")
        time.sleep(0.05)


def run(create: bool) -> tuple[list[str], dict[str, str]]:
    kinesis = _client("kinesis", _endpoint("AWS_ENDPOINT_URL_KINESIS"))
    dynalite = _client("dynamodb", _endpoint("AWS_ENDPOINT_URL_DYNAMODB"))
    sqs = _client("sqs", _endpoint("AWS_ENDPOINT_URL_SQS"))
    moto_url = os.environ.get("ORDERPIPE_MOTO_URL")

    missing = ensure_streams(kinesis, create)
    missing += ensure_tables(dynalite, "dynamodb", create)
    if moto_url:
        missing += ensure_tables(_client("dynamodb", _endpoint("ORDERPIPE_MOTO_URL")), "moto dynamodb", create)
    qmissing, env = ensure_queues(sqs, create)
    missing += qmissing

    out: dict[str, str] = {}
    for s in STREAMS:
        out[s.env] = s.name
    for t in TABLES:
        out[t.env] = t.name
    out.update(env)
    return missing, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["ensure", "check"])
    ap.add_argument("--env-out", help="write `export NAME=value` lines for the resources to this file")
    args = ap.parse_args()

    missing, env = run(create=args.command == "ensure")
    if missing:
        print("missing: " + ", ".join(missing), file=sys.stderr)
        return 1
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    if args.env_out:
        tmp = args.env_out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(lines)
        os.replace(tmp, args.env_out)
    elif args.command == "ensure":
        sys.stdout.write(lines)
    else:
        print(f"ok: {len(STREAMS)} stream(s), {len(TABLES)} table(s), "
              f"{sum(1 if q.dead_letter_only else 2 for q in QUEUES)} queue(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
