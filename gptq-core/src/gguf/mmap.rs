//! The read-only file mapping and the zero-copy views of its bytes as typed
//! slices. This is the only place in `gguf` with `unsafe` code.
//!
//! A [`MappedFile`] is normally a memory mapping; it can also hold an owned
//! copy of bytes that came from elsewhere ([`MappedFile::from_bytes`], for
//! models embedded in a program or received over a network, and for the
//! fuzzers). Under Miri, which cannot map files, [`MappedFile::open`] reads the
//! file into such a copy instead.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use half::f16;
#[cfg(not(miri))]
use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::quant::QuantBlock;

/// A file mapped read-only into memory. The model borrows tensor data from
/// [`MappedFile::bytes`] without copying it.
///
/// The file must not be modified or truncated while it is mapped (as with
/// every mmap-based loader, llama.cpp included): the mapping would change
/// under the program's feet.
#[derive(Debug)]
pub struct MappedFile {
    bytes: Storage,
    path: PathBuf,
}

/// Where a [`MappedFile`]'s bytes live.
#[derive(Debug)]
enum Storage {
    /// A read-only mapping of the file.
    #[cfg(not(miri))]
    Mapped(Mmap),
    /// An owned copy, aligned like a mapping's start for the typed views.
    Owned(AlignedBytes),
}

/// One 64-byte-aligned chunk of an [`AlignedBytes`] buffer.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

/// Bytes whose start is 64-byte aligned, so that a GGUF file's tensor data
/// (at multiples of its alignment from the start) can be viewed as `f32`,
/// `f16` or blocks exactly as in a page-aligned mapping.
#[derive(Debug)]
struct AlignedBytes {
    chunks: Vec<Chunk>,
    len: usize,
}

