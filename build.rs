//! Link libtorch_cuda explicitly (the linker would drop it with --as-needed, and then the binary never sees a GPU),
//! set an rpath to torch's lib folder so `target/release/relaxflow` runs without LD_LIBRARY_PATH, record the
//! libtorch version for run summaries, and compile the c10d shim (csrc/dist.cpp: process groups for
//! `relaxflow::parallel`) and the native-ops shim (csrc/optim.cpp: `relaxflow::native`) against the same libtorch's
//! headers.
use std::path::{Path, PathBuf};

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
    compile_shim(Path::new(&lib));
    compile_native(Path::new(&lib));
}

/// The shim over what tch does not wrap (csrc/optim.cpp: the fused Adam step; csrc/amp.cpp: autocast with a dtype,
/// TF32), a library of its own so that editing one shim does not recompile the other.
fn compile_native(lib: &Path) {
    for f in ["csrc/optim.cpp", "csrc/amp.cpp", "csrc/graph.cpp", "csrc/coupling.cpp", "csrc/native.h", "csrc/native_util.hpp", "csrc/shim_errors.hpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    // CUDA graphs (csrc/graph.cpp) need CUDA's runtime headers, which the wheel only partly ships: behind the feature
    // `cuda-graphs`, with the same header search as NCCL's (`make nccl-headers`). Without it graph.cpp compiles to
    // stubs that answer "unsupported".
    if std::env::var_os("CARGO_FEATURE_CUDA_GRAPHS").is_some() {
        for dir in nccl_includes(lib) {
            build.include(dir);
        }
        build.define("USE_CUDA", None).define("RELAXFLOW_CUDA_GRAPHS", None);
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-lc10_cuda,-ltorch_cuda,--as-needed");
        link_cudart(lib);
    }
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false) // as for the c10d shim: libtorch's headers are not warning-free
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file("csrc/optim.cpp")
        .file("csrc/amp.cpp")
        .file("csrc/graph.cpp")
        .file("csrc/coupling.cpp")
        .compile("relaxflow_native");
}

/// The C++ shim over c10d. `lib` is `<torch>/lib`; the headers are in `<torch>/include` (the wheel's layout, and
/// libtorch's zip's).
fn compile_shim(lib: &Path) {
    for f in ["csrc/dist.cpp", "csrc/dist.h", "csrc/shim_errors.hpp", "third_party/gloo"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false) // libtorch's own headers are not warning-free; our file is kept clean by review
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
        .define("USE_C10D_GLOO", None)
        .include("third_party")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file("csrc/dist.cpp");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        for dir in nccl_includes(lib) {
            build.include(dir);
        }
        build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("RELAXFLOW_NCCL", None);
    }
    build.compile("relaxflow_dist");
}

/// CUDA's runtime library, which CUDAGraph.h's inline code calls: the wheel's `nvidia/cu13/lib/libcudart.so.N`, linked
/// by file name with an rpath to its folder (on another machine, put that folder on LD_LIBRARY_PATH, as
/// scripts/gpu_check.sh does).
fn link_cudart(lib: &Path) {
    let dir = lib.join("../../nvidia/cu13/lib");
    let name = std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).find(|n| n.starts_with("libcudart.so."))
        })
        .unwrap_or_else(|| panic!("feature `cuda-graphs`: no libcudart.so.* in {} (the wheel's nvidia-cuda-runtime package)", dir.display()));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-link-arg=-L{}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-l:{name},--as-needed");
}

/// The C++ ABI libtorch was built with, found the way torch-sys finds it: ask the wheel's Python when
/// LIBTORCH_USE_PYTORCH is set, else LIBTORCH_CXX11_ABI (default 1).
fn cxx11_abi() -> String {
    for v in ["LIBTORCH_USE_PYTORCH", "LIBTORCH_CXX11_ABI"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        return std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    }
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = std::process::Command::new(python)
        .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
        .output()
        .unwrap_or_else(|e| panic!("running {python} to read torch's C++ ABI: {e}"));
    let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(abi == "0" || abi == "1", "{python} did not report torch's C++ ABI: {}", String::from_utf8_lossy(&out.stderr));
    abi
}

/// Header folders for ProcessGroupNCCL.hpp (feature `nccl`) and CUDAGraph.h (feature `cuda-graphs`): the wheel's CUDA
/// and NCCL packages, plus
/// RELAXFLOW_CUDA_INCLUDE (colon-separated) for the two the wheel lacks (crt/host_config.h from nvidia-cuda-crt,
/// nv/target from nvidia-cuda-cccl; `make nccl-headers` installs them into the venv).
fn nccl_includes(lib: &Path) -> Vec<PathBuf> {
    println!("cargo:rerun-if-env-changed=RELAXFLOW_CUDA_INCLUDE");
    let nvidia = lib.join("../../nvidia");
    let mut dirs: Vec<PathBuf> = std::env::var("RELAXFLOW_CUDA_INCLUDE")
        .map(|s| s.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default();
    dirs.extend(["cu13/include", "cu13/include/cccl", "nccl/include"].map(|d| nvidia.join(d)));
    dirs.retain(|d| d.is_dir());
    for (header, package) in [("nccl.h", "nvidia-nccl-cu13"), ("cuda_runtime_api.h", "nvidia-cuda-runtime"), ("crt/host_config.h", "nvidia-cuda-crt==13.0.*"), ("nv/target", "nvidia-cuda-cccl==13.0.*")] {
        if !dirs.iter().any(|d| d.join(header).exists()) {
            panic!(
                "feature `nccl`: {header} not found under {} or RELAXFLOW_CUDA_INCLUDE; install {package} \
                 (`make nccl-headers`) or point RELAXFLOW_CUDA_INCLUDE at its include folder",
                nvidia.display()
            );
        }
    }
    dirs
}
