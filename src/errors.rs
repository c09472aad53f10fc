//! Error messages users can read: libtorch's errors carry C++ stack frames ("Exception raised from ... frame #0:
//! ..."); [`clean`] keeps the first lines of the message and drops the frames, and [`describe`] writes a whole
//! `anyhow` chain that way. `main` also turns a panic (tch panics on libtorch errors in its non-`f_` calls) into
//! such a message with exit code 1, so no libtorch error ends the process with a signal or a backtrace.
use std::fmt::Write;

/// The message without C++ frames, trimmed.
pub fn clean(msg: &str) -> String {
    let mut out = Vec::new();
    for line in msg.lines() {
        let t = line.trim_start();
        if t.starts_with("Exception raised from") || t.starts_with("frame #") || t.starts_with("Traceback") {
            break;
        }
        out.push(line.trim_end());
    }
    let text = out.join("\n").trim().to_string();
    // tch wraps libtorch messages as `Torch("...")` in panics.
    let text = text.strip_prefix("Torch(\"").and_then(|t| t.strip_suffix("\")")).map(str::to_string).unwrap_or(text);
    if text.is_empty() {
        msg.lines().next().unwrap_or("").trim().to_string()
    } else {
        text
    }
}

/// An error chain as `outer: inner: ...`, each part cleaned, repeated parts dropped.
pub fn describe(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let c = clean(&cause.to_string());
        if !c.is_empty() && !parts.iter().any(|p| p.contains(&c)) {
            parts.push(c);
        }
    }
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        let _ = write!(s, "{}{p}", if i == 0 { "" } else { ": " });
    }
    s
}

/// The text of a panic payload (a `&str` or `String`), cleaned.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let raw = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    // tch's unwraps read `called `Result::unwrap()` on an `Err` value: Torch("...")`.
    let raw = match raw.find("Torch(\"") {
        Some(i) => raw[i + 7..].trim_end_matches("\")").replace("\\n", "\n").replace("\\\"", "\""),
        None => raw,
    };
    clean(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_dropped_and_the_message_kept() {
        let torch = "invalid argument: tensor too large\nException raised from alloc at /pytorch/c10/core/Alloc.cpp:12 (most recent call first):\nframe #0: c10::Error::Error() + 0x1\nframe #1: at::empty()";
        assert_eq!(clean(torch), "invalid argument: tensor too large");
        let e = anyhow::anyhow!("{torch}").context("sampling");
        assert_eq!(describe(&e), "sampling: invalid argument: tensor too large");
        let payload: Box<dyn std::any::Any + Send> =
            Box::new(format!("called `Result::unwrap()` on an `Err` value: Torch(\"{}\")", torch.replace('\n', "\\n")));
        assert_eq!(panic_message(&*payload), "invalid argument: tensor too large");
    }
}
