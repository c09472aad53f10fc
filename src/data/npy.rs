//! A checked `.npy` reader and a streaming writer (NumPy format 1.0-3.0).
//!
//! The reader trusts nothing in the file: the header's dtype, order and shape are parsed and checked, and the data
//! must hold exactly shape x itemsize bytes before anything is read, so a truncated or padded file is an error naming
//! what the header promised and what the file holds (tch's reader copies what the header claims). Big-endian,
//! Fortran-order, object, string, complex and structured arrays are refused by name.
//!
//! The writer streams rows into a temporary file whose header already holds the final shape, then renames it into
//! place: any number of samples can be written in bounded memory, and a failure leaves no partial file.
use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types the reader accepts (little-endian or single-byte).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F2,
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
    B1,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::I1 | Dtype::U1 | Dtype::B1 => 1,
            Dtype::F2 | Dtype::I2 | Dtype::U2 => 2,
            Dtype::F4 | Dtype::I4 | Dtype::U4 => 4,
            Dtype::F8 | Dtype::I8 | Dtype::U8 => 8,
        }
    }

    fn parse(descr: &str) -> Result<Dtype> {
        let (order, code) = match descr.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
            _ => ('=', descr),
        };
        let kind = code.chars().next().unwrap_or(' ');
        match kind {
            'O' => bail!("dtype `{descr}` is an object array (Python objects, not numbers); save numbers, e.g. arr.astype('<f8')"),
            'U' | 'S' | 'a' => bail!("dtype `{descr}` holds strings, not numbers"),
            'c' => bail!("dtype `{descr}` is complex; save the real part"),
            'V' => bail!("dtype `{descr}` is a raw/structured type; save a plain numeric array"),
            'M' | 'm' => bail!("dtype `{descr}` is a date/time type; save numbers"),
            _ => {}
        }
        if order == '>' && code != "i1" && code != "u1" && code != "b1" {
            bail!("dtype `{descr}` is big-endian; save it little-endian, e.g. arr.astype('<{code}')");
        }
        Ok(match code {
            "f2" => Dtype::F2,
            "f4" => Dtype::F4,
            "f8" => Dtype::F8,
            "i1" => Dtype::I1,
            "i2" => Dtype::I2,
            "i4" => Dtype::I4,
            "i8" => Dtype::I8,
            "u1" => Dtype::U1,
            "u2" => Dtype::U2,
            "u4" => Dtype::U4,
            "u8" => Dtype::U8,
            "b1" => Dtype::B1,
            _ => bail!("unsupported dtype `{descr}` (expected a float, integer or bool type such as <f4, <f8, <i8, |u1)"),
        })
    }

    /// Little-endian bytes of one element as f64.
    fn decode(self, b: &[u8]) -> f64 {
        match self {
            Dtype::F2 => half_to_f64(u16::from_le_bytes([b[0], b[1]])),
            Dtype::F4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Dtype::F8 => f64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            Dtype::I1 => b[0] as i8 as f64,
            Dtype::I2 => i16::from_le_bytes([b[0], b[1]]) as f64,
            Dtype::I4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Dtype::I8 => i64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f64,
            Dtype::U1 | Dtype::B1 => b[0] as f64,
            Dtype::U2 => u16::from_le_bytes([b[0], b[1]]) as f64,
            Dtype::U4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Dtype::U8 => u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f64,
        }
    }
}

/// IEEE half precision to f64.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// The parsed header: dtype, shape and where the data starts.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offset: usize,
}

/// The value of `'key':` in a header dict, as raw text up to the next top-level comma.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let start = [format!("'{key}'"), format!("\"{key}\"")].iter().find_map(|k| dict.find(k.as_str()).map(|i| i + k.len()))?;
    let rest = dict[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not a .npy file (no \\x93NUMPY magic at the start)");
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => bail!("unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"),
    };
    let end = start.checked_add(len).filter(|&e| e <= bytes.len()).with_context(|| {
        format!("truncated header: it claims {len} bytes, the file has {} after the preamble", bytes.len().saturating_sub(start))
    })?;
    let dict = std::str::from_utf8(&bytes[start..end]).context("the header is not text")?.trim();
    if !dict.starts_with('{') {
        bail!("malformed header `{dict}` (expected a Python dict)");
    }
    let descr = dict_value(dict, "descr").context("the header has no 'descr' (dtype)")?;
    if descr.starts_with('[') {
        bail!("structured dtype {descr}: save a plain numeric array");
    }
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = Dtype::parse(descr)?;
    match dict_value(dict, "fortran_order").context("the header has no 'fortran_order'")? {
        "False" => {}
        "True" => bail!("Fortran-order (column-major) arrays are not supported; save np.ascontiguousarray(arr)"),
        other => bail!("malformed fortran_order `{other}`"),
    }
    let shape_text = dict_value(dict, "shape").context("the header has no 'shape'")?;
    let inner = shape_text.strip_prefix('(').and_then(|s| s.strip_suffix(')')).with_context(|| format!("malformed shape `{shape_text}`"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| anyhow::anyhow!("malformed shape `{shape_text}`")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Header { dtype, shape, data_offset: end })
}

