//! Compiles the `.proto` files with protox (a pure-Rust protobuf compiler, so no system `protoc`
//! is needed) and generates the tonic clients and servers from the resulting descriptors.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/orderpipe/v1/common.proto",
        "proto/orderpipe/v1/orders.proto",
        "proto/orderpipe/v1/inventory.proto",
        "proto/orderpipe/v1/loyalty.proto",
        "proto/orderpipe/v1/menu.proto",
        "proto/orderpipe/v1/envelope.proto",
        "proto/orderpipe/v1/history.proto",
        "proto/orderpipe/v1/subscriptions.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;

    // The serialized descriptors back the gRPC reflection service.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("orderpipe_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
