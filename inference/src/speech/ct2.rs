//! Reader for CTranslate2's `model.bin` (faster-whisper's model format).
//!
//! No crate reads it, and the container is small. From CTranslate2's
//! `python/ctranslate2/specs/model_spec.py` (`_serialize`), all integers little-endian:
//!
//! ```text
//! u32 binary version (6 for current models)
//! str spec name ("WhisperSpec")                str = u16 length incl. NUL, bytes, NUL
//! u32 spec revision
//! u32 variable count, then per variable:
//!     str name, u8 rank, u32 × rank dims, u8 dtype, u32 byte count, bytes
//! u32 alias count, then per alias: str alias, str target name
//! ```
//!
//! dtype ids follow CTranslate2's `DataType`: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16.
//! Quantized models (int8 weights with a `weight_scale`) are refused by name:
//! faster-whisper's converter writes them only when asked, and their dequantisation
//! is not implemented here.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The element types a CTranslate2 variable can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ct2Type {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Type {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named variable: its shape, type and where its bytes are in the file.
#[derive(Clone, Debug)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2Type,
    bytes: Range<usize>,
}

/// A parsed `model.bin`: every variable's bytes stay in one buffer.
pub struct Ct2Model {
    path: PathBuf,
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    data: Vec<u8>,
    variables: HashMap<String, Variable>,
}

impl std::fmt::Debug for Ct2Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ct2Model")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("revision", &self.revision)
            .field("variables", &self.variables.len())
            .finish()
    }
}

/// Oldest and newest binary versions whose layout is the one above.
const VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;

/// A cursor over the file that turns every short read into an error naming the file.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidModel {
            path: self.path.to_path_buf(),
            reason: format!("{} (at byte {})", reason.into(), self.at),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(self.invalid(format!("truncated: {what} needs {n} bytes, {} left", self.data.len() - self.at)));
        };
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u16(what)? as usize;
        let bytes = self.take(n, what)?;
        let Some((&0, text)) = bytes.split_last() else {
            return Err(self.invalid(format!("{what} is not NUL-terminated")));
        };
        String::from_utf8(text.to_vec()).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }
}

impl Ct2Model {
    /// Read and index `path`. Any structural problem is an `InvalidModel` naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, data)
    }

    fn parse(path: &Path, data: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { data: &data, at: 0, path };
        let version = c.u32("binary version")?;
        if !VERSIONS.contains(&version) {
            return Err(c.invalid(format!(
                "not a CTranslate2 model.bin this reader knows (binary version {version}, expected {}..={})",
                VERSIONS.start(),
                VERSIONS.end()
            )));
        }
        let spec = c.string("spec name")?;
        let revision = c.u32("spec revision")?;
        let count = c.u32("variable count")? as usize;
        let mut variables = HashMap::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("rank")? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32("dimension")? as usize);
            }
            let id = c.u8("dtype")?;
            let dtype = Ct2Type::from_id(id).ok_or_else(|| c.invalid(format!("{name}: unknown dtype id {id}")))?;
            let len = c.u32("byte count")? as usize;
            let elems: usize = shape.iter().product();
            if elems.checked_mul(dtype.size()) != Some(len) {
                return Err(c.invalid(format!("{name}: shape {shape:?} of {dtype:?} does not match its {len} bytes")));
            }
            let start = c.at;
            c.take(len, &name)?;
            variables.insert(name, Variable { shape, dtype, bytes: start..start + len });
        }
        let aliases = c.u32("alias count")? as usize;
        for _ in 0..aliases {
            let alias = c.string("alias")?;
            let target = c.string("alias target")?;
            let var = variables
                .get(&target)
                .cloned()
                .ok_or_else(|| c.invalid(format!("alias {alias} points at missing {target}")))?;
            variables.insert(alias, var);
        }
        if c.at != data.len() {
            return Err(c.invalid(format!("{} unexpected bytes after the last alias", data.len() - c.at)));
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            spec,
            revision,
            data,
            variables,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.variables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.variables.is_empty()
    }

    /// Every variable's name (aliases included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.get(name)
    }

    fn missing(&self, name: &str) -> Error {
        Error::InvalidModel {
            path: self.path.clone(),
            reason: format!("missing variable {name}"),
        }
    }

    /// A scalar integer setting (e.g. `encoder/num_heads`), if present.
    pub fn scalar(&self, name: &str) -> Option<i64> {
        let v = self.variables.get(name)?;
        let b = &self.data[v.bytes.clone()];
        match (v.dtype, b) {
            (Ct2Type::I8, [x]) => Some(*x as i8 as i64),
            (Ct2Type::I16, [a, b]) => Some(i16::from_le_bytes([*a, *b]) as i64),
            (Ct2Type::I32, [a, b, c, d]) => Some(i32::from_le_bytes([*a, *b, *c, *d]) as i64),
            _ => None,
        }
    }

    /// The variable `name` as a tensor of `dtype` on `device`.
    pub fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = self.variables.get(name).ok_or_else(|| self.missing(name))?;
        let bytes = &self.data[v.bytes.clone()];
        let t = match v.dtype {
            Ct2Type::F32 => Tensor::from_raw_buffer(bytes, DType::F32, &v.shape, &Device::Cpu)?,
            Ct2Type::F16 => Tensor::from_raw_buffer(bytes, DType::F16, &v.shape, &Device::Cpu)?,
            Ct2Type::Bf16 => Tensor::from_raw_buffer(bytes, DType::BF16, &v.shape, &Device::Cpu)?,
            other => {
                return Err(Error::Unsupported {
                    path: self.path.clone(),
                    reason: format!(
                        "{name} is {other:?}: quantized CTranslate2 models are not supported, convert with --quantization float16"
                    ),
                })
            }
        };
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    /// A two-variable file with one alias, built by the layout in the module docs.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        string(&mut b, "w");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&8u32.to_le_bytes());
        for x in [1.0f32, 2.0, -3.0, 0.5] {
            b.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
        }
        string(&mut b, "heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&6i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "alias");
        string(&mut b, "w");
        b
    }

    #[test]
    fn reads_variables_scalars_and_aliases() -> Result<()> {
        let m = Ct2Model::parse(Path::new("sample.bin"), sample())?;
        assert_eq!((m.version, m.spec.as_str(), m.revision, m.len()), (6, "WhisperSpec", 3, 3));
        assert_eq!(m.scalar("heads"), Some(6));
        let w = m.tensor("alias", DType::F32, &Device::Cpu)?;
        assert_eq!(w.to_vec2::<f32>()?, vec![vec![1.0, 2.0], vec![-3.0, 0.5]]);
        Ok(())
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let full = sample();
        for cut in 0..full.len() {
            let err = Ct2Model::parse(Path::new("cut/model.bin"), full[..cut].to_vec()).expect_err("truncated");
            let msg = err.to_string();
            assert!(msg.contains("cut/model.bin"), "{msg}");
        }
    }

    #[test]
    fn wrong_format_and_trailing_bytes_are_refused() {
        let mut gguf = b"GGUF".to_vec();
        gguf.extend_from_slice(&[0; 64]);
        let msg = Ct2Model::parse(Path::new("x.gguf"), gguf).expect_err("gguf").to_string();
        assert!(msg.contains("binary version"), "{msg}");
        let mut extra = sample();
        extra.push(7);
        let msg = Ct2Model::parse(Path::new("m.bin"), extra).expect_err("trailing").to_string();
        assert!(msg.contains("unexpected bytes"), "{msg}");
    }
}
