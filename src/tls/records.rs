//! One direction of a TLS connection cut into records: the five-byte header
//! says the type and length, so the boundaries are visible even when the
//! contents are encrypted. Bounded: at most one record is buffered.

use tls_parser::{parse_tls_record_header, TlsRecordType};

/// The longest record body a peer may send: 2^14 bytes of plaintext plus
/// 2048 of expansion (RFC 5246, section 6.2.3; TLS 1.3 allows only 256).
pub const MAX_RECORD_BODY: usize = (1 << 14) + 2048;
const HEADER_LEN: usize = 5;

/// Why a direction's records can no longer be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsLost {
    /// The capture lost bytes: the next header cannot be found.
    Gap,
    /// A header that no TLS peer sends (unknown type, version or length).
    NotTls,
}

/// One whole record, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub content_type: u8,
    /// The header's version field (0x0301 in a first ClientHello, 0x0303 after).
    pub version: u16,
    pub body: &'a [u8],
}

impl Record<'_> {
    pub fn is(&self, t: TlsRecordType) -> bool {
        self.content_type == u8::from(t)
    }
}

#[derive(Debug, Default)]
pub struct RecordReader {
    /// The bytes of a record not yet whole; never more than one record.
    partial: Vec<u8>,
    lost: Option<RecordsLost>,
}

impl RecordReader {
    pub fn lost(&self) -> Option<RecordsLost> {
        self.lost
    }

    /// Feeds the next in-order bytes and hands each whole record to `each`.
    pub fn feed(&mut self, mut data: &[u8], each: &mut dyn FnMut(Record<'_>)) {
        while self.lost.is_none() && !data.is_empty() {
            if self.partial.is_empty() {
                // Whole records straight from the segment: no copy.
                match self.split(data) {
                    Ok(Some((record, rest))) => {
                        each(record);
                        data = rest;
                        continue;
                    }
                    Ok(None) => {}
                    Err(lost) => {
                        self.lost = Some(lost);
                        return;
                    }
                }
            }
            let want = self.wanted().saturating_sub(self.partial.len()).max(1);
            let take = want.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            let partial = std::mem::take(&mut self.partial);
            match self.split(&partial) {
                Ok(Some((record, rest))) => {
                    debug_assert!(rest.is_empty());
                    each(record);
                }
                Ok(None) => self.partial = partial,
                Err(lost) => self.lost = Some(lost),
            }
        }
    }

    /// The capture lost `n` bytes of this direction.
    pub fn gap(&mut self) {
        self.lost.get_or_insert(RecordsLost::Gap);
        self.partial = Vec::new();
    }

    /// How many bytes the record in `partial` needs in all, as far as known.
    fn wanted(&self) -> usize {
        match self.partial.get(3..5) {
            Some(len) => HEADER_LEN + usize::from(u16::from_be_bytes([len[0], len[1]])),
            None => HEADER_LEN,
        }
    }

    /// The first record of `data` and what follows it; `None` until whole.
    fn split<'a>(&self, data: &'a [u8]) -> Result<Option<(Record<'a>, &'a [u8])>, RecordsLost> {
        if data.len() < HEADER_LEN {
            return Ok(None);
        }
        let (_, header) = parse_tls_record_header(data).map_err(|_| RecordsLost::NotTls)?;
        let known_type = (20..=24).contains(&header.record_type.0);
        let len = usize::from(header.len);
        if !known_type || header.version.0 >> 8 != 3 || len > MAX_RECORD_BODY {
            return Err(RecordsLost::NotTls);
        }
        let Some(body) = data.get(HEADER_LEN..HEADER_LEN + len) else { return Ok(None) };
        let record = Record { content_type: header.record_type.0, version: header.version.0, body };
        Ok(Some((record, &data[HEADER_LEN + len..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![t, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn read(reader: &mut RecordReader, pieces: &[&[u8]]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        for p in pieces {
            reader.feed(p, &mut |r| out.push((r.content_type, r.body.to_vec())));
        }
        out
    }

    #[test]
    fn records_split_at_every_byte_come_out_whole() {
        let mut bytes = record(22, b"hello");
        bytes.extend(record(23, &[7; 300]));
        bytes.extend(record(21, &[1, 0]));
        let want = vec![(22, b"hello".to_vec()), (23, vec![7; 300]), (21, vec![1, 0])];
        for cut in 0..bytes.len() {
            let mut reader = RecordReader::default();
            assert_eq!(read(&mut reader, &[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let mut reader = RecordReader::default();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(read(&mut reader, &singles), want);
    }

    #[test]
    fn a_header_no_peer_sends_stops_the_reader() {
        for bad in [record(99, b"x"), vec![23, 9, 3, 0, 1, 0], vec![23, 3, 3, 0xff, 0xff]] {
            let mut reader = RecordReader::default();
            assert!(read(&mut reader, &[&bad]).is_empty());
            assert_eq!(reader.lost(), Some(RecordsLost::NotTls));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut reader = RecordReader::default();
            let data: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 7) as u8 + 20
                })
                .collect();
            read(&mut reader, &[&data[..20], &data[20..]]);
            assert!(reader.partial.len() <= HEADER_LEN + MAX_RECORD_BODY);
        }
    }
}
