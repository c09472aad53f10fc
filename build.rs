//! Link libtorch_cuda explicitly (the linker would drop it with --as-needed, and then the binary never sees a GPU),
//! set an rpath to torch's lib folder so `target/release/relaxflow` runs without LD_LIBRARY_PATH, and record the
//! libtorch version for run summaries.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let version = std::fs::read_to_string(Path::new(&lib).join("../version.py"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches('\'').to_string())))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RELAXFLOW_LIBTORCH_VERSION={version}");
}
