//! tonic-prost-build's output for the contract, from a descriptor set that
//! protox compiles in Rust, so no protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto";
    println!("cargo:rerun-if-changed={proto}/user_service.proto");
    let descriptors = protox::compile(["user_service.proto"], [proto])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}
