//! How a serialized value lies in the object store: a small header, the pickle
//! bytes, then each out-of-band buffer, every part 64-byte aligned so numpy can
//! view buffers in place.

use ray_object_store::ALIGNMENT;

const MAGIC: u32 = 0x5241_5931; // "RAY1"
const FIXED: u64 = 4 + 4 + 4 + 4 + 8;

/// Offsets of the parts of an object, relative to its start.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// 0 = value, 1 = error, 2 = raw.
    pub kind: u32,
    /// (offset, len) of the pickle bytes.
    pub data: (u64, u64),
    /// (offset, len) of each buffer.
    pub buffers: Vec<(u64, u64)>,
    /// Total bytes.
    pub total: u64,
}

impl Layout {
    /// The layout for these part sizes.
    pub fn plan(kind: u32, data_len: u64, buffer_lens: &[u64]) -> Self {
        Self::try_plan(kind, data_len, buffer_lens).unwrap_or(Self { kind, data: (0, 0), buffers: Vec::new(), total: u64::MAX })
    }

    /// The layout, or `None` when the sizes overflow (a corrupt header).
    fn try_plan(kind: u32, data_len: u64, buffer_lens: &[u64]) -> Option<Self> {
        let aligned = |n: u64| n.checked_add(ALIGNMENT - 1).map(|v| v / ALIGNMENT * ALIGNMENT);
        let header = FIXED.checked_add(8u64.checked_mul(buffer_lens.len() as u64)?)?;
        let mut pos = aligned(header)?;
        let data = (pos, data_len);
        pos = aligned(pos.checked_add(data_len)?)?;
        let mut buffers = Vec::with_capacity(buffer_lens.len());
        for &l in buffer_lens {
            buffers.push((pos, l));
            pos = aligned(pos.checked_add(l)?)?;
        }
        Some(Self { kind, data, buffers, total: pos.max(ALIGNMENT) })
    }

    /// The header bytes.
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(FIXED as usize + 8 * self.buffers.len());
        h.extend_from_slice(&MAGIC.to_le_bytes());
        h.extend_from_slice(&self.kind.to_le_bytes());
        h.extend_from_slice(&(self.buffers.len() as u32).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&self.data.1.to_le_bytes());
        for (_, l) in &self.buffers {
            h.extend_from_slice(&l.to_le_bytes());
        }
        h
    }

    /// Reads a layout back from the start of an object of `size` bytes; `None` when
    /// the bytes are not a valid object of that size.
    pub fn parse(bytes: &[u8], size: u64) -> Option<Self> {
        let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        let u64_at = |i: usize| bytes.get(i..i + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        if u32_at(0)? != MAGIC {
            return None;
        }
        let kind = u32_at(4)?;
        let n = u32_at(8)? as usize;
        if n > 1 << 20 {
            return None;
        }
        let data_len = u64_at(16)?;
        let mut lens = Vec::with_capacity(n);
        for i in 0..n {
            lens.push(u64_at(FIXED as usize + 8 * i)?);
        }
        let l = Self::try_plan(kind, data_len, &lens)?;
        (l.total <= size.max(ALIGNMENT)).then_some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_aligned_and_the_header_round_trips() {
        let l = Layout::plan(0, 100, &[1, 1000, 0]);
        assert!(l.buffers.iter().all(|(o, _)| o % 64 == 0));
        assert_eq!(l.data.0 % 64, 0);
        let mut bytes = l.header();
        bytes.resize(l.total as usize, 0);
        assert_eq!(Layout::parse(&bytes, l.total), Some(l.clone()));
        assert_eq!(Layout::parse(&bytes, 10), None, "a size smaller than the layout is refused");
        assert_eq!(Layout::parse(b"garbage garbage garbage", 100), None);
        // Sizes that would overflow are refused, not wrapped.
        let mut evil = Layout::plan(0, 0, &[0]).header();
        evil[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        evil.resize(256, 0);
        assert_eq!(Layout::parse(&evil, 256), None);
    }
}
