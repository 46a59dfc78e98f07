//! Generates the wire types from proto/gatehouse/v1/wire.proto (needs `protoc`: Debian's
//! protobuf-compiler, installed by scripts/install-deps.sh).

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::compile_protos(&["proto/gatehouse/v1/wire.proto"], &["proto"])
}