impl AlignedBytes {
    fn copy_of(bytes: &[u8]) -> AlignedBytes {
        let mut chunks = vec![Chunk([0; 64]); bytes.len().div_ceil(64)];
        for (chunk, src) in chunks.iter_mut().zip(bytes.chunks(64)) {
            chunk.0[..src.len()].copy_from_slice(src);
        }
        AlignedBytes {
            chunks,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Chunk` is `repr(C)` around `[u8; 64]` with no padding (its
        // size is 64 and its alignment divides it), so the vector's buffer is
        // `64 * chunks.len()` initialised bytes; `len <= 64 * chunks.len()` by
        // construction, and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast::<u8>(), self.len) }
    }
}

const _: () = assert!(std::mem::size_of::<Chunk>() == 64);

impl MappedFile {
    /// Maps the file at `path`. A missing path, a directory or any other
    /// non-regular file is an [`Error::Io`] naming the path; an empty file is
    /// the [`Error::Format`] a GGUF parse of zero bytes gives.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path,
                io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory, not a GGUF file",
                ),
            ));
        }
        if !meta.is_file() {
            return Err(Error::io(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        if meta.len() == 0 {
            return Err(Error::format(
                0,
                format!("{} is empty, not a GGUF file", path.display()),
            ));
        }
        Ok(MappedFile {
            bytes: map_or_read(file, path)?,
            path: path.to_owned(),
        })
    }

    /// An owned, aligned copy of `bytes` that behaves like a mapped file
    /// named `name` (which only appears in messages). For models that do not
    /// come from a file: embedded, downloaded into memory, or made by a fuzzer.
    pub fn from_bytes(bytes: &[u8], name: impl Into<PathBuf>) -> MappedFile {
        MappedFile {
            bytes: Storage::Owned(AlignedBytes::copy_of(bytes)),
            path: name.into(),
        }
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            #[cfg(not(miri))]
            Storage::Mapped(map) => map,
            Storage::Owned(owned) => owned.bytes(),
        }
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Maps `file` read-only, with no `MAP_POPULATE` or `madvise`: the first
/// forward pass faults the pages in from both threads. Measured (time to the
/// first token, `gptq complete -n 1`, 355M Q8_0 and 124M F32 files, Intel Xeon
/// KVM guest, 3–4 runs each): with the file in the page cache all four
/// choices are equal (≈ 230 and ≈ 145 ms); with the page cache dropped before
/// each run, plain 360–530 ms, `MADV_WILLNEED` 355–385, `MADV_POPULATE_READ`
/// 420–435, `MAP_POPULATE` (llama.cpp's default) 420–690: it faults the whole
/// file in on one thread before anything runs.
#[cfg(not(miri))]
fn map_or_read(file: File, path: &Path) -> Result<Storage> {
    // SAFETY: the mapping is read-only and owned by the returned value, so
    // it outlives every slice borrowed from `bytes()`. Mapping a file is
    // only sound while no one modifies or truncates it; that is a
    // documented requirement of `MappedFile` (as of every mmap loader), and
    // this process never writes to the files it maps.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Storage::Mapped(map))
}

/// Miri cannot map files: read the whole file into an aligned buffer instead.
#[cfg(miri)]
fn map_or_read(mut file: File, path: &Path) -> Result<Storage> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(Storage::Owned(AlignedBytes::copy_of(&bytes)))
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<MappedFile>();
};

mod sealed {
    /// Restricts [`super::Pod`] to the types this module vouches for.
    pub trait Sealed {}
}

/// Plain old data: types for which every bit pattern is a valid value and
/// that have no padding, so that bytes can be viewed as them and back. Sealed:
/// implemented only for `f32`, `f16`, `bf16`, `u8`, `i8`, `u16`, Q8_K's
/// activation blocks (`repr(C)`, 292 bytes of an f32 and integers, no
/// padding: asserted beside the type) and every [`QuantBlock`] (an `unsafe`
/// trait whose implementors promise exactly this).
pub trait Pod: sealed::Sealed + Copy + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {}
    )*};
}
pod!(f32, f16, half::bf16, u8, i8, u16, crate::quant::BlockQ8K);

impl<B: QuantBlock> sealed::Sealed for B {}
impl<B: QuantBlock> Pod for B {}

const _: () = assert!(std::mem::size_of::<f16>() == 2);

/// Views `bytes` as a slice of `T` without copying; `None` when the length is
/// not a multiple of `size_of::<T>()` or the start is not aligned for `T`.
pub fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if bytes.is_empty() {
        return Some(&[]);
    }
    let ptr = bytes.as_ptr().cast::<T>();
    if !bytes.len().is_multiple_of(size) || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: `ptr` is non-null, aligned for `T` (checked) and valid for reads
    // of `bytes.len()` bytes, which is exactly `len / size` values of `T`; `T`
    // is `Pod` (sealed to types without padding for which every bit pattern is
    // valid), so those bytes are initialised, valid `T`s. The result borrows
    // `bytes` immutably for the same lifetime.
    Some(unsafe { std::slice::from_raw_parts(ptr, bytes.len() / size) })
}

/// Views `bytes` as a mutable slice of `T` without copying; `None` when the
/// length is not a multiple of `size_of::<T>()` or the start is not aligned.
pub fn cast_slice_mut<T: Pod>(bytes: &mut [u8]) -> Option<&mut [T]> {
    let size = std::mem::size_of::<T>();
    if bytes.is_empty() {
        return Some(&mut []);
    }
    let ptr = bytes.as_mut_ptr().cast::<T>();
    if !bytes.len().is_multiple_of(size) || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: as in `cast_slice`; in addition the result takes over the unique
    // borrow of `bytes`, and any `T` written through it is plain bytes (no
    // padding), so the `u8`s stay initialised.
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, bytes.len() / size) })
}

/// The bytes of a slice of plain-old-data values (for writing tensors).
pub fn as_bytes<T: Pod>(values: &[T]) -> &[u8] {
    // SAFETY: `T` has no padding, so all `size_of_val(values)` bytes of the
    // slice are initialised; `u8` has alignment 1 and the length cannot
    // overflow because the slice already occupies that many bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{BlockQ4_0, BlockQ8_0};
    use std::io::Write;

    #[test]
    fn cast_slice_checks_length_and_alignment() {
        let floats = [1.0f32, 2.0, 0.0, 0.0];
        let bytes = as_bytes(&floats);
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
        assert_eq!(cast_slice::<f32>(&bytes[..8]), Some(&[1.0f32, 2.0][..]));
        assert_eq!(cast_slice::<f32>(&bytes[..7]), None);
        assert_eq!(cast_slice::<f32>(&bytes[1..5]), None);
        assert_eq!(cast_slice::<f16>(&bytes[2..6]).map(<[f16]>::len), Some(2));
        assert_eq!(cast_slice::<f16>(&bytes[1..5]), None);
        assert_eq!(cast_slice::<f16>(&bytes[2..5]), None);
        assert_eq!(cast_slice::<u8>(&bytes[3..6]).map(<[u8]>::len), Some(3));
        assert_eq!(cast_slice::<i8>(&bytes[3..4]), Some(&[0x3fi8][..]));
        assert_eq!(cast_slice::<f32>(&[]), Some(&[][..]));
        assert_eq!(cast_slice::<BlockQ8_0>(&bytes[..16]), None);
        assert_eq!(as_bytes::<f32>(&[]), &[] as &[u8]);
    }

    #[test]
    fn blocks_round_trip_through_bytes() {
        let mut blocks = vec![BlockQ8_0::ZERO; 3];
        blocks[1].d = f16::from_f32(0.5);
        blocks[1].qs[31] = -7;
        let bytes = as_bytes(&blocks);
        assert_eq!(bytes.len(), 3 * 34);
        assert_eq!(&bytes[34..36], &f16::from_f32(0.5).to_le_bytes());
        assert_eq!(bytes[34 + 2 + 31] as i8, -7);
        let back: &[BlockQ8_0] = cast_slice(bytes).unwrap();
        assert_eq!(back, &blocks[..]);
    }

    #[test]
    fn cast_slice_mut_writes_through() {
        let mut buf = [0u8; 64];
        let off = buf.as_ptr().align_offset(2);
        let region = &mut buf[off..off + 36];
        let blocks = cast_slice_mut::<BlockQ4_0>(region).unwrap();
        assert_eq!(blocks.len(), 2);
        blocks[1] = BlockQ4_0::ZERO;
        blocks[1].d = f16::ONE;
        assert_eq!(&buf[off + 18..off + 20], &f16::ONE.to_le_bytes());
        assert_eq!(buf[off + 20], 0x88);
        assert!(cast_slice_mut::<BlockQ4_0>(&mut buf[off + 1..off + 19]).is_none());
        assert!(cast_slice_mut::<BlockQ4_0>(&mut buf[off..off + 35]).is_none());
        assert!(cast_slice_mut::<f32>(&mut []).is_some());
    }

    #[test]
    fn mapped_file_reads_a_temp_file() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(b"GGUF\x03\0\0\0").unwrap();
        tmp.flush().unwrap();
        let m = MappedFile::open(tmp.path()).unwrap();
        assert_eq!(m.bytes(), b"GGUF\x03\0\0\0");
        assert_eq!(m.path(), tmp.path());
        // The mapping is page aligned, so typed views of aligned offsets work.
        assert!(cast_slice::<f32>(&m.bytes()[..8]).is_some());
    }

    #[test]
    fn from_bytes_is_an_aligned_copy() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let m = MappedFile::from_bytes(&src, "mem.gguf");
            assert_eq!(m.bytes(), &src[..]);
            assert_eq!(m.path(), Path::new("mem.gguf"));
            assert!(m.bytes().as_ptr().cast::<Chunk>().is_aligned());
        }
    }

    #[test]
    fn mapped_file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        match MappedFile::open(dir.path()) {
            Err(e @ Error::Io { .. }) => {
                assert!(
                    e.to_string().contains(&dir.path().display().to_string()),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        let missing = dir.path().join("missing.gguf");
        match MappedFile::open(&missing) {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        match MappedFile::open(&empty) {
            Err(Error::Format { offset: 0, msg }) => assert!(msg.contains("empty"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
