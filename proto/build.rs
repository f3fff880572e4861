//! Compiles every `.proto` under `retail/` with the pure-Rust `protox` compiler (no
//! system `protoc` needed) and generates tonic clients and servers. The descriptor set,
//! well-known types included, is written out for gRPC server reflection.

use std::path::{Path, PathBuf};

use prost::Message;

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    proto_files(&root.join("retail"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=retail");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("retail_descriptor.bin"), fds.encode_to_vec())?;
    // BTreeMap for map fields: encoding is then deterministic, which request
    // fingerprints (idempotency) rely on.
    // Type names (`prost::Name`): an event's type is its message's full name, never
    // a string written out by hand.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
