//! Fragmented MP4 (ISO/IEC 14496-12, the CMAF form browsers' Media Source Extensions and
//! LL-HLS take): an [initialisation segment](init_segment) describing one video track, and
//! [fragments](fragment) of frames (`moof` + `mdat`).
//!
//! The frames come from the camera's parser already in MP4's form (length-prefixed NAL units,
//! parameter sets in the `avcC`/`hvcC` record GStreamer calls `codec_data`), so writing a
//! fragment is copying bytes behind a header: nothing is decoded or re-encoded.

use super::feed::Codec;

/// Ticks per second of the track's timeline (RTP's video clock).
pub const TIMESCALE: u32 = 90_000;

/// What the initialisation segment says of the track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub codec: Codec,
    /// The `avcC` (H.264) or `hvcC` (H.265) record.
    pub codec_data: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

impl Track {
    /// The RFC 6381 codecs string (`avc1.640028`, `hvc1.1.6.L120.90`) for playlists and
    /// `MediaSource.isTypeSupported`; `None` if the record is too short to hold it.
    pub fn codecs(&self) -> Option<String> {
        let data = &self.codec_data;
        match self.codec {
            Codec::H264 => {
                let [_, profile, compatibility, level, ..] = data.as_slice() else {
                    return None;
                };
                Some(format!("avc1.{profile:02x}{compatibility:02x}{level:02x}"))
            }
            Codec::H265 => {
                // hvcC: version, then profile space (2 bits), tier (1), profile (5), 32 bits of
                // compatibility flags, 48 bits of constraint flags, level.
                let header = data.get(1..13)?;
                let space = ["", "A", "B", "C"][usize::from(header[0] >> 6)];
                let tier = if header[0] & 0x20 == 0 { 'L' } else { 'H' };
                let profile = header[0] & 0x1f;
                let compatibility =
                    u32::from_be_bytes([header[1], header[2], header[3], header[4]]).reverse_bits();
                let mut constraints: Vec<u8> = header[5..11].to_vec();
                while constraints.last() == Some(&0) {
                    constraints.pop();
                }
                let mut codecs = format!(
                    "hvc1.{space}{profile}.{compatibility:X}.{tier}{}",
                    header[11]
                );
                for byte in constraints {
                    codecs.push_str(&format!(".{byte:X}"));
                }
                Some(codecs)
            }
        }
    }
}

/// One frame of a fragment.
#[derive(Debug, Clone)]
pub struct FrameData<'a> {
    /// Ticks of [`TIMESCALE`] until the next frame.
    pub duration: u32,
    /// Presentation minus decoding time, in ticks (B-frames).
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: &'a [u8],
}

