//! Links every program with build/plugin-order.ld, which puts the code and
//! constants the plug-in uses at start together, at the front of the text
//! and of .rodata: fewer 64 KiB windows to fault in per call (see that
//! file). Given here, by absolute path, rather than in .cargo/config.toml:
//! there a relative path would be looked up from each dependency's own
//! directory when its build script is linked, and only our programs need it.

fn main() {
    println!("cargo:rerun-if-changed=build/plugin-order.ld");
    // `-T` and the path as two arguments: no character of the path (a
    // comma, as `-Wl,` would split on) can change what the linker is told.
    println!("cargo:rustc-link-arg-bins=-T");
    println!(
        "cargo:rustc-link-arg-bins={}/build/plugin-order.ld",
        env!("CARGO_MANIFEST_DIR")
    );
}