/// Reads a .npy file into an f64 tensor of its shape, checking every claim of its header against the file.
pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode(&bytes).with_context(|| format!("{}: not a readable .npy file", path.display()))
}

/// Decodes the bytes of a .npy file (see [`read`]).
pub fn decode(bytes: &[u8]) -> Result<Tensor> {
    let h = parse_header(bytes)?;
    let count = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("the header's shape overflows")?;
    let need = count.checked_mul(h.dtype.size()).context("the header's shape overflows")?;
    let have = bytes.len() - h.data_offset;
    if have != need {
        bail!(
            "the header promises shape {:?} of {:?} ({need} bytes of data) but the file holds {have} ({})",
            h.shape,
            h.dtype,
            if have < need { "truncated" } else { "trailing bytes" }
        );
    }
    let values: Vec<f64> = bytes[h.data_offset..].chunks_exact(h.dtype.size()).map(|b| h.dtype.decode(b)).collect();
    let shape: Vec<i64> = h.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&values).view(shape.as_slice()))
}

/// The bytes and shape of a .npy file of uint8 values (8-bit images); any other dtype is an error naming it.
pub fn decode_u8(bytes: &[u8]) -> Result<(Vec<u8>, Vec<i64>)> {
    let h = parse_header(bytes)?;
    if h.dtype != Dtype::U1 {
        bail!("the array holds {:?} values; 8-bit images must be uint8 (|u1), e.g. (x * 255).round().astype('uint8')", h.dtype);
    }
    let count = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("the header's shape overflows")?;
    let have = bytes.len() - h.data_offset;
    if have != count {
        bail!("the header promises shape {:?} ({count} bytes of data) but the file holds {have} ({})", h.shape, if have < count { "truncated" } else { "trailing bytes" });
    }
    Ok((bytes[h.data_offset..].to_vec(), h.shape.iter().map(|&d| d as i64).collect()))
}

/// The data offset and shape of a uint8 .npy file from its first bytes `head` (at least the whole header) and its
/// length in bytes, with the same checks as [`decode_u8`]: the caller can then memory-map the data instead of reading it.
pub fn header_u8(head: &[u8], file_len: usize) -> Result<(usize, Vec<i64>)> {
    let h = parse_header(head)?;
    if h.dtype != Dtype::U1 {
        bail!("the array holds {:?} values; 8-bit images must be uint8 (|u1), e.g. (x * 255).round().astype('uint8')", h.dtype);
    }
    let count = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("the header's shape overflows")?;
    let have = file_len.saturating_sub(h.data_offset);
    if have != count {
        bail!("the header promises shape {:?} ({count} bytes of data) but the file holds {have} ({})", h.shape, if have < count { "truncated" } else { "trailing bytes" });
    }
    Ok((h.data_offset, h.shape.iter().map(|&d| d as i64).collect()))
}

/// Whether the bytes are a .npy file of uint8 values (checks the header only).
pub fn is_u8(bytes: &[u8]) -> bool {
    parse_header(bytes).is_ok_and(|h| h.dtype == Dtype::U1)
}

/// A .npy file written row block by row block: the header holds the final shape, the data streams after it, and
/// `finish` renames the temporary file into place.
pub struct NpyWriter {
    out: BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    kind: Kind,
    rows_left: i64,
    row_shape: Vec<i64>,
    done: bool,
}

impl NpyWriter {
    /// A writer for `rows` rows of shape `row_shape`, of f32 (`Kind::Float`) or f64 (`Kind::Double`).
    pub fn create(path: &Path, rows: i64, row_shape: &[i64], kind: Kind) -> Result<NpyWriter> {
        let descr = match kind {
            Kind::Float => "<f4",
            Kind::Double => "<f8",
            _ => bail!("NpyWriter writes f32 or f64, not {kind:?}"),
        };
        let dims: Vec<String> = std::iter::once(rows).chain(row_shape.iter().copied()).map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let total = MAGIC.len() + 4 + header.len() + 1;
        header.push_str(&" ".repeat((64 - total % 64) % 64));
        header.push('\n');
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = BufWriter::new(file);
        let write = |out: &mut BufWriter<std::fs::File>| -> std::io::Result<()> {
            out.write_all(MAGIC)?;
            out.write_all(&[1, 0])?;
            out.write_all(&(header.len() as u16).to_le_bytes())?;
            out.write_all(header.as_bytes())
        };
        if let Err(e) = write(&mut out) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
        Ok(NpyWriter { out, tmp, path: path.to_path_buf(), kind, rows_left: rows, row_shape: row_shape.to_vec(), done: false })
    }

