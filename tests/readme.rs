//! README.md's "Add a model" quotes code verbatim: each quoted block must equal the file it names (up to the file's
//! tests), and the registry line must be the one in the registry, so the worked example always compiles and runs.
use std::path::Path;

/// The fenced block that follows `marker` in the README.
fn block_after<'a>(readme: &'a str, marker: &str) -> &'a str {
    let at = readme.find(marker).unwrap_or_else(|| panic!("README.md lacks {marker}"));
    let rest = &readme[at..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let start = body.find('\n').expect("a fence line") + 1;
    let end = body[start..].find("\n```").expect("a closing fence") + start;
    &body[start..end]
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn add_a_model_quotes_the_code_it_describes() {
    let readme = read("README.md");
    for file in ["src/flows/sinh_arcsinh.rs", "experiments/sinh-arcsinh-pinwheel.toml"] {
        let text = read(file);
        let code = text.split("#[cfg(test)]").next().unwrap().trim_end();
        assert_eq!(block_after(&readme, &format!("<!-- file: {file} -->")), code, "README.md's copy of {file} is out of date");
    }
    let line = block_after(&readme, "<!-- registry: sinh_arcsinh -->");
    assert!(read("src/experiment/registry.rs").lines().any(|l| l.trim() == line), "the registry line in README.md is not in the registry");
    assert!(read("src/flows/mod.rs").contains("pub mod sinh_arcsinh;"));
}

#[test]
fn block_after_finds_the_right_block_and_a_changed_copy_fails() {
    let page = "x\n<!-- file: a -->\n```rust\nfn a() {}\n```\n<!-- file: b -->\n```toml\nk = 1\n```\n";
    assert_eq!(block_after(page, "<!-- file: a -->"), "fn a() {}");
    assert_eq!(block_after(page, "<!-- file: b -->"), "k = 1");
    assert_ne!(block_after(page, "<!-- file: a -->"), "fn a() { }");
}
