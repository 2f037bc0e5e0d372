#!/usr/bin/env python3
"""A generic gRPC client: it knows nothing of orderpipe's .proto files and learns every service,
method and message from the server's reflection service, like grpcurl.

  grpc-call.py list
  grpc-call.py describe orderpipe.v1.OrderService
  grpc-call.py call orderpipe.v1.OrderService/GetOrder '{"orderId": "..."}' --token "$TOKEN"
  grpc-call.py call orderpipe.v1.OrderService/WatchOrder '{"orderId": "..."}' --token "$TOKEN"

Requests and responses are JSON (protobuf's JSON mapping: lowerCamelCase field names); a
server-streaming method prints one compact JSON line per message as it arrives, until the stream
ends (or --timeout passes, default none for streams, 10 s for single calls). The
address defaults to ORDERPIPE_GRPC_ADDRESS or 127.0.0.1:50051. Exit status 1 on a gRPC error,
which is printed as its status code and message.

TLS (a command API started by `scripts/up.sh --tls`): --ca-file trusts that CA; --cert-file and
--key-file present a client certificate (mTLS); --server-name when the address is not a name
on the server's certificate.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("ORDERPIPE_GRPC_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("ORDERPIPE_TOKEN"), help="bearer token (or ORDERPIPE_TOKEN)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="extra request metadata")
    parser.add_argument("--ca-file", default=os.environ.get("ORDERPIPE_GRPC_CA_FILE"), help="connect over TLS, trusting this CA (PEM)")
    parser.add_argument("--cert-file", default=os.environ.get("ORDERPIPE_GRPC_CERT_FILE"), help="client certificate (PEM) for mTLS")
    parser.add_argument("--key-file", default=os.environ.get("ORDERPIPE_GRPC_KEY_FILE"), help="client key (PEM) for mTLS")
    parser.add_argument("--server-name", help="the name the server's certificate must carry")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the services")
    describe = commands.add_parser("describe", help="list a service's methods with their message types")
    describe.add_argument("service")
    call = commands.add_parser("call", help="call SERVICE/METHOD with a JSON request")
    call.add_argument("method", metavar="SERVICE/METHOD")
    call.add_argument("request", nargs="?", default="{}", help="JSON request body (default {})")
    call.add_argument("--timeout", type=float, help="seconds (default 10, none for a stream)")
    args = parser.parse_args()

    channel = open_channel(args)
    reflection = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(reflection)

    if args.command == "list":
        for service in reflection.get_services():
            print(service)
        return 0
    if args.command == "describe":
        service = pool.FindServiceByName(args.service)
        for method in service.methods:
            print(f"{method.name}({method.input_type.full_name}) returns ({method.output_type.full_name})")
        return 0

    service_name, _, method_name = args.method.rpartition("/")
    method = pool.FindServiceByName(service_name).methods_by_name[method_name]
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(args.request, request_type())
    metadata = [tuple(header.split("=", 1)) for header in args.header]
    if args.token:
        metadata.append(("authorization", f"Bearer {args.token}"))
    shape = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(shape)
    path = f"/{service_name}/{method_name}"
    codec = dict(request_serializer=request_type.SerializeToString, response_deserializer=response_type.FromString)
    try:
        if shape.server_streaming:
            for response in channel.unary_stream(path, **codec)(request, metadata=metadata, timeout=args.timeout):
                print(json_format.MessageToJson(response, indent=None, always_print_fields_with_no_presence=True), flush=True)
        else:
            response = channel.unary_unary(path, **codec)(request, metadata=metadata, timeout=args.timeout or 10)
            print(json_format.MessageToJson(response, always_print_fields_with_no_presence=True))
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "message": error.details()}), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS (and mTLS) when a CA file is given."""
    if not args.ca_file:
        if args.cert_file or args.key_file:
            sys.exit("--cert-file/--key-file need --ca-file (they are for a TLS server)")
        return grpc.insecure_channel(args.address)
    if bool(args.cert_file) != bool(args.key_file):
        sys.exit("--cert-file and --key-file go together")

    def read(path):
        with open(path, "rb") as file:
            return file.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),
        private_key=read(args.key_file) if args.key_file else None,
        certificate_chain=read(args.cert_file) if args.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.address, credentials, options)


if __name__ == "__main__":
    sys.exit(main())
