//! A constant database (D. J. Bernstein's cdb format), read with a handful of
//! `pread`s so a 1,000,000-line control file costs the plug-in no more than a
//! 10-line one. Written by hand: the format is 2 KiB of header, the records and
//! 256 hash tables, and a crate would add start-up cost to every recipient.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// The most bytes of key and value together one record may hold. A control
/// line is at most 16 KiB (`lookup::MAX_LINE`), so no record we write comes
/// near this; a longer one means the file is damaged, and is refused rather
/// than allocated. Well under the 700,000 bytes a run script's
/// `softlimit -m 2000000` leaves the plug-in, so a damaged record can never
/// make it run out of memory; `write` refuses to write such a record.
pub const MAX_RECORD: u32 = 64 * 1024;

/// The cdb hash: h = 5381; h = (h * 33) ^ byte, modulo 2^32.
pub fn hash(key: &[u8]) -> u32 {
    key.iter()
        .fold(5381u32, |h, &b| h.wrapping_mul(33) ^ u32::from(b))
}

pub struct Reader {
    file: File,
}

impl Reader {
    pub fn new(file: File) -> Reader {
        Reader { file }
    }

    fn pair(&self, pos: u32) -> io::Result<(u32, u32)> {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, u64::from(pos))?;
        Ok((
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        ))
    }

    /// The value of the first record with this key.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let h = hash(key);
        let (table, slots) = self.pair((h & 255) * 8)?;
        if slots == 0 {
            return Ok(None);
        }
        let start = (h >> 8) % slots;
        for n in 0..slots {
            let slot = (start + n) % slots;
            let (slot_hash, record) = self.pair(table.wrapping_add(slot.wrapping_mul(8)))?;
            if record == 0 {
                return Ok(None);
            }
            if slot_hash != h {
                continue;
            }
            let (klen, dlen) = self.pair(record)?;
            if klen > MAX_RECORD || dlen > MAX_RECORD - klen {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "damaged cdb"));
            }
            if klen as usize != key.len() {
                continue;
            }
            let mut k = vec![0u8; klen as usize];
            self.file.read_exact_at(&mut k, u64::from(record) + 8)?;
            if k == key {
                let mut v = vec![0u8; dlen as usize];
                self.file
                    .read_exact_at(&mut v, u64::from(record) + 8 + u64::from(klen))?;
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

/// Writes a whole cdb to `out` (which the caller renames into place).
pub fn write(out: &mut File, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let mut w = BufWriter::new(&mut *out);
    w.write_all(&[0u8; 2048])?;
    let mut pos: u64 = 2048;
    let mut slots: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    for (key, value) in records {
        if key.len() + value.len() > MAX_RECORD as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record of {} bytes is over the cap of {MAX_RECORD}",
                    key.len() + value.len()
                ),
            ));
        }
        let here = u32::try_from(pos).map_err(|_| too_big())?;
        slots[(hash(key) & 255) as usize].push((hash(key), here));
        w.write_all(&(key.len() as u32).to_le_bytes())?;
        w.write_all(&(value.len() as u32).to_le_bytes())?;
        w.write_all(key)?;
        w.write_all(value)?;
        pos += 8 + key.len() as u64 + value.len() as u64;
    }
    let mut header = Vec::with_capacity(2048);
    for entries in &slots {
        let len = entries.len() * 2;
        let mut table = vec![(0u32, 0u32); len];
        for &(h, p) in entries {
            let mut i = ((h >> 8) as usize) % len;
            while table[i].1 != 0 {
                i = (i + 1) % len;
            }
            table[i] = (h, p);
        }
        let here = u32::try_from(pos).map_err(|_| too_big())?;
        header.extend_from_slice(&here.to_le_bytes());
        header.extend_from_slice(&(len as u32).to_le_bytes());
        for (h, p) in table {
            w.write_all(&h.to_le_bytes())?;
            w.write_all(&p.to_le_bytes())?;
        }
        pos += len as u64 * 8;
    }
    u32::try_from(pos).map_err(|_| too_big())?;
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&header)?;
    w.flush()
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "cdb would exceed 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh file at `path` to write a cdb into and read it back.
    fn scratch(path: &std::path::Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn hash_matches_the_format_note() {
        // h = 5381 for the empty key; one byte: (5381 * 33) ^ byte.
        assert_eq!(hash(b""), 5381);
        assert_eq!(hash(b"a"), (5381u32 * 33) ^ 97);
    }

    #[test]
    fn writes_and_reads_back() {
        let path = std::env::temp_dir().join(format!("overlimit-cdb-{}", std::process::id()));
        let mut f = scratch(&path);
        let records: Vec<_> = (0..3000)
            .map(|i| (format!("key{i}").into_bytes(), format!("v{i}").into_bytes()))
            .chain([(Vec::new(), b"default".to_vec())])
            .collect();
        write(&mut f, &records).unwrap();
        let r = Reader::new(File::open(&path).unwrap());
        assert_eq!(r.get(b"key0").unwrap().unwrap(), b"v0");
        assert_eq!(r.get(b"key2999").unwrap().unwrap(), b"v2999");
        assert_eq!(r.get(b"").unwrap().unwrap(), b"default");
        assert_eq!(r.get(b"key3000").unwrap(), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn writes_no_record_the_reader_would_refuse() {
        let path = std::env::temp_dir().join(format!("overlimit-cdb-cap-{}", std::process::id()));
        let mut f = scratch(&path);
        let cap = MAX_RECORD as usize;
        // At the cap: written and read back.
        write(&mut f, &[(b"k".to_vec(), vec![b'v'; cap - 1])]).unwrap();
        let r = Reader::new(File::open(&path).unwrap());
        assert_eq!(r.get(b"k").unwrap().unwrap().len(), cap - 1);
        // One byte over: refused by the writer, never left for the reader.
        let e = write(&mut f, &[(b"k".to_vec(), vec![b'v'; cap])]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("over the cap of 65536"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
