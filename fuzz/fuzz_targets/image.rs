//! The image validator and header reader: only JPEG or PNG within the size bounds is accepted, and the dimensions
//! read are the ones the header holds.
#![no_main]

use facegate::domain::validation::{
    image_dimensions, validate_image, ImageFormat, MIN_IMAGE_BYTES,
};
use libfuzzer_sys::fuzz_target;

const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fuzz_target!(|data: &[u8]| {
    for max in [data.len().saturating_sub(1), data.len(), 10 * 1024 * 1024] {
        match validate_image("probe_image", data, max) {
            Ok(format) => {
                assert!(data.len() >= MIN_IMAGE_BYTES && data.len() <= max);
                match format {
                    ImageFormat::Jpeg => assert!(data.starts_with(&[0xFF, 0xD8, 0xFF])),
                    ImageFormat::Png => assert!(data.starts_with(PNG)),
                }
            }
            Err(v) => {
                assert!(
                    data.len() < MIN_IMAGE_BYTES
                        || data.len() > max
                        || !(data.starts_with(&[0xFF, 0xD8, 0xFF]) || data.starts_with(PNG)),
                    "{v}"
                );
            }
        }
    }
    if let Some((w, h)) = image_dimensions(data) {
        if data.starts_with(PNG) {
            assert_eq!(&data[12..16], b"IHDR");
            assert_eq!(w.to_be_bytes(), data[16..20]);
            assert_eq!(h.to_be_bytes(), data[20..24]);
        } else {
            assert!(data.starts_with(&[0xFF, 0xD8, 0xFF]));
            assert!(w <= u32::from(u16::MAX) && h <= u32::from(u16::MAX));
        }
    }
});
