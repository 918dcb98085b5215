//! Compiles `proto/**/*.proto` with protox (a pure-Rust protobuf compiler: no `protoc` needed) and
//! generates the prost messages and tonic client/server, plus the encoded descriptor set that the
//! reflection service serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &["loom/db/v1/db.proto", "loom/db/v1/errors.proto", "google/rpc/status.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("loom_db_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().btree_map(".").compile_fds(fds)?;
    let connectors = protox::compile(["loom/connectors/v1/connectors.proto"], ["proto"])?;
    std::fs::write(out.join("loom_connectors_v1_descriptor.bin"), connectors.encode_to_vec())?;
    tonic_prost_build::configure().btree_map(".").compile_fds(connectors)?;
    Ok(())
}