/// The initialisation segment (`ftyp` + `moov`) of a single-track fragmented MP4.
pub fn init_segment(track: &Track) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |b| {
        b.extend_from_slice(b"iso6");
        b.extend_from_slice(&0_u32.to_be_bytes());
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            b.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |b| {
        full_box(b, b"mvhd", 0, 0, |b| {
            b.extend_from_slice(&[0; 8]); // creation and modification time
            b.extend_from_slice(&1000_u32.to_be_bytes());
            b.extend_from_slice(&0_u32.to_be_bytes()); // duration: fragmented
            b.extend_from_slice(&0x0001_0000_u32.to_be_bytes()); // rate 1.0
            b.extend_from_slice(&0x0100_u16.to_be_bytes()); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            matrix(b);
            b.extend_from_slice(&[0; 24]);
            b.extend_from_slice(&2_u32.to_be_bytes()); // next track id
        });
        boxed(b, b"trak", |b| {
            // Flags: enabled, in movie.
            full_box(b, b"tkhd", 0, 3, |b| {
                b.extend_from_slice(&[0; 8]);
                b.extend_from_slice(&1_u32.to_be_bytes()); // track id
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&0_u32.to_be_bytes()); // duration
                b.extend_from_slice(&[0; 8]);
                b.extend_from_slice(&[0; 8]); // layer, group, volume, reserved
                matrix(b);
                b.extend_from_slice(&(u32::from(track.width) << 16).to_be_bytes());
                b.extend_from_slice(&(u32::from(track.height) << 16).to_be_bytes());
            });
            boxed(b, b"mdia", |b| {
                full_box(b, b"mdhd", 0, 0, |b| {
                    b.extend_from_slice(&[0; 8]);
                    b.extend_from_slice(&TIMESCALE.to_be_bytes());
                    b.extend_from_slice(&0_u32.to_be_bytes());
                    b.extend_from_slice(&0x55c4_u16.to_be_bytes()); // language "und"
                    b.extend_from_slice(&[0; 2]);
                });
                full_box(b, b"hdlr", 0, 0, |b| {
                    b.extend_from_slice(&[0; 4]);
                    b.extend_from_slice(b"vide");
                    b.extend_from_slice(&[0; 12]);
                    b.extend_from_slice(b"Gatehouse video\0");
                });
                boxed(b, b"minf", |b| {
                    full_box(b, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                    boxed(b, b"dinf", |b| {
                        full_box(b, b"dref", 0, 0, |b| {
                            b.extend_from_slice(&1_u32.to_be_bytes());
                            // Flag 1: the media is in this file.
                            full_box(b, b"url ", 0, 1, |_| {});
                        });
                    });
                    boxed(b, b"stbl", |b| {
                        full_box(b, b"stsd", 0, 0, |b| {
                            b.extend_from_slice(&1_u32.to_be_bytes());
                            sample_entry(b, track);
                        });
                        // No samples here: they are all in the fragments.
                        for name in [b"stts", b"stsc", b"stco"] {
                            full_box(b, name, 0, 0, |b| b.extend_from_slice(&[0; 4]));
                        }
                        full_box(b, b"stsz", 0, 0, |b| b.extend_from_slice(&[0; 8]));
                    });
                });
            });
        });
        boxed(b, b"mvex", |b| {
            full_box(b, b"trex", 0, 0, |b| {
                b.extend_from_slice(&1_u32.to_be_bytes()); // track id
                b.extend_from_slice(&1_u32.to_be_bytes()); // sample description
                b.extend_from_slice(&[0; 12]); // default duration, size, flags
            });
        });
    });
    out
}

/// A fragment (`moof` + `mdat`) of `frames`, the first decoded at `decode_time` ticks.
pub fn fragment(sequence: u32, decode_time: u64, frames: &[FrameData<'_>]) -> Vec<u8> {
    const KEYFRAME: u32 = 0x0200_0000; // depends on no other sample
    const DELTA: u32 = 0x0101_0000; // depends on others, not a sync sample
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.data.len()).sum::<usize>() + 512);
    let mut data_offset_at = 0;
    boxed(&mut out, b"moof", |b| {
        full_box(b, b"mfhd", 0, 0, |b| {
            b.extend_from_slice(&sequence.to_be_bytes());
        });
        boxed(b, b"traf", |b| {
            // Flag 0x020000: offsets count from this moof.
            full_box(b, b"tfhd", 0, 0x02_0000, |b| {
                b.extend_from_slice(&1_u32.to_be_bytes());
            });
            full_box(b, b"tfdt", 1, 0, |b| {
                b.extend_from_slice(&decode_time.to_be_bytes());
            });
            // Data offset, and each sample's duration, size, flags and composition offset.
            full_box(
                b,
                b"trun",
                1,
                0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800,
                |b| {
                    b.extend_from_slice(&(frames.len() as u32).to_be_bytes());
                    data_offset_at = b.len();
                    b.extend_from_slice(&0_i32.to_be_bytes());
                    for frame in frames {
                        b.extend_from_slice(&frame.duration.to_be_bytes());
                        b.extend_from_slice(&(frame.data.len() as u32).to_be_bytes());
                        let flags = if frame.keyframe { KEYFRAME } else { DELTA };
                        b.extend_from_slice(&flags.to_be_bytes());
                        b.extend_from_slice(&frame.composition_offset.to_be_bytes());
                    }
                },
            );
        });
    });
    // The first sample starts after the moof and the mdat's 8-byte header.
    let data_offset = (out.len() + 8) as i32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    boxed(&mut out, b"mdat", |b| {
        for frame in frames {
            b.extend_from_slice(frame.data);
        }
    });
    out
}

