//! The one generator of `include/ironhub.h`: cbindgen over `src/ffi/` with `cbindgen.toml`, plus
//! version defines. `build.rs` writes its output; `tests/c_abi.rs` regenerates and compares, so a
//! stale committed header fails a test instead of silently drifting.

use std::path::Path;

/// Header text for the crate at `manifest_dir` whose Cargo version is `version` ("MAJOR.MINOR.PATCH...").
pub fn generate_header(manifest_dir: &Path, version: &str) -> Result<String, String> {
    let mut config = cbindgen::Config::from_file(manifest_dir.join("cbindgen.toml")).map_err(|e| e.to_string())?;
    config.after_includes = Some(version_defines(version));
    // Parse only the FFI tree: the rest of `src/` is none of the header's business, and a
    // half-edited file elsewhere must not stop header generation.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(manifest_dir.join("src").join("ffi").join("mod.rs"))
        .generate()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn version_defines(version: &str) -> String {
    let core = version.split(['-', '+']).next().unwrap_or("0.0.0");
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    format!(
        "\n#define IRONHUB_VERSION \"{version}\"\n#define IRONHUB_VERSION_MAJOR {major}\n#define IRONHUB_VERSION_MINOR {minor}\n#define IRONHUB_VERSION_PATCH {patch}\n"
    )
}