    /// Appends a block of rows (any device, any float kind; converted).
    pub fn write_rows(&mut self, x: &Tensor) -> Result<()> {
        let n = x.size()[0];
        if x.size()[1..] != self.row_shape[..] || n > self.rows_left {
            bail!("{}: block of shape {:?} does not fit rows of {:?} ({} rows left)", self.path.display(), x.size(), self.row_shape, self.rows_left);
        }
        let x = x.to_device(tch::Device::Cpu).to_kind(self.kind).contiguous().view([-1]);
        let bytes: Vec<u8> = match self.kind {
            Kind::Float => Vec::<f32>::try_from(&x)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => Vec::<f64>::try_from(&x)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.out.write_all(&bytes).with_context(|| format!("writing {}", self.tmp.display()))?;
        self.rows_left -= n;
        Ok(())
    }

    /// Checks every row was written, flushes to disk and renames into place.
    pub fn finish(mut self) -> Result<()> {
        let result = (|| -> Result<()> {
            if self.rows_left != 0 {
                bail!("{} rows were never written", self.rows_left);
            }
            self.out.flush()?;
            self.out.get_ref().sync_all()?;
            std::fs::rename(&self.tmp, &self.path)?;
            Ok(())
        })();
        self.done = result.is_ok();
        result.with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        // An abandoned writer (error or panic before `finish`) leaves no temporary behind.
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole tensor (rows along dimension 0) as .npy, atomically.
pub fn write(path: &Path, x: &Tensor, kind: Kind) -> Result<()> {
    let size = x.size();
    let rows = size.first().copied().unwrap_or(1);
    let x = if size.is_empty() { x.view([1]) } else { x.shallow_clone() };
    let mut w = NpyWriter::create(path, rows, &x.size()[1..], kind)?;
    w.write_rows(&x)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        h.push_str(&" ".repeat((64 - (10 + h.len() + 1) % 64) % 64));
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn reads_what_torch_writes_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let x = Tensor::randn([7, 3], (Kind::Double, tch::Device::Cpu));
        let p = dir.path().join("x.npy");
        x.write_npy(&p).unwrap();
        assert!(read(&p).unwrap().equal(&x));
        let q = dir.path().join("y.npy");
        let mut w = NpyWriter::create(&q, 7, &[3], Kind::Double).unwrap();
        w.write_rows(&x.narrow(0, 0, 4)).unwrap();
        w.write_rows(&x.narrow(0, 4, 3)).unwrap();
        w.finish().unwrap();
        assert!(Tensor::read_npy(&q).unwrap().equal(&x), "torch reads the streamed file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary left");
    }

    #[test]
    fn integer_and_half_dtypes_decode() {
        let b = npy("<i2", "False", "(2, 1)", &[0xff, 0xff, 2, 0]);
        assert_eq!(Vec::<f64>::try_from(decode(&b).unwrap().view([-1])).unwrap(), vec![-1.0, 2.0]);
        let b = npy("<f2", "False", "(2,)", &[0x00, 0x3c, 0x00, 0xc0]);
        assert_eq!(Vec::<f64>::try_from(decode(&b).unwrap()).unwrap(), vec![1.0, -2.0]);
    }

    #[test]
    fn lies_and_unsupported_layouts_are_named() {
        let err = |b: Vec<u8>| format!("{:#}", decode(&b).unwrap_err());
        let e = err(npy("<f8", "False", "(100, 2)", &[0u8; 16 * 10]));
        assert!(e.contains("truncated") && e.contains("[100, 2]"), "{e}");
        let e = err(npy("<f4", "False", "(1, 2)", &[0u8; 12]));
        assert!(e.contains("trailing bytes"), "{e}");
        assert!(err(npy(">f8", "False", "(1, 1)", &[0u8; 8])).contains("big-endian"));
        assert!(err(npy("<f8", "True", "(1, 1)", &[0u8; 8])).contains("Fortran-order"));
        assert!(err(npy("|O", "False", "(1, 1)", &[0u8; 8])).contains("object array"));
        assert!(err(npy("<U3", "False", "(1,)", &[0u8; 12])).contains("strings"));
        assert!(err(b"not numpy".to_vec()).contains("magic"));
        let e = err(npy("<f8", "False", "(99999999999999, 99999999999999)", &[]));
        assert!(e.contains("overflows"), "{e}");
    }
}
