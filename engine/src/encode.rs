//! Encoders of what the engine stores: each failure is an [`Error::Encode`], never an empty or
//! clipped blob written in its place. (No caller produces a value these refuse today; the
//! point is that one day's mistake stays an error instead of becoming silent data loss.)

use std::io::Write as _;

use serde::Serialize;

use crate::{Error, Result};

/// `value` as JSON.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|_| Error::Encode { what })
}

/// A length as the little-endian `u32` of a length-prefixed field.
pub(crate) fn length_u32(length: usize, what: &'static str) -> Result<[u8; 4]> {
    u32::try_from(length).map(u32::to_le_bytes).map_err(|_| Error::Encode { what })
}

/// `plain` deflated, fast (stored values are read far more often than written).
pub(crate) fn deflate(plain: &[u8], what: &'static str) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(plain).map_err(|_| Error::Encode { what })?;
    encoder.finish().map_err(|_| Error::Encode { what })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_value_json_cannot_encode_is_an_error_not_an_empty_blob() {
        // JSON object keys must be strings: serde_json refuses a map keyed by pairs.
        let unencodable: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
        let error = json(&unencodable, "manifest").err();
        assert!(matches!(error, Some(Error::Encode { what: "manifest" })), "{error:?}");
        assert_eq!(error.map(|e| e.code()), Some(adiuva_model::ErrorCode::EncodeFailed));
    }

    #[test]
    fn a_length_beyond_its_field_is_an_error_not_clipped() {
        assert_eq!(length_u32(7, "read view").ok(), Some([7, 0, 0, 0]));
        let too_long = usize::try_from(u64::from(u32::MAX) + 1).unwrap();
        assert!(matches!(length_u32(too_long, "read view"), Err(Error::Encode { what: "read view" })));
    }

    #[test]
    fn deflated_bytes_inflate_back() {
        use std::io::Read as _;
        let plain = b"the same words, the same words, the same words".repeat(10);
        let deflated = deflate(&plain, "event index").unwrap();
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(deflated.as_slice()).read_to_end(&mut inflated).unwrap();
        assert_eq!(inflated, plain);
    }
}
