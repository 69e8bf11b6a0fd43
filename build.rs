//! Links every program with build/plugin-order.ld, which puts the code the
//! plug-in runs at start together at the front of the text: fewer 64 KiB
//! windows to fault in per call (see that file). Given here, by absolute
//! path, rather than in .cargo/config.toml: there a relative path would be
//! looked up from each dependency's own directory when its build script is
//! linked, and only our programs need it.

fn main() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/build/plugin-order.ld");
    println!("cargo:rerun-if-changed=build/plugin-order.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{script}");
}
