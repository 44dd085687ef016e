//! Build script: with the `capi` feature, regenerates the committed C header `include/ironhub.h`
//! with cbindgen and writes a pkg-config file next to the built library. Without it (Rust users,
//! the Python crate) it does nothing.
//!
//! It never fails the build. Other engineers edit `src/` concurrently, so a parse error here is
//! usually someone's half-saved file: we warn and keep the last good header. Real drift between the
//! sources and the committed header is caught by the staleness test in `tests/c_abi.rs`.

#![cfg_attr(not(feature = "capi"), allow(unused_imports))]

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

#[cfg(feature = "capi")]
#[path = "tests/c/gen_header.rs"]
mod gen_header;

#[cfg(not(feature = "capi"))]
fn main() {}

#[cfg(feature = "capi")]
fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=ironhub.pc.in");
    println!("cargo:rerun-if-changed=tests/c/gen_header.rs");

    let version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    // cbindgen may panic on syntax it does not expect; that must not fail the build either.
    let generated = std::panic::catch_unwind(|| gen_header::generate_header(&manifest_dir, &version))
        .unwrap_or_else(|_| Err("cbindgen panicked".to_string()));
    match generated {
        Ok(header) => write_if_changed(&manifest_dir.join("include").join("ironhub.h"), &header),
        Err(e) => println!("cargo:warning=ironhub.h not regenerated (cbindgen: {e}); keeping the committed header"),
    }
    write_pkg_config(&manifest_dir);
}

#[cfg(feature = "capi")]
/// Rewriting an unchanged header would bump its mtime and make every C consumer rebuild.
fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Err(e) = fs::write(path, contents) {
        println!("cargo:warning=could not write {}: {e}", path.display());
    }
}

#[cfg(feature = "capi")]
/// `ironhub.pc` for in-tree use: libdir is the profile directory the library lands in
/// (`target/<profile>`), includedir is this repo's `include/`. Installs configure the same
/// template from CMake with their own prefix.
fn write_pkg_config(manifest_dir: &Path) {
    let Some(profile_dir) = profile_dir() else { return };
    let Ok(template) = fs::read_to_string(manifest_dir.join("ironhub.pc.in")) else { return };
    let pc = template
        .replace("@PREFIX@", &manifest_dir.display().to_string())
        .replace("@LIBDIR@", &profile_dir.display().to_string())
        .replace("@INCLUDEDIR@", &manifest_dir.join("include").display().to_string())
        .replace("@VERSION@", &env::var("CARGO_PKG_VERSION").unwrap_or_default());
    write_if_changed(&profile_dir.join("ironhub.pc"), &pc);
}

#[cfg(feature = "capi")]
/// OUT_DIR is `<target>/<profile>/build/ironhub-<hash>/out`; the library goes to `<target>/<profile>`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(env::var_os("OUT_DIR")?);
    Some(out.ancestors().nth(3)?.to_path_buf())
}
