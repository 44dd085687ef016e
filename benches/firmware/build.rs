//! Link options of the firmware program (this package only; libironhub keeps the defaults), on
//! x86_64 Linux with the size profiles (`opt-level` "s"/"z"), where rustc links with its LLD:
//! - `--icf=all`: identical code folding, one copy of the many identical monomorphised functions;
//! - `-no-pie`: a fixed-address executable needs no run-time relocation table (`.rela.dyn`, one
//!   24-byte entry per pointer in constant data);
//! - no unwind tables (`.eh_frame`, `.eh_frame_hdr`, `.gcc_except_table`, about 200 KB): the
//!   `min-size` profile is `panic = "abort"`, so nothing ever unwinds; only the stack trace that
//!   `RUST_BACKTRACE` adds to a panic message is lost (the message and location stay). This is
//!   what `-C force-unwind-tables=no` would do, which a profile cannot set, and it also covers the
//!   prebuilt std.
//!
//! They are size choices for a program on a device, not needed for correctness; other targets
//! and profiles link as cargo does by default.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let size_profile = matches!(env("OPT_LEVEL").as_str(), "s" | "z");
    if env("TARGET") != "x86_64-unknown-linux-gnu" || !size_profile || env("CARGO_CFG_PANIC") != "abort" {
        return;
    }
    let script = PathBuf::from(env("OUT_DIR")).join("no-unwind-tables.ld");
    std::fs::write(
        &script,
        "SECTIONS { /DISCARD/ : { *(.eh_frame) *(.eh_frame_hdr) *(.gcc_except_table .gcc_except_table.*) } }\nINSERT AFTER .text;\n",
    )
    .expect("write the linker script into OUT_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}
