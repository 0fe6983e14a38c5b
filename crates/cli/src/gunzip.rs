//! Whole-object gunzip for `logbook import`, with libdeflate: about twice as fast as the
//! streaming decoder (flate2 over zlib-rs) on the benchmark's objects, 1.6-1.8 against
//! 0.7-0.8 GB/s of output (BENCHMARKS.md, "Whole-object gunzip"). It needs the whole
//! output in memory, so it takes objects whose text fits in [`CAP`]; the caller streams
//! anything else (larger, malformed, truncated), and the streaming reader reports what is
//! wrong where, as it always did.
//!
//! The two calls into libdeflate's C are the project's second `unsafe` code (see
//! `purge_freed_pages` in `main.rs`): the crate's safe wrapper (`libdeflater`) does not
//! expose `libdeflate_gzip_decompress_ex`, which says how much input a gzip member took,
//! and without it an object of several members (concatenated gzip, which
//! `MultiGzDecoder` reads) would lose every member after the first without a word.

use libdeflate_sys as sys;
use std::ptr::NonNull;

/// The largest decompressed object taken whole (per import worker, held and reused).
pub const CAP: usize = 64 << 20;

/// A libdeflate decompressor and the buffer it writes to (kept between objects, so
/// its pages are zeroed once, when it grows).
pub struct Gunzip {
    d: NonNull<sys::libdeflate_decompressor>,
    buf: Vec<u8>,
}

impl Gunzip {
    /// A decompressor; none when libdeflate cannot allocate one (the caller streams).
    #[allow(unsafe_code)]
    pub fn new() -> Option<Gunzip> {
        // SAFETY: takes no argument; returns a new decompressor or null.
        let d = unsafe { sys::libdeflate_alloc_decompressor() };
        NonNull::new(d).map(|d| Gunzip { d, buf: Vec::new() })
    }

    /// Every member of the gzip object `gz`, decompressed and concatenated, when it is
    /// well formed from its first byte to its last and its text fits in `cap` bytes;
    /// `None` otherwise.
    pub fn whole(&mut self, gz: &[u8], cap: usize) -> Option<&[u8]> {
        // The last member's ISIZE (its length modulo 2^32): the whole text when there is
        // one member, as there is in Bedrock's objects and Logbook's.
        let isize = gz
            .len()
            .checked_sub(4)
            .and_then(|at| gz.get(at..))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)? as usize;
        if isize > cap {
            // Too big to take whole, by its own word: streamed at once, not after
            // decompressing `cap` bytes of it for nothing.
            return None;
        }
        // Grown to a power of two, so objects of about one size stop growing it (each
        // growth moves it and faults in fresh pages).
        let want = isize
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(cap)
            .min(cap);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let (mut input, mut filled) = (gz, 0usize);
        while !input.is_empty() {
            match self.member(input, filled) {
                Member::Done { read, wrote } => {
                    input = &input[read..];
                    filled += wrote;
                }
                Member::NoRoom if self.buf.len() < cap => {
                    let grown = self.buf.len().saturating_mul(2).min(cap);
                    self.buf.resize(grown, 0);
                }
                Member::NoRoom | Member::Bad => return None,
            }
        }
        self.buf.get(..filled)
    }

    /// One gzip member from the start of `input`, written into the buffer from `at`.
    #[allow(unsafe_code)]
    fn member(&mut self, input: &[u8], at: usize) -> Member {
        let Some(out) = self.buf.get_mut(at..) else {
            return Member::NoRoom;
        };
        let (mut read, mut wrote) = (0usize, 0usize);
        // SAFETY: `d` is a live decompressor owned by `self` (used by one thread at a
        // time: `&mut self`); `input` and `out` are valid for their lengths, which are
        // passed with them; libdeflate writes at most `out.len()` bytes into `out` and
        // the two counts through the two pointers to locals.
        let r = unsafe {
            sys::libdeflate_gzip_decompress_ex(
                self.d.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut read,
                &mut wrote,
            )
        };
        match r {
            // `read` is never 0 on success (a member is at least 18 bytes); bounded
            // anyway, so a wrong count can only end the loop, not overrun.
            sys::libdeflate_result_LIBDEFLATE_SUCCESS
                if read > 0 && read <= input.len() && wrote <= out.len() =>
            {
                Member::Done { read, wrote }
            }
            sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => Member::NoRoom,
            _ => Member::Bad,
        }
    }
}

enum Member {
    Done { read: usize, wrote: usize },
    NoRoom,
    Bad,
}

impl Drop for Gunzip {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `d` came from `libdeflate_alloc_decompressor`, is freed once, here.
        unsafe { sys::libdeflate_free_decompressor(self.d.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    fn streamed(bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .ok()
            .map(|_| out)
    }

    /// Whole, an object is what the streaming decoder reads: one member, many (an
    /// empty one among them), a member whose text outgrows the first guess of its size;
    /// the one buffer serves object after object.
    #[test]
    fn whole_objects_read_as_the_stream_reads_them() {
        let mut g = Gunzip::new().unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut many = gz(b"first line\n");
        many.extend(gz(b""));
        many.extend(gz(&big));
        many.extend(gz(b"last, without its end"));
        let mut small_last = gz(&big);
        small_last.extend(gz(b"x\n"));
        let objects = [
            gz(b"{\"a\":1}\n{\"b\":2}\n"),
            gz(b""),
            many,
            small_last,
            gz(&big),
        ];
        for o in &objects {
            let want = streamed(o).unwrap();
            assert_eq!(g.whole(o, CAP).map(<[u8]>::to_vec), Some(want));
        }
    }

    /// Not taken whole, for the stream to read and report: a text over the cap (however
    /// small its ISIZE claims it is), a truncated object, bytes after the last member,
    /// a bad CRC, something that is not gzip, nothing at all.
    #[test]
    fn what_is_not_whole_and_within_the_cap_is_left_to_the_stream() {
        let mut g = Gunzip::new().unwrap();
        let text = vec![b'z'; 1 << 20];
        let o = gz(&text);
        assert!(g.whole(&o, 1 << 19).is_none());
        assert_eq!(g.whole(&o, 1 << 20).map(<[u8]>::len), Some(1 << 20));
        // A bomb whose ISIZE lies small: grown to the cap, then refused.
        let mut lying = o.clone();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&16u32.to_le_bytes());
        assert!(g.whole(&lying, 1 << 19).is_none());
        assert!(g.whole(&o[..o.len() - 1], CAP).is_none());
        let mut trailing = o.clone();
        trailing.extend(b"garbage!");
        assert!(g.whole(&trailing, CAP).is_none());
        let mut bad_crc = o.clone();
        bad_crc[n - 8] ^= 1;
        assert!(g.whole(&bad_crc, CAP).is_none());
        assert!(g.whole(b"{\"not\":\"gzip\"}\n", CAP).is_none());
        assert!(g.whole(b"", CAP).is_none());
        // Still good for the next object.
        assert_eq!(g.whole(&gz(b"ok\n"), CAP), Some(&b"ok\n"[..]));
    }
}
