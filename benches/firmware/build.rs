//! Link options of the firmware program (this package only; libironhub keeps the defaults), on
//! x86_64 Linux with a size profile (`opt-level` "s" or "z"), where rustc links with its LLD:
//! - `--icf=all`: identical code folding, one copy of the many identical monomorphised functions;
//! - `-O2`: LLD's string tail merging in constant data;
//! - `-no-pie`: a fixed-address executable needs no run-time relocation table (`.rela.dyn`, one
//!   24-byte entry per pointer in constant data);
//! - with "z" only (the `min-size` profile, which is `panic = "abort"`): no unwind tables
//!   (`.eh_frame`, `.eh_frame_hdr`, `.gcc_except_table`, about 200 KB). Nothing ever unwinds;
//!   only the stack trace that `RUST_BACKTRACE` adds to a panic message is lost (the message and
//!   its location stay). This is what `-C force-unwind-tables=no` would do, which a profile cannot
//!   set, and it also covers the prebuilt std.
//!
//! They are size choices for a program on a device, not needed for correctness; other targets
//! and profiles link as cargo does by default.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let opt_level = env("OPT_LEVEL");
    if env("TARGET") != "x86_64-unknown-linux-gnu" || !matches!(opt_level.as_str(), "s" | "z") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    println!("cargo:rustc-link-arg-bins=-Wl,-O2");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // Only `min-size` has opt-level "z", and it is `panic = "abort"`. (A build script cannot see
    // the profile's panic strategy: `CARGO_CFG_PANIC` is the target's default, "unwind".)
    if opt_level == "z" {
        let script = PathBuf::from(env("OUT_DIR")).join("no-unwind-tables.ld");
        let discard = "*(.eh_frame) *(.eh_frame_hdr) *(.gcc_except_table .gcc_except_table.*)";
        let text = format!("SECTIONS {{ /DISCARD/ : {{ {discard} }} }}\nINSERT AFTER .text;\n");
        std::fs::write(&script, text).expect("write the linker script into OUT_DIR");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