/// The visual sample entry (`avc1` or `hvc1`) with the codec's record.
fn sample_entry(b: &mut Vec<u8>, track: &Track) {
    let (entry, record) = match track.codec {
        Codec::H264 => (b"avc1", b"avcC"),
        Codec::H265 => (b"hvc1", b"hvcC"),
    };
    boxed(b, entry, |b| {
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&1_u16.to_be_bytes()); // data reference index
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&track.width.to_be_bytes());
        b.extend_from_slice(&track.height.to_be_bytes());
        b.extend_from_slice(&0x0048_0000_u32.to_be_bytes()); // 72 dpi
        b.extend_from_slice(&0x0048_0000_u32.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&1_u16.to_be_bytes()); // frames per sample
        b.extend_from_slice(&[0; 32]); // compressor name
        b.extend_from_slice(&0x0018_u16.to_be_bytes()); // depth
        b.extend_from_slice(&(-1_i16).to_be_bytes());
        boxed(b, record, |b| b.extend_from_slice(&track.codec_data));
    });
}

/// The identity matrix of `mvhd` and `tkhd`.
fn matrix(b: &mut Vec<u8>) {
    for value in [0x0001_0000_u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends a box: its size, type, and what `body` writes.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a full box: a box whose body starts with a version and 24 bits of flags.
fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |b| {
        b.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
        body(b);
    });
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    /// The boxes at the top of `bytes`: (type, size), failing on a size that does not add up.
    fn top_boxes(bytes: &[u8]) -> anyhow::Result<Vec<(String, usize)>> {
        let mut boxes = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into()?) as usize;
            assert!(
                size >= 8 && at + size <= bytes.len(),
                "box at {at} overruns"
            );
            boxes.push((
                String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned(),
                size,
            ));
            at += size;
        }
        Ok(boxes)
    }

    fn h264() -> Track {
        Track {
            codec: Codec::H264,
            codec_data: vec![1, 0x64, 0x00, 0x28, 0xff, 0xe1],
            width: 1920,
            height: 1080,
        }
    }

    #[test]
    fn codecs_strings_follow_rfc_6381() -> anyhow::Result<()> {
        assert_eq!(h264().codecs().as_deref(), Some("avc1.640028"));
        // Main profile, compatibility flag 2 (0x60000000 reversed is 6), main tier, level
        // 4 (120), progressive + frame-only constraint flags (0x90).
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120];
        hvcc.extend_from_slice(&[0; 10]);
        let h265 = Track {
            codec: Codec::H265,
            codec_data: hvcc,
            width: 1280,
            height: 720,
        };
        assert_eq!(h265.codecs().as_deref(), Some("hvc1.1.6.L120.90"));
        let short = Track {
            codec_data: vec![1, 2],
            ..h264()
        };
        assert_eq!(short.codecs(), None);
        Ok(())
    }

    #[test]
    fn init_segment_is_ftyp_then_moov_carrying_the_record() -> anyhow::Result<()> {
        let init = init_segment(&h264());
        let boxes = top_boxes(&init)?;
        assert_eq!(
            boxes.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let avcc = init
            .windows(4)
            .position(|w| w == b"avcC")
            .context("no avcC")?;
        assert_eq!(&init[avcc + 4..avcc + 10], h264().codec_data.as_slice());
        assert!(init.windows(4).any(|w| w == b"trex"));
        Ok(())
    }

    #[test]
    fn fragment_offsets_point_at_the_frames() -> anyhow::Result<()> {
        let frames = [
            FrameData {
                duration: 3000,
                composition_offset: 0,
                keyframe: true,
                data: b"key-frame",
            },
            FrameData {
                duration: 3000,
                composition_offset: 3000,
                keyframe: false,
                data: b"delta",
            },
        ];
        let bytes = fragment(7, 90_000, &frames);
        let boxes = top_boxes(&bytes)?;
        assert_eq!(
            boxes.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        let trun = bytes
            .windows(4)
            .position(|w| w == b"trun")
            .context("no trun")?;
        let count = u32::from_be_bytes(bytes[trun + 8..trun + 12].try_into()?);
        let offset = i32::from_be_bytes(bytes[trun + 12..trun + 16].try_into()?);
        assert_eq!(count, 2);
        assert_eq!(&bytes[offset as usize..offset as usize + 9], b"key-frame");
        assert_eq!(&bytes[offset as usize + 9..], b"delta");
        let tfdt = bytes
            .windows(4)
            .position(|w| w == b"tfdt")
            .context("no tfdt")?;
        assert_eq!(
            u64::from_be_bytes(bytes[tfdt + 8..tfdt + 16].try_into()?),
            90_000
        );
        Ok(())
    }
}
