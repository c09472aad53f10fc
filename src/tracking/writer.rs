//! A run's TensorBoard folder `RUN/tb/`: one event file per process that writes the run (rank 0 of a data-parallel
//! run), named `events.out.tfevents.<unix seconds>.<nanoseconds>.<host>` so that TensorBoard, which reads a folder's
//! files in name order, reads a resumed run's files in the order they were written.
//!
//! Each event is framed and written with one `write` on an unbuffered file, so a kill leaves whole records and at
//! worst one torn last record (which TensorBoard and `record::parse` stop at). A resume first rewrites every file
//! without the events after the checkpoint's step (`truncate_after`), as `metrics.jsonl` is rewritten: the redone
//! steps are then written once.
use super::event::{self, Event};
use super::record;
use anyhow::{bail, Context, Result};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder, inside a run folder, that holds its event files.
pub const TB_DIR: &str = "tb";

/// The TensorBoard tag of a metrics-line key: the test likelihood's tags carry its kind (`test_nll/exact`,
/// `test_nll/bound`, `test_bpd/estimate`), so a bound is never drawn on the same curve as an exact NLL; every other
/// key is its own tag.
pub fn scalar_tag(key: &str, line: &serde_json::Value) -> String {
    match (key, line.get("test_nll_kind").and_then(|k| k.as_str())) {
        ("test_nll" | "test_bpd", Some(kind)) => format!("{key}/{kind}"),
        _ => key.to_string(),
    }
}

/// An open event file of a run.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
    /// Whether `tb/` already held event files (a resumed run): the config is written once, by the first file.
    resumed: bool,
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = if ok { String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(buf.len())]).to_string() } else { String::new() };
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if name.is_empty() { "localhost".into() } else { name }
}

/// The event files of a run's `tb/`, in name order (none when there is no `tb/`).
pub fn event_files(run: &Path) -> Result<Vec<PathBuf>> {
    let dir = run.join(TB_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("tfevents")))
        .collect();
    files.sort();
    Ok(files)
}

