//! The protobuf contract of orderpipe, package `orderpipe.v1`: the gRPC command services and the
//! envelope one log record carries. Generated at build time from `proto/`.

#![allow(missing_docs, clippy::all)] // generated code

/// Version 1 of the API and the log envelope.
pub mod v1 {
    tonic::include_proto!("orderpipe.v1");
}

/// The `domain` of the `google.rpc.ErrorInfo` detail on every refusal of the command API (the
/// package's name); its `reason` is a stable code listed in `proto/README.md`.
pub const ERROR_DOMAIN: &str = "orderpipe.v1";

/// The encoded file descriptor set of every `.proto` file, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orderpipe_descriptor");