impl EventWriter {
    /// A new event file in `run/tb/` (created if needed), starting with the file-version event.
    pub fn create(run: &Path) -> Result<Self> {
        let resumed = !event_files(run)?.is_empty();
        let dir = run.join(TB_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = dir.join(format!("events.out.tfevents.{}.{:09}.{}", t.as_secs(), t.subsec_nanos(), hostname()));
        if path.exists() {
            bail!("{}: exists already", path.display());
        }
        let file = std::fs::OpenOptions::new().create_new(true).append(true).open(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = EventWriter { path, file, resumed };
        w.write(&event::file_version(now()))?;
        Ok(w)
    }

    /// Whether the run's `tb/` held event files before this one (a resumed run).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        // One write of the whole record (the file is unbuffered): a kill never leaves half of an earlier record.
        self.file.write_all(&record::frame(&e.encode_to_vec())).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Every number of a `metrics.jsonl` line (but `step`) as a scalar at its step, tagged by [`scalar_tag`].
    pub fn metrics_line(&mut self, line: &serde_json::Value) -> Result<()> {
        let Some(step) = line.get("step").and_then(|s| s.as_i64()) else { return Ok(()) };
        let Some(fields) = line.as_object() else { return Ok(()) };
        let values: Vec<(String, f64)> = fields.iter().filter(|(k, _)| k.as_str() != "step").filter_map(|(k, v)| Some((scalar_tag(k, line), v.as_f64()?))).collect();
        if values.is_empty() {
            return Ok(());
        }
        self.write(&event::scalars(now(), step, &values))
    }

    /// The PNG file `png` as an image at `step`.
    pub fn picture(&mut self, step: i64, tag: &str, png: &Path) -> Result<()> {
        let bytes = std::fs::read(png).with_context(|| format!("reading {}", png.display()))?;
        let image = png_image(bytes).with_context(|| format!("{}: not a PNG file", png.display()))?;
        self.write(&event::image(now(), step, tag, image))
    }

    /// Markdown text at `step` (TensorBoard's text plugin).
    pub fn text(&mut self, step: i64, tag: &str, markdown: &str) -> Result<()> {
        self.write(&event::text(now(), step, tag, markdown))
    }
}

/// A PNG file's bytes with the size and colour space of its IHDR chunk.
fn png_image(bytes: Vec<u8>) -> Result<event::Image> {
    if bytes.len() < 26 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        bail!("no PNG signature and IHDR chunk");
    }
    let be = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (width, height) = (be(16), be(20));
    // PNG colour types: 0 grey, 4 grey + alpha, 2 RGB, 6 RGBA, 3 palette (decoded to RGB).
    let colorspace = match bytes[25] {
        0 => 1,
        4 => 2,
        6 => 4,
        _ => 3,
    };
    Ok(event::Image { height, width, colorspace, encoded_image_string: bytes })
}

/// Drops, from every event file of the run, the events after `step` (the file-version event is at step 0), and a
/// torn last record; files that lose nothing are left alone, the others are rewritten atomically.
pub fn truncate_after(run: &Path, step: i64) -> Result<()> {
    for path in event_files(run)? {
        let (records, clean) = record::read(&path)?;
        let kept: Vec<&Vec<u8>> = records.iter().filter(|r| Event::decode(r.as_slice()).is_ok_and(|e| e.step <= step)).collect();
        if clean && kept.len() == records.len() {
            continue;
        }
        let bytes: Vec<u8> = kept.iter().flat_map(|r| record::frame(r)).collect();
        crate::files::write_atomic(&path, &bytes).with_context(|| format!("rewriting {} without the steps after {step}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(path: &Path) -> Vec<i64> {
        let (records, clean) = record::read(path).unwrap();
        assert!(clean);
        records.iter().map(|r| Event::decode(r.as_slice()).unwrap().step).collect()
    }

    #[test]
    fn tags_carry_the_likelihood_kind() {
        let line = serde_json::json!({"step": 5, "loss": 1.0, "test_nll": 2.0, "test_nll_kind": "bound", "test_bpd": 3.0});
        assert_eq!((scalar_tag("test_nll", &line), scalar_tag("test_bpd", &line), scalar_tag("loss", &line)), ("test_nll/bound".into(), "test_bpd/bound".into(), "loss".into()));
    }

    #[test]
    fn a_resume_keeps_each_step_once_and_drops_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(tmp.path()).unwrap();
        assert!(!w.resumed());
        for s in [10, 20, 30] {
            w.metrics_line(&serde_json::json!({"step": s, "loss": s as f64 / 10.0, "cuda_graph": "eager"})).unwrap();
        }
        w.text(30, "summary", "done").unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        // A kill in the middle of a record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&record::frame(b"torn record")[..9]).unwrap();
        drop(f);
        assert!(!record::read(&path).unwrap().1);
        truncate_after(tmp.path(), 20).unwrap();
        assert_eq!(steps(&path), vec![0, 10, 20], "file version, then steps up to the checkpoint");
        let mut again = EventWriter::create(tmp.path()).unwrap();
        assert!(again.resumed());
        again.metrics_line(&serde_json::json!({"step": 30, "loss": 3.0})).unwrap();
        let files = event_files(tmp.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1], again.path(), "the resumed run's file sorts after the first");
        assert_eq!(steps(&files[1]), vec![0, 30]);
        // Strings are not scalars; a line without step writes nothing.
        let (records, _) = record::read(&files[0]).unwrap();
        let e = Event::decode(records[1].as_slice()).unwrap();
        let Some(event::What::Summary(s)) = e.what else { panic!("a summary") };
        assert_eq!(s.value.iter().map(|v| v.tag.as_str()).collect::<Vec<_>>(), vec!["loss"]);
    }

    #[test]
    fn pngs_are_images_with_their_size_and_colour_space() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.png");
        image::RgbImage::from_pixel(7, 5, image::Rgb([1, 2, 3])).save(&p).unwrap();
        let img = png_image(std::fs::read(&p).unwrap()).unwrap();
        assert_eq!((img.width, img.height, img.colorspace), (7, 5, 3));
        std::fs::write(&p, b"GIF89a").unwrap();
        let mut w = EventWriter::create(tmp.path()).unwrap();
        assert!(format!("{:#}", w.picture(1, "samples", &p).unwrap_err()).contains("not a PNG"));
    }
}
